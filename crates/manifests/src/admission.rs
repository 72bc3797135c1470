//! ValidatingAdmissionPolicies that stop privilege escalation through an operator.
//!
//! An operator acts with its own identity on behalf of whoever may write its custom resources:
//! without a check, a user allowed to create PodRequests but not Pods gets Pods anyway. A
//! [`DelegationCheck`] becomes a `ValidatingAdmissionPolicy` whose CEL rule asks the authorizer
//! whether the requesting user could do the delegated action directly, and a binding that
//! enforces it (`Deny`). The operators' own ServiceAccounts pass the same check by design, since
//! they hold those permissions.

use serde_json::{Value, json};

/// "Whoever writes `resource` (in `group`) must be allowed to `verb` what `target` names".
#[derive(Debug, Clone)]
pub struct DelegationCheck {
    /// Policy name, e.g. `podrequests-require-pod-create.operon.dev`.
    pub name: String,
    /// API group of the checked resource (`""` for core).
    pub group: String,
    /// Plural of the checked resource, e.g. `podrequests` or `services`.
    pub resource: String,
    /// CEL variables `(name, expression)`, usable as `variables.<name>` below.
    pub variables: Vec<(String, String)>,
    /// Only objects for which this CEL expression is true are checked (e.g. "has the
    /// annotation"); `None`: all.
    pub applies_when: Option<String>,
    /// The authorizer expression that must be allowed, e.g.
    /// `authorizer.group('').resource('pods').namespace(object.metadata.namespace).check('create')`.
    pub check: String,
    /// CEL string expression explaining a denial to the user.
    pub message: String,
}

impl DelegationCheck {
    /// The `ValidatingAdmissionPolicy` and its `ValidatingAdmissionPolicyBinding` (enforcing).
    pub fn objects(&self, labels: &Value) -> Vec<Value> {
        let mut validation = json!({
            "expression": format!("{}.allowed()", self.check),
            "messageExpression": self.message,
            "reason": "Forbidden",
        });
        if let Some(condition) = &self.applies_when {
            validation["expression"] = json!(format!("!({condition}) || {}.allowed()", self.check));
        }
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": { "name": self.name, "labels": labels },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [{
                        "apiGroups": [self.group],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [self.resource],
                    }],
                },
                "validations": [validation],
            },
        });
        let mut policy = policy;
        if !self.variables.is_empty() {
            policy["spec"]["variables"] = self
                .variables
                .iter()
                .map(|(name, expression)| json!({ "name": name, "expression": expression }))
                .collect();
        }
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": { "name": self.name, "labels": labels },
            "spec": {
                "policyName": self.name,
                "validationActions": ["Deny"],
            },
        });
        vec![policy, binding]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_binding() {
        let check = DelegationCheck {
            name: "p".into(),
            group: "g".into(),
            resource: "things".into(),
            variables: vec![("v".into(), "1".into())],
            applies_when: Some("has(object.spec)".into()),
            check: "authorizer.group('').resource('pods').check('create')".into(),
            message: "'no'".into(),
        };
        let objects = check.objects(&json!({}));
        assert_eq!(objects.len(), 2);
        assert_eq!(
            objects[0]["spec"]["validations"][0]["expression"],
            "!(has(object.spec)) || authorizer.group('').resource('pods').check('create').allowed()"
        );
        assert_eq!(objects[0]["spec"]["variables"][0]["name"], "v");
        assert_eq!(objects[1]["spec"]["policyName"], "p");
        assert_eq!(objects[1]["spec"]["validationActions"][0], "Deny");
    }
}

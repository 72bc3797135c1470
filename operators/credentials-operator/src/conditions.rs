//! OpenShift's condition rules for a CredentialsRequest (cloud-credential-operator's
//! conditions, which have no `Ready`), and the status each outcome of a sync leaves. No API
//! calls here.
//!
//! A True condition is added or updated; a False one only updates an existing entry (a condition
//! appears once it has been true). `lastTransitionTime` moves when the status does,
//! `lastProbeTime` on every update.

use std::fmt::Display;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{CredentialsRequestCondition, CredentialsRequestStatus, condition};
use crate::iam;

/// Reason of `CredentialsProvisionFailure=True`, and of the Warning Event that goes with it.
pub const PROVISION_FAILED: &str = "CredentialsProvisionFailure";
/// Reason of `CredentialsDeprovisionFailure=True`, and of its Warning Event.
pub const DEPROVISION_FAILED: &str = "CloudCredDeprovisionFailure";
/// Reason of `InsufficientCloudCreds=True`, and of its Warning Event.
pub const INSUFFICIENT: &str = "CloudCredsInsufficient";

/// The failure conditions, cleared (set False where present) when a request is ignored.
pub const FAILURE_CONDITIONS: [&str; 4] = [
    condition::PROVISION_FAILURE,
    condition::DEPROVISION_FAILURE,
    condition::INSUFFICIENT_CLOUD_CREDS,
    condition::MISSING_TARGET_NAMESPACE,
];

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// OpenShift's condition rules: a True condition is added or updated; a False one only
/// updates an existing entry. `lastTransitionTime` moves when the status does.
pub fn set_condition(
    conditions: &mut Vec<CredentialsRequestCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status_str = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_str {
                c.last_transition_time = Some(now());
            }
            c.status = status_str.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            c.last_probe_time = Some(now());
        }
        None if status => conditions.push(CredentialsRequestCondition {
            type_: type_.to_owned(),
            status: status_str.to_owned(),
            last_probe_time: Some(now()),
            last_transition_time: Some(now()),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
        }),
        None => {}
    }
}

/// Whether condition `type_` is present and True.
pub fn is_true(status: &CredentialsRequestStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Equal but for the probe and transition times: nothing worth writing.
pub fn same_status(a: &CredentialsRequestStatus, b: &CredentialsRequestStatus) -> bool {
    let strip = |s: &CredentialsRequestStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_probe_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Not an AWS request: `Ignored=True`, and every failure condition cleared (an ignored request
/// is nobody's failure; OpenShift clears them the same way).
pub fn ignored(status: &mut CredentialsRequestStatus, message: &str) {
    let reason = "InfrastructureMismatch";
    set_condition(
        &mut status.conditions,
        condition::IGNORED,
        true,
        reason,
        message,
    );
    for type_ in FAILURE_CONDITIONS {
        set_condition(&mut status.conditions, type_, false, reason, message);
    }
}

/// An AWS request: `Ignored=False` where it was set.
pub fn not_ignored(status: &mut CredentialsRequestStatus) {
    set_condition(
        &mut status.conditions,
        condition::IGNORED,
        false,
        "InfrastructureMatch",
        "",
    );
}

/// `MissingTargetNamespace`: True while the target namespace `ns` doesn't exist.
pub fn target_namespace(status: &mut CredentialsRequestStatus, ns: &str, exists: bool) {
    if exists {
        set_condition(
            &mut status.conditions,
            condition::MISSING_TARGET_NAMESPACE,
            false,
            "NamespaceExists",
            &format!("target namespace {ns} exists"),
        );
    } else {
        set_condition(
            &mut status.conditions,
            condition::MISSING_TARGET_NAMESPACE,
            true,
            "NamespaceMissing",
            &format!(
                "target namespace {ns} does not exist; the credentials are provisioned once it does"
            ),
        );
    }
}

/// The root Secret is annotated `insufficient`: `InsufficientCloudCreds=True`, not provisioned
/// (no provisioning failure: nothing was tried).
pub fn insufficient(status: &mut CredentialsRequestStatus, message: &str) {
    set_condition(
        &mut status.conditions,
        condition::INSUFFICIENT_CLOUD_CREDS,
        true,
        INSUFFICIENT,
        message,
    );
    set_condition(
        &mut status.conditions,
        condition::PROVISION_FAILURE,
        false,
        "CredentialsProvisionSuccess",
        "",
    );
    status.provisioned = false;
}

/// The root Secret's mode annotation has a value no mode has: `CredentialsProvisionFailure`.
pub fn invalid_mode(status: &mut CredentialsRequestStatus, message: &str) {
    set_condition(
        &mut status.conditions,
        condition::PROVISION_FAILURE,
        true,
        PROVISION_FAILED,
        message,
    );
    status.provisioned = false;
}

/// A successful sync of generation `generation` (with the root Secret at `root_version`, when
/// it was used).
pub fn synced(status: &mut CredentialsRequestStatus, generation: i64, root_version: Option<&str>) {
    set_condition(
        &mut status.conditions,
        condition::PROVISION_FAILURE,
        false,
        "CredentialsProvisionSuccess",
        "successfully granted credentials request",
    );
    set_condition(
        &mut status.conditions,
        condition::INSUFFICIENT_CLOUD_CREDS,
        false,
        "CloudCredsSufficient",
        "",
    );
    status.provisioned = true;
    status.last_sync_timestamp = Some(now());
    status.last_sync_generation = generation;
    if let Some(version) = root_version {
        status.last_sync_cloud_creds_secret_resource_version = Some(version.to_owned());
    }
}

/// A failed sync: `CredentialsProvisionFailure=True` with `error` scrubbed of key material, as
/// every failure to provision is in OpenShift (`InsufficientCloudCreds` is the root Secret's
/// `insufficient` annotation only). Returns the message, for the Event.
pub fn provision_failed(status: &mut CredentialsRequestStatus, error: &dyn Display) -> String {
    let message = iam::scrub(&format!("failed to grant creds: {error}"));
    set_condition(
        &mut status.conditions,
        condition::PROVISION_FAILURE,
        true,
        PROVISION_FAILED,
        &message,
    );
    set_condition(
        &mut status.conditions,
        condition::INSUFFICIENT_CLOUD_CREDS,
        false,
        "CloudCredsSufficient",
        "",
    );
    status.provisioned = false;
    message
}

/// The root credentials are unavailable but the minted ones showed nothing needs changing:
/// still provisioned, `CredentialsProvisionFailure=False` with `note`.
pub fn checked_without_root(status: &mut CredentialsRequestStatus, note: &str) {
    set_condition(
        &mut status.conditions,
        condition::PROVISION_FAILURE,
        false,
        "CredentialsProvisionSuccess",
        note,
    );
    status.last_sync_timestamp = Some(now());
}

/// Deletion could not clean up: `CredentialsDeprovisionFailure=True` with `error` scrubbed.
/// Returns the message, for the Event.
pub fn deprovision_failed(status: &mut CredentialsRequestStatus, error: &dyn Display) -> String {
    let message = iam::scrub(&format!("failed to deprovision: {error}"));
    set_condition(
        &mut status.conditions,
        condition::DEPROVISION_FAILURE,
        true,
        DEPROVISION_FAILED,
        &message,
    );
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{
        DEPROVISION_FAILURE, IGNORED, INSUFFICIENT_CLOUD_CREDS, MISSING_TARGET_NAMESPACE,
        PROVISION_FAILURE,
    };

    fn epoch() -> Option<Time> {
        Some(Time(Timestamp::UNIX_EPOCH))
    }

    fn get<'a>(
        status: &'a CredentialsRequestStatus,
        type_: &str,
    ) -> Option<&'a CredentialsRequestCondition> {
        status.conditions.iter().find(|c| c.type_ == type_)
    }

    /// `(status, reason, message)` of condition `type_`.
    fn summary(status: &CredentialsRequestStatus, type_: &str) -> Option<(String, String, String)> {
        get(status, type_).map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
    }

    #[test]
    fn a_false_condition_is_never_added_only_updated() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, PROVISION_FAILURE, false, "Fine", "");
        assert!(conditions.is_empty());
        set_condition(&mut conditions, PROVISION_FAILURE, true, "Broken", "boom");
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert!(conditions[0].last_transition_time.is_some());
        set_condition(&mut conditions, PROVISION_FAILURE, false, "Fine", "ok");
        assert_eq!(conditions.len(), 1, "updated in place");
        assert_eq!(
            (
                conditions[0].status.as_str(),
                conditions[0].reason.as_deref()
            ),
            ("False", Some("Fine"))
        );
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_does() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, IGNORED, true, "A", "first");
        conditions[0].last_transition_time = epoch();
        conditions[0].last_probe_time = epoch();
        set_condition(&mut conditions, IGNORED, true, "B", "second");
        assert_eq!(conditions[0].last_transition_time, epoch(), "same status");
        assert_ne!(conditions[0].last_probe_time, epoch(), "probed again");
        assert_eq!(conditions[0].message.as_deref(), Some("second"));
        set_condition(&mut conditions, IGNORED, false, "C", "");
        assert_ne!(
            conditions[0].last_transition_time,
            epoch(),
            "status changed"
        );
    }

    #[test]
    fn statuses_differing_only_in_times_are_the_same() {
        let mut a = CredentialsRequestStatus::default();
        set_condition(&mut a.conditions, PROVISION_FAILURE, true, "R", "m");
        let mut b = a.clone();
        b.conditions[0].last_probe_time = epoch();
        b.conditions[0].last_transition_time = epoch();
        assert!(same_status(&a, &b));
        b.conditions[0].message = Some("other".into());
        assert!(!same_status(&a, &b));
        let mut c = a.clone();
        c.provisioned = true;
        assert!(!same_status(&a, &c));
        assert!(is_true(&a, PROVISION_FAILURE));
        assert!(!is_true(&a, DEPROVISION_FAILURE));
    }

    #[test]
    fn an_ignored_request_clears_only_the_failures_it_had() {
        let mut status = CredentialsRequestStatus::default();
        set_condition(&mut status.conditions, PROVISION_FAILURE, true, "X", "x");
        ignored(&mut status, "not AWS");
        assert_eq!(
            summary(&status, IGNORED),
            Some((
                "True".into(),
                "InfrastructureMismatch".into(),
                "not AWS".into()
            ))
        );
        assert_eq!(
            summary(&status, PROVISION_FAILURE),
            Some((
                "False".into(),
                "InfrastructureMismatch".into(),
                "not AWS".into()
            ))
        );
        for absent in [
            DEPROVISION_FAILURE,
            INSUFFICIENT_CLOUD_CREDS,
            MISSING_TARGET_NAMESPACE,
        ] {
            assert!(get(&status, absent).is_none(), "{absent} added False");
        }
        not_ignored(&mut status);
        assert_eq!(
            summary(&status, IGNORED),
            Some(("False".into(), "InfrastructureMatch".into(), String::new()))
        );
        let mut fresh = CredentialsRequestStatus::default();
        not_ignored(&mut fresh);
        assert!(fresh.conditions.is_empty());
    }

    #[test]
    fn a_missing_target_namespace_is_true_until_it_exists() {
        let mut status = CredentialsRequestStatus::default();
        target_namespace(&mut status, "later", true);
        assert!(status.conditions.is_empty());
        target_namespace(&mut status, "later", false);
        assert_eq!(
            summary(&status, MISSING_TARGET_NAMESPACE),
            Some((
                "True".into(),
                "NamespaceMissing".into(),
                "target namespace later does not exist; the credentials are provisioned once it does"
                    .into()
            ))
        );
        target_namespace(&mut status, "later", true);
        assert_eq!(
            summary(&status, MISSING_TARGET_NAMESPACE),
            Some((
                "False".into(),
                "NamespaceExists".into(),
                "target namespace later exists".into()
            ))
        );
    }

    #[test]
    fn a_sync_success_records_generation_root_version_and_clears_failures() {
        let mut status = CredentialsRequestStatus::default();
        insufficient(&mut status, "annotated insufficient");
        assert!(is_true(&status, INSUFFICIENT_CLOUD_CREDS));
        assert!(
            get(&status, PROVISION_FAILURE).is_none(),
            "no failure added"
        );
        assert!(!status.provisioned);

        synced(&mut status, 3, Some("42"));
        assert!(status.provisioned);
        assert_eq!(status.last_sync_generation, 3);
        assert!(status.last_sync_timestamp.is_some());
        assert_eq!(
            status
                .last_sync_cloud_creds_secret_resource_version
                .as_deref(),
            Some("42")
        );
        assert_eq!(
            summary(&status, INSUFFICIENT_CLOUD_CREDS),
            Some(("False".into(), "CloudCredsSufficient".into(), String::new()))
        );
        // Without root credentials (STS): the recorded root version stays.
        synced(&mut status, 4, None);
        assert_eq!(
            status
                .last_sync_cloud_creds_secret_resource_version
                .as_deref(),
            Some("42")
        );
    }

    #[test]
    fn failure_messages_are_scrubbed_of_key_material() {
        let mut status = CredentialsRequestStatus {
            provisioned: true,
            ..CredentialsRequestStatus::default()
        };
        let message = provision_failed(&mut status, &"IAM said no to AKIAIOSFODNN7EXAMPLE");
        assert_eq!(message, "failed to grant creds: IAM said no to ***");
        assert!(!status.provisioned);
        assert_eq!(
            summary(&status, PROVISION_FAILURE),
            Some(("True".into(), PROVISION_FAILED.into(), message))
        );
        let message = deprovision_failed(
            &mut status,
            &"secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY leaked",
        );
        assert_eq!(message, "failed to deprovision: secret *** leaked");
        assert_eq!(
            summary(&status, DEPROVISION_FAILURE),
            Some(("True".into(), DEPROVISION_FAILED.into(), message))
        );
    }

    #[test]
    fn an_invalid_mode_fails_and_a_check_without_root_keeps_provisioned() {
        let mut status = CredentialsRequestStatus {
            provisioned: true,
            ..CredentialsRequestStatus::default()
        };
        invalid_mode(&mut status, "bad annotation");
        assert!(!status.provisioned);
        assert!(is_true(&status, PROVISION_FAILURE));
        assert!(get(&status, INSUFFICIENT_CLOUD_CREDS).is_none());

        let mut status = CredentialsRequestStatus {
            provisioned: true,
            ..CredentialsRequestStatus::default()
        };
        checked_without_root(&mut status, "fine without root");
        assert!(status.provisioned);
        assert!(status.last_sync_timestamp.is_some());
        assert!(
            status.conditions.is_empty(),
            "a False condition is not added"
        );
        set_condition(&mut status.conditions, PROVISION_FAILURE, true, "X", "x");
        checked_without_root(&mut status, "fine without root");
        assert_eq!(
            summary(&status, PROVISION_FAILURE),
            Some((
                "False".into(),
                "CredentialsProvisionSuccess".into(),
                "fine without root".into()
            ))
        );
    }
}

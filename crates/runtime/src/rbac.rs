//! The API calls the runtime itself makes in every operator, as RBAC rules: what an operator's
//! ServiceAccount needs beyond the rules its own controllers declare.
//!
//! Plain data, kept next to the code that makes the calls, so that a new call and the permission
//! it needs change together. `operon-manifests` builds every operator's generated RBAC from it:
//! [`EVENTS`] joins the manager ClusterRole, [`LEADER_ELECTION`] is the leader-election Role in
//! the operator's namespace, [`METRICS_AUTH`] the metrics-auth ClusterRole.

/// One RBAC PolicyRule: `verbs` on `resources` of API group `group` (`""` is the core group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// `events.rs` ([`Events`](crate::events::Events), through kube-runtime's `Recorder`): creates an
/// Event about an object a controller reconciles, and patches a repeat of it into the Event's
/// series. Wherever the operator's objects are: Events go to the namespace of their object.
pub const EVENTS: Rule = Rule {
    group: "events.k8s.io",
    resources: &["events"],
    verbs: &["create", "patch"],
};

/// `lease.rs` ([`LeaderElector`](crate::lease::LeaderElector)): reads the Lease (`get`), creates
/// it when absent, renews it, takes it over and releases it (`update`); a standby watches it
/// (`list`, `watch`) to take over the moment the leader releases it. In the operator's own
/// namespace only.
pub const LEADER_ELECTION: Rule = Rule {
    group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "list", "watch", "create", "update"],
};

/// `admin.rs` ([`AdminServer::with_metrics_auth`](crate::admin::AdminServer::with_metrics_auth)):
/// a TokenReview authenticates the bearer token of a `/metrics` request.
pub const TOKEN_REVIEWS: Rule = Rule {
    group: "authentication.k8s.io",
    resources: &["tokenreviews"],
    verbs: &["create"],
};

/// `admin.rs` ([`AdminServer::with_metrics_auth`](crate::admin::AdminServer::with_metrics_auth)):
/// a SubjectAccessReview asks whether the token's user may `get` the non-resource URL `/metrics`.
pub const SUBJECT_ACCESS_REVIEWS: Rule = Rule {
    group: "authorization.k8s.io",
    resources: &["subjectaccessreviews"],
    verbs: &["create"],
};

/// What the admin server's metrics auth needs: [`TOKEN_REVIEWS`], then
/// [`SUBJECT_ACCESS_REVIEWS`].
pub const METRICS_AUTH: [Rule; 2] = [TOKEN_REVIEWS, SUBJECT_ACCESS_REVIEWS];

//! What to do with a request (OpenShift's rules, see docs/credentials-operator.md): which path it
//! takes, which mode the root Secret's annotation selects, whether a recent sync still holds,
//! whether the access key must be replaced, and what a minted user must look like to be left
//! alone. No API calls here.

use std::time::{Duration, SystemTime};

use crate::api::{
    AWS_PROVIDER_STATUS, AwsProviderStatus, CredentialsRequest, CredentialsRequestStatus, Effect,
    PROVIDER_API_VERSION, StatementEntry, condition,
};
use crate::conditions::is_true;
use crate::iam::{AccessKey, Caller};
use crate::mint;

/// Longest requeue (the re-sync period is usually shorter).
pub const MAX_REQUEUE: Duration = Duration::from_secs(12 * 3600);

/// How requests are satisfied (OpenShift's credentials modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A new IAM user per request, with exactly the requested permissions.
    #[default]
    Mint,
    /// The root credentials are copied, after checking they allow the requested actions.
    Passthrough,
    /// Nothing: an administrator provides the Secrets.
    Manual,
}

/// The way a request goes, before anything is read from the cluster or the cloud.
#[derive(Debug, PartialEq)]
pub enum Path<'a> {
    /// Not an AWS request: marked `Ignored`, nothing else.
    Ignored { message: String },
    /// Manual mode, no role: an administrator provides the Secret; not even a finalizer.
    HandsOff,
    /// Provisioned, once the finalizer is on and the target namespace exists.
    Provision(Provision<'a>),
}

#[derive(Debug, PartialEq)]
pub enum Provision<'a> {
    /// Manual mode with `stsIAMRoleARN`: a profile assuming the role (no root credentials, no
    /// cloud call).
    Sts { role: String },
    /// With the root credentials, as [`plan`] decides.
    Cloud { statements: &'a [StatementEntry] },
}

/// The path of `cr` under `--mode` `mode`.
pub fn path(cr: &CredentialsRequest, mode: Option<Mode>) -> Path<'_> {
    let Some(statements) = cr.aws_statements() else {
        return Path::Ignored {
            message: format!(
                "providerSpec kind {:?} is not AWSProviderSpec: this operator provisions AWS credentials only",
                cr.spec.provider_spec.kind
            ),
        };
    };
    if mode != Some(Mode::Manual) {
        return Path::Provision(Provision::Cloud { statements });
    }
    match cr.spec.provider_spec.sts_iam_role_arn.clone() {
        Some(role) => Path::Provision(Provision::Sts { role }),
        None => Path::HandsOff,
    }
}

/// What to do with the root credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Mint,
    /// `simulate`: check the root credentials allow the requested actions first (passthrough
    /// chosen by the annotation; an explicit `--mode passthrough` trusts them).
    Passthrough {
        simulate: bool,
    },
}

/// Why the root credentials serve no request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Annotated [`mint::MODE_INSUFFICIENT`] (by an administrator or OpenShift's annotator):
    /// waits for the root Secret to change.
    Insufficient,
    /// An annotation value that is no mode.
    UnknownMode(String),
}

/// The plan from `--mode` (which wins) or the root Secret's [`mint::MODE_ANNOTATION`] (mint when
/// absent).
pub fn plan(mode: Option<Mode>, annotation: Option<&str>) -> Result<Plan, Refusal> {
    match (mode, annotation) {
        (Some(Mode::Passthrough), _) => Ok(Plan::Passthrough { simulate: false }),
        (Some(_), _) | (None, None | Some(mint::MODE_MINT)) => Ok(Plan::Mint),
        (None, Some(mint::MODE_PASSTHROUGH)) => Ok(Plan::Passthrough { simulate: true }),
        (None, Some(mint::MODE_INSUFFICIENT)) => Err(Refusal::Insufficient),
        (None, Some(other)) => Err(Refusal::UnknownMode(other.to_owned())),
    }
}

impl Refusal {
    /// The condition's and the Event's message, about root Secret `ns/name`.
    pub fn message(&self, ns: &str, name: &str) -> String {
        match self {
            Refusal::Insufficient => format!(
                "cloud credentials insufficient to satisfy credentials request: Secret {ns}/{name} is annotated {}={}",
                mint::MODE_ANNOTATION,
                mint::MODE_INSUFFICIENT
            ),
            Refusal::UnknownMode(other) => format!(
                "unexpected value {other:?} of annotation {} on Secret {ns}/{name}: use {}, {} or {}",
                mint::MODE_ANNOTATION,
                mint::MODE_MINT,
                mint::MODE_PASSTHROUGH,
                mint::MODE_INSUFFICIENT
            ),
        }
    }
}

/// How long a requeue waits for the next re-sync.
pub fn requeue(resync_period: Duration) -> Duration {
    resync_period.min(MAX_REQUEUE)
}

/// The re-sync rules of [`fresh`].
#[derive(Debug, Clone, Copy)]
pub struct Resync {
    /// A request synced less than this ago, unchanged, is not synced again.
    pub period: Duration,
    /// Access keys older than this are replaced.
    pub key_rotation: Option<Duration>,
}

/// `Some(wait)` when nothing changed since a recent successful sync (OpenShift's rule): same
/// generation, synced within the re-sync period (and before the key is due for rotation), same
/// root credentials (`root_version`), the Secret holding a key (`secret_holds_key`), no
/// failure. `None`: sync now.
pub fn fresh(
    status: &CredentialsRequestStatus,
    generation: i64,
    root_version: &str,
    secret_holds_key: bool,
    resync: Resync,
    now: SystemTime,
) -> Option<Duration> {
    if !status.provisioned
        || status.last_sync_generation != generation
        || status
            .last_sync_cloud_creds_secret_resource_version
            .as_deref()
            != Some(root_version)
        || is_true(status, condition::PROVISION_FAILURE)
        || is_true(status, condition::INSUFFICIENT_CLOUD_CREDS)
        || !secret_holds_key
    {
        return None;
    }
    let last = status.last_sync_timestamp.as_ref()?;
    let age = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .checked_sub(Duration::from_secs(last.0.as_second().max(0) as u64))?;
    let key_due = resync.key_rotation.is_some_and(|p| age >= p);
    (age < resync.period && !key_due).then(|| resync.period - age)
}

/// A manual-mode STS request whose profile was already there: nothing to record.
pub fn sts_unchanged(status: &CredentialsRequestStatus, generation: i64) -> bool {
    status.provisioned
        && status.last_sync_generation == generation
        && !is_true(status, condition::PROVISION_FAILURE)
}

/// The identity recorded for the request (before it is created in the cloud), if any.
pub fn recorded_identity(status: &CredentialsRequestStatus) -> Option<AwsProviderStatus> {
    status
        .provider_status
        .clone()
        .filter(|p| !p.user.is_empty())
}

/// A new identity for request `request` of cluster `cluster_id`: a user name with the
/// `random` suffix, and its policy name.
pub fn new_identity(cluster_id: &str, request: &str, random: [u8; 5]) -> AwsProviderStatus {
    let user = mint::user_name(cluster_id, request, random);
    AwsProviderStatus {
        api_version: Some(PROVIDER_API_VERSION.to_owned()),
        kind: Some(AWS_PROVIDER_STATUS.to_owned()),
        policy: mint::policy_name(&user),
        user,
    }
}

/// The tags every minted user carries: the cluster's ownership tag, the UID of the request
/// it is minted for ([`mint::REQUEST_TAG`]), then the configured resource tags.
pub fn user_tags(
    cluster_id: &str,
    request_uid: &str,
    resource_tags: &[(String, String)],
) -> Vec<(String, String)> {
    let mut tags = vec![
        (
            format!("kubernetes.io/cluster/{cluster_id}"),
            "owned".to_owned(),
        ),
        (mint::REQUEST_TAG.to_owned(), request_uid.to_owned()),
    ];
    tags.extend(resource_tags.iter().cloned());
    tags
}

/// Why `identity`, as a request's status records it, is not one this operator mints for
/// request `request` of cluster `cluster_id` ([`mint::user_name`], and `<user>-policy`), if it
/// isn't. Only someone else can have written such a status: the operator leaves that user
/// alone.
pub fn foreign_identity(
    identity: &AwsProviderStatus,
    cluster_id: &str,
    request: &str,
) -> Option<String> {
    let shown = |s: &str| {
        let cut: String = s.chars().take(80).collect();
        if cut.len() < s.len() {
            format!("{cut:?}…")
        } else {
            format!("{cut:?}")
        }
    };
    if !mint::is_user_name(&identity.user, cluster_id, request) {
        return Some(format!(
            "status.providerStatus names IAM user {}, not a name this operator mints for this \
             request ({}<5 letters or digits>): that user is left alone",
            shown(&identity.user),
            mint::user_name_prefix(cluster_id, request)
        ));
    }
    let policy = mint::policy_name(&identity.user);
    if identity.policy != policy {
        return Some(format!(
            "status.providerStatus names policy {} of IAM user {}, not {policy}: that user is \
             left alone",
            shown(&identity.policy),
            identity.user
        ));
    }
    None
}

/// Whether an existing IAM user carrying `tags` was minted for the request of UID
/// `request_uid` (its [`mint::REQUEST_TAG`]).
pub fn minted_for(tags: &[(String, String)], request_uid: &str) -> bool {
    !request_uid.is_empty()
        && tags
            .iter()
            .any(|(k, v)| k == mint::REQUEST_TAG && v == request_uid)
}

/// What the operator says of an existing IAM user `user` that was not minted for the request of
/// UID `request_uid`.
pub fn not_minted_for(user: &str, request_uid: &str) -> String {
    format!(
        "IAM user {user} exists and was not minted for this request (it has no tag {}={request_uid}): \
         it is left alone. If this operator minted it before it tagged users so, add that tag",
        mint::REQUEST_TAG
    )
}

/// What to do with a minted user's access keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The Secret's key is the user's and not due: keep it.
    Keep,
    /// The Secret is missing, holds no key, a key IAM no longer has, or one past its rotation
    /// period: delete every key of the user and create exactly one. `rotated`: the Secret held
    /// a key (a replacement, not a first mint).
    Replace { rotated: bool },
}

/// Whether `key` is past the rotation period.
pub fn expired(key: &AccessKey, rotation: Option<Duration>, now: SystemTime) -> bool {
    rotation.is_some_and(|period| {
        key.created
            .and_then(|c| now.duration_since(c).ok())
            .is_some_and(|age| age >= period)
    })
}

/// The keys decision, from the user's keys as IAM lists them and the key ID in the Secret.
pub fn keys(
    listed: &[AccessKey],
    in_secret: Option<&str>,
    rotation: Option<Duration>,
    now: SystemTime,
) -> Keys {
    let current = listed.iter().find(|k| Some(k.id.as_str()) == in_secret);
    match current {
        Some(k) if !expired(k, rotation, now) => Keys::Keep,
        _ => Keys::Replace {
            rotated: in_secret.is_some(),
        },
    }
}

/// The Normal Event of a new key: `(reason, note)`.
pub fn key_event(
    rotated: bool,
    user: &str,
    secret_ns: &str,
    secret: &str,
) -> (&'static str, String) {
    if rotated {
        (
            "AccessKeyReplaced",
            format!("Replaced the access key of IAM user {user} in Secret {secret_ns}/{secret}"),
        )
    } else {
        (
            "CredentialsMinted",
            format!(
                "Minted IAM user {user} and stored its access key in Secret {secret_ns}/{secret}"
            ),
        )
    }
}

/// The actions the root credentials must be allowed in passthrough (the Allow statements').
pub fn wanted_actions(statements: &[StatementEntry]) -> Vec<String> {
    statements
        .iter()
        .filter(|s| s.effect == Effect::Allow)
        .flat_map(|s| s.action.iter().cloned())
        .collect()
}

/// What a minted request's own credentials can tell when the root ones are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutRoot {
    /// Nothing: not mint mode, or never provisioned.
    Unknown,
    /// Its spec changed since the last sync: applying it needs the root credentials. This
    /// stays true after the failure is recorded (which clears `provisioned`), so retries keep
    /// saying why.
    SpecChanged,
    /// Provisioned at this generation: ask IAM with the minted credentials.
    Check,
}

/// What can be told about a minted request at `generation` without the root credentials:
/// mint mode (by `--mode` or not overridden) and synced at some point.
pub fn without_root(
    mode: Option<Mode>,
    status: &CredentialsRequestStatus,
    generation: i64,
) -> WithoutRoot {
    if !mode.is_none_or(|m| m == Mode::Mint) || status.last_sync_generation == 0 {
        WithoutRoot::Unknown
    } else if status.last_sync_generation != generation {
        WithoutRoot::SpecChanged
    } else if status.provisioned {
        WithoutRoot::Check
    } else {
        WithoutRoot::Unknown
    }
}

/// Whether minted user `user`, as its own credentials see it (`me`), is exactly as it should
/// be: the same user, carrying `tags`, with the requested policy last applied (`recorded`, the
/// Secret's annotation). `Err(what)` names what needs changing (and so the root credentials).
pub fn check_minted(
    me: &Caller,
    user: &str,
    tags: &[(String, String)],
    statements: &[StatementEntry],
    recorded: Option<&str>,
) -> Result<(), String> {
    if me.name != user {
        return Err(format!(
            "replacing the access key of another user ({})",
            me.name
        ));
    }
    if let Some(tag) = tags.iter().find(|t| !me.tags.contains(t)) {
        return Err(format!("tagging the user with {}={}", tag.0, tag.1));
    }
    let document = mint::policy_document(statements, &me.arn);
    if !recorded.is_some_and(|r| mint::same_policy(r, &document)) {
        return Err("putting the requested policy".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CredentialsRequestCondition, CredentialsRequestSpec, ProviderSpec, SecretReference,
    };
    use crate::conditions::set_condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn statement(effect: Effect, action: &str) -> StatementEntry {
        StatementEntry {
            effect,
            action: vec![action.into()],
            resource: "*".into(),
            policy_condition: None,
        }
    }

    fn request(kind: &str, role: Option<&str>) -> CredentialsRequest {
        CredentialsRequest::new(
            "r",
            CredentialsRequestSpec {
                secret_ref: SecretReference {
                    name: "s".into(),
                    namespace: "ns".into(),
                },
                provider_spec: ProviderSpec {
                    kind: kind.into(),
                    statement_entries: Some(vec![statement(Effect::Allow, "ec2:Describe*")]),
                    sts_iam_role_arn: role.map(Into::into),
                    ..ProviderSpec::default()
                },
                service_account_names: Vec::new(),
                cloud_token_path: None,
            },
        )
    }

    #[test]
    fn other_clouds_are_ignored_whatever_the_mode() {
        for mode in [None, Some(Mode::Mint), Some(Mode::Manual)] {
            let cr = request("GCPProviderSpec", Some("arn:aws:iam::1:role/r"));
            match path(&cr, mode) {
                Path::Ignored { message } => assert!(
                    message.starts_with(
                        "providerSpec kind \"GCPProviderSpec\" is not AWSProviderSpec"
                    ),
                    "{message}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn manual_mode_provisions_only_sts_requests() {
        let plain = request("AWSProviderSpec", None);
        assert_eq!(path(&plain, Some(Mode::Manual)), Path::HandsOff);
        let sts = request("AWSProviderSpec", Some("arn:aws:iam::1:role/r"));
        assert_eq!(
            path(&sts, Some(Mode::Manual)),
            Path::Provision(Provision::Sts {
                role: "arn:aws:iam::1:role/r".into()
            })
        );
        // Outside manual mode a role changes nothing: the root credentials serve it.
        for mode in [None, Some(Mode::Mint), Some(Mode::Passthrough)] {
            assert!(
                matches!(
                    path(&sts, mode),
                    Path::Provision(Provision::Cloud { statements }) if statements.len() == 1
                ),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn the_mode_flag_wins_over_the_annotation() {
        use mint::{MODE_INSUFFICIENT, MODE_MINT, MODE_PASSTHROUGH};
        let passthrough = Ok(Plan::Passthrough { simulate: false });
        for annotation in [
            None,
            Some(MODE_MINT),
            Some(MODE_INSUFFICIENT),
            Some("bogus"),
        ] {
            assert_eq!(plan(Some(Mode::Passthrough), annotation), passthrough);
            assert_eq!(plan(Some(Mode::Mint), annotation), Ok(Plan::Mint));
        }
        assert_eq!(
            plan(Some(Mode::Mint), Some(MODE_PASSTHROUGH)),
            Ok(Plan::Mint)
        );
        assert_eq!(plan(None, None), Ok(Plan::Mint));
        assert_eq!(plan(None, Some(MODE_MINT)), Ok(Plan::Mint));
        assert_eq!(
            plan(None, Some(MODE_PASSTHROUGH)),
            Ok(Plan::Passthrough { simulate: true })
        );
        assert_eq!(
            plan(None, Some(MODE_INSUFFICIENT)),
            Err(Refusal::Insufficient)
        );
        assert_eq!(
            plan(None, Some("Mint")),
            Err(Refusal::UnknownMode("Mint".into())),
            "case matters, as in OpenShift"
        );
    }

    #[test]
    fn refusals_name_the_root_secret_and_the_way_out() {
        assert_eq!(
            Refusal::Insufficient.message("kube-system", "aws-creds"),
            "cloud credentials insufficient to satisfy credentials request: Secret kube-system/aws-creds is annotated cloudcredential.openshift.io/mode=insufficient"
        );
        assert_eq!(
            Refusal::UnknownMode("bogus".into()).message("kube-system", "aws-creds"),
            "unexpected value \"bogus\" of annotation cloudcredential.openshift.io/mode on Secret kube-system/aws-creds: use mint, passthrough or insufficient"
        );
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// A status synced `ago` before `now` at generation 2 with root version "7".
    fn synced(now: SystemTime, ago: Duration) -> CredentialsRequestStatus {
        let at = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            - ago;
        CredentialsRequestStatus {
            provisioned: true,
            last_sync_generation: 2,
            last_sync_cloud_creds_secret_resource_version: Some("7".into()),
            last_sync_timestamp: Timestamp::from_second(at.as_secs() as i64).ok().map(Time),
            ..CredentialsRequestStatus::default()
        }
    }

    #[test]
    fn an_unchanged_recent_sync_waits_for_the_rest_of_the_period() {
        let now = SystemTime::now();
        let resync = Resync {
            period: HOUR,
            key_rotation: None,
        };
        let status = synced(now, Duration::from_secs(600));
        let wait = fresh(&status, 2, "7", true, resync, now);
        assert!(
            wait.is_some_and(|w| w <= Duration::from_secs(3000) && w > Duration::from_secs(2990)),
            "{wait:?}"
        );
        // Anything changed: sync now.
        assert_eq!(fresh(&status, 3, "7", true, resync, now), None, "spec");
        assert_eq!(fresh(&status, 2, "8", true, resync, now), None, "root");
        assert_eq!(fresh(&status, 2, "7", false, resync, now), None, "Secret");
        let old = synced(now, 2 * HOUR);
        assert_eq!(fresh(&old, 2, "7", true, resync, now), None, "period");
        let mut unprovisioned = status.clone();
        unprovisioned.provisioned = false;
        assert_eq!(fresh(&unprovisioned, 2, "7", true, resync, now), None);
        for failure in [
            condition::PROVISION_FAILURE,
            condition::INSUFFICIENT_CLOUD_CREDS,
        ] {
            let mut failed = status.clone();
            set_condition(&mut failed.conditions, failure, true, "R", "m");
            assert_eq!(fresh(&failed, 2, "7", true, resync, now), None, "{failure}");
        }
        // A failure condition that is False doesn't count.
        let mut cleared = status.clone();
        cleared.conditions.push(CredentialsRequestCondition {
            type_: condition::PROVISION_FAILURE.into(),
            status: "False".into(),
            ..CredentialsRequestCondition::default()
        });
        assert!(fresh(&cleared, 2, "7", true, resync, now).is_some());
        let mut never = status.clone();
        never.last_sync_timestamp = None;
        assert_eq!(fresh(&never, 2, "7", true, resync, now), None);
    }

    #[test]
    fn a_key_due_for_rotation_is_not_fresh() {
        let now = SystemTime::now();
        let status = synced(now, Duration::from_secs(600));
        let rotating = |minutes: u64| Resync {
            period: HOUR,
            key_rotation: Some(Duration::from_secs(60 * minutes)),
        };
        assert_eq!(fresh(&status, 2, "7", true, rotating(5), now), None);
        assert!(fresh(&status, 2, "7", true, rotating(30), now).is_some());
    }

    fn key(id: &str, age: Option<Duration>, now: SystemTime) -> AccessKey {
        AccessKey {
            id: id.into(),
            created: age.map(|a| now - a),
        }
    }

    #[test]
    fn the_secrets_key_is_kept_while_iam_has_it_and_it_is_not_due() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let listed = [key("OLD", Some(10 * day), now), key("CUR", Some(day), now)];
        assert_eq!(keys(&listed, Some("CUR"), None, now), Keys::Keep);
        assert_eq!(keys(&listed, Some("CUR"), Some(2 * day), now), Keys::Keep);
        assert_eq!(
            keys(&listed, Some("CUR"), Some(day), now),
            Keys::Replace { rotated: true },
            "due"
        );
        assert_eq!(
            keys(&listed, Some("GONE"), None, now),
            Keys::Replace { rotated: true },
            "a key IAM no longer has"
        );
        assert_eq!(
            keys(&listed, None, None, now),
            Keys::Replace { rotated: false },
            "no Secret, or no key in it"
        );
        assert_eq!(keys(&[], None, None, now), Keys::Replace { rotated: false });
        // A key without a creation date is never due.
        assert!(!expired(&key("X", None, now), Some(Duration::ZERO), now));
    }

    #[test]
    fn key_events_say_whether_a_key_was_replaced() {
        let (reason, note) = key_event(false, "u", "ns", "s");
        assert_eq!(reason, "CredentialsMinted");
        assert_eq!(
            note,
            "Minted IAM user u and stored its access key in Secret ns/s"
        );
        let (reason, note) = key_event(true, "u", "ns", "s");
        assert_eq!(reason, "AccessKeyReplaced");
        assert_eq!(note, "Replaced the access key of IAM user u in Secret ns/s");
    }

    #[test]
    fn identities_tags_and_wanted_actions() {
        let identity = new_identity("cluster", "req", [0; 5]);
        assert_eq!(identity.user, "cluster-req-aaaaa");
        assert_eq!(identity.policy, "cluster-req-aaaaa-policy");
        assert_eq!(identity.kind.as_deref(), Some("AWSProviderStatus"));
        let mut status = CredentialsRequestStatus::default();
        assert_eq!(recorded_identity(&status), None);
        status.provider_status = Some(AwsProviderStatus::default());
        assert_eq!(recorded_identity(&status), None, "an empty user is none");
        status.provider_status = Some(identity.clone());
        assert_eq!(recorded_identity(&status), Some(identity));

        assert_eq!(
            user_tags("c", "uid-1", &[("team".into(), "a".into())]),
            [
                ("kubernetes.io/cluster/c".to_owned(), "owned".to_owned()),
                (mint::REQUEST_TAG.to_owned(), "uid-1".to_owned()),
                ("team".to_owned(), "a".to_owned())
            ]
        );
        let statements = [
            statement(Effect::Allow, "s3:Get*"),
            statement(Effect::Deny, "s3:Delete*"),
            statement(Effect::Allow, "ec2:DescribeInstances"),
        ];
        assert_eq!(
            wanted_actions(&statements),
            ["s3:Get*", "ec2:DescribeInstances"]
        );
    }

    #[test]
    fn sts_requests_and_root_less_checks() {
        let mut status = CredentialsRequestStatus {
            provisioned: true,
            last_sync_generation: 2,
            ..CredentialsRequestStatus::default()
        };
        assert!(sts_unchanged(&status, 2));
        assert!(!sts_unchanged(&status, 3));
        assert_eq!(without_root(None, &status, 2), WithoutRoot::Check);
        assert_eq!(
            without_root(Some(Mode::Mint), &status, 2),
            WithoutRoot::Check
        );
        assert_eq!(without_root(None, &status, 3), WithoutRoot::SpecChanged);
        for mode in [Mode::Passthrough, Mode::Manual] {
            assert_eq!(without_root(Some(mode), &status, 2), WithoutRoot::Unknown);
        }
        set_condition(
            &mut status.conditions,
            condition::PROVISION_FAILURE,
            true,
            "R",
            "m",
        );
        assert!(!sts_unchanged(&status, 2));
        // A recorded failure clears `provisioned`: a changed spec is still named as the cause.
        status.provisioned = false;
        assert_eq!(without_root(None, &status, 2), WithoutRoot::Unknown);
        assert_eq!(without_root(None, &status, 3), WithoutRoot::SpecChanged);
        // Never synced: nothing to check with.
        let fresh = CredentialsRequestStatus::default();
        assert_eq!(without_root(None, &fresh, 1), WithoutRoot::Unknown);
    }

    #[test]
    fn only_identities_minted_for_the_request_are_acted_on() {
        let ours = new_identity("cluster", "req", [1; 5]);
        assert_eq!(foreign_identity(&ours, "cluster", "req"), None);
        let mut other = ours.clone();
        other.user = "admin".into();
        other.policy = "admin-policy".into();
        let why = foreign_identity(&other, "cluster", "req").unwrap_or_default();
        assert!(
            why.contains("\"admin\"") && why.contains("cluster-req-<5"),
            "{why}"
        );
        // Another request's user (same cluster, another request name), a longer suffix, an
        // upper-case one.
        for user in [
            "cluster-other-abcde",
            "cluster-req-abcdef",
            "cluster-req-ABCDE",
        ] {
            other.user = user.into();
            other.policy = mint::policy_name(user);
            assert!(
                foreign_identity(&other, "cluster", "req").is_some(),
                "{user}"
            );
        }
        let mut policy = ours.clone();
        policy.policy = "other-policy".into();
        assert!(foreign_identity(&policy, "cluster", "req").is_some());
        // A huge name is cut in the message.
        other.user = "z".repeat(40_000);
        let why = foreign_identity(&other, "cluster", "req").unwrap_or_default();
        assert!(why.len() < 400, "{}", why.len());

        let tags = user_tags("cluster", "uid-1", &[]);
        assert!(minted_for(&tags, "uid-1"));
        assert!(!minted_for(&tags, "uid-2"));
        assert!(
            !minted_for(&tags[..1], "uid-1"),
            "the cluster's tag alone is not enough"
        );
        assert!(!minted_for(&[], ""));
    }

    #[test]
    fn a_minted_user_is_checked_for_identity_tags_and_policy() {
        let statements = [statement(Effect::Allow, "ec2:DescribeInstances")];
        let tags = user_tags("c", "uid-1", &[]);
        let me = Caller {
            name: "u".into(),
            arn: "arn:aws:iam::1:user/u".into(),
            permissions_boundary: None,
            tags: tags.clone(),
        };
        let document = mint::policy_document(&statements, &me.arn);
        assert_eq!(
            check_minted(&me, "u", &tags, &statements, Some(&document)),
            Ok(())
        );
        assert_eq!(
            check_minted(&me, "v", &tags, &statements, Some(&document)),
            Err("replacing the access key of another user (u)".into())
        );
        let more = user_tags("c", "uid-1", &[("team".into(), "a".into())]);
        assert_eq!(
            check_minted(&me, "u", &more, &statements, Some(&document)),
            Err("tagging the user with team=a".into())
        );
        let put = Err("putting the requested policy".to_owned());
        assert_eq!(check_minted(&me, "u", &tags, &statements, None), put);
        let changed = [statement(Effect::Allow, "s3:GetObject")];
        assert_eq!(
            check_minted(&me, "u", &tags, &changed, Some(&document)),
            put
        );
        // IAM may reformat the document: the same policy in other whitespace is the same.
        let reformatted = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&document).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_ne!(reformatted, document);
        assert_eq!(
            check_minted(&me, "u", &tags, &statements, Some(&reformatted)),
            Ok(())
        );
    }
}

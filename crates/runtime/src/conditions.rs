//! `metav1.Condition` lists, updated the way the API conventions ask: `lastTransitionTime` moves
//! only when `status` changes, and callers learn whether anything changed at all (so that an
//! unchanged status is never written).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The desired state of one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> Desired<'a> {
    pub fn new(type_: &'a str, status: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Desired {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The longest condition message written, in bytes (so at most as many characters): metav1
/// allows 32768 characters; Operon's CRDs allow this many (`operon_manifests::schema`).
pub const MAX_MESSAGE: usize = 4096;

/// `message` cut to [`MAX_MESSAGE`] bytes, on a character boundary.
pub fn cut_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

/// Sets `desired` in `conditions`; returns whether the list changed.
pub fn set(conditions: &mut Vec<Condition>, desired: Desired<'_>, generation: Option<i64>) -> bool {
    let status = status_str(desired.status);
    let message = cut_message(desired.message);
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(c) => {
            let same = c.status == status
                && c.reason == desired.reason
                && c.message == message
                && c.observed_generation == generation;
            if same {
                return false;
            }
            if c.status != status {
                c.last_transition_time = Time(Timestamp::now());
            }
            c.status = status.to_string();
            c.reason = desired.reason.to_string();
            c.message = message;
            c.observed_generation = generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_string(),
                status: status.to_string(),
                reason: desired.reason.to_string(),
                message,
                observed_generation: generation,
                last_transition_time: Time(Timestamp::now()),
            });
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn get<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut cs = Vec::new();
        assert!(set(
            &mut cs,
            Desired::new("Ready", false, "Pending", "waiting"),
            Some(1)
        ));
        let first = cs[0].last_transition_time.clone();
        assert!(!set(
            &mut cs,
            Desired::new("Ready", false, "Pending", "waiting"),
            Some(1)
        ));
        assert!(set(
            &mut cs,
            Desired::new("Ready", false, "Creating", "creating"),
            Some(1)
        ));
        assert_eq!(
            cs[0].last_transition_time, first,
            "same status keeps the time"
        );
        assert!(set(
            &mut cs,
            Desired::new("Ready", true, "PodReady", "ok"),
            Some(2)
        ));
        assert!(cs[0].last_transition_time.0 >= first.0);
        assert_eq!(cs[0].observed_generation, Some(2));
        assert!(is_true(&cs, "Ready"));
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let mut cs = Vec::new();
        set(
            &mut cs,
            Desired::new("Degraded", true, "X", "é".repeat(5000)),
            None,
        );
        assert!(cs[0].message.len() <= 4096);
        assert!(cs[0].message.chars().all(|c| c == 'é'));
    }
}

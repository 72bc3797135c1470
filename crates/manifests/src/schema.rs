//! Schemas for the Kubernetes types a custom resource's status holds, stricter than the ones
//! k8s-openapi derives, so that the API server refuses — with the field named — what the
//! operator could not read back.
//!
//! The API server checks `format: date-time` loosely: it accepts ten or more fraction digits,
//! offsets such as `+99:99`, any character where the fraction's dot belongs, and times in the
//! year 9999 that k8s-openapi's `Time` (jiff) can't hold. One such value in one object's status
//! fails the operator's whole list of its kind, and with it its cache (found by the hostile
//! input tests, `tests/hostile.rs` of each operator). [`TIME_PATTERN`] admits exactly the times
//! both accept. Use them with `#[schemars(schema_with = "…")]`:
//!
//! ```ignore
//! #[schemars(schema_with = "operon_manifests::schema::conditions")]
//! pub conditions: Vec<Condition>,
//! #[schemars(schema_with = "operon_manifests::schema::optional_time")]
//! pub last_sync: Option<Time>,
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// RFC 3339 times both the API server (`format: date-time`) and k8s-openapi's `Time` read:
/// years 0000 to 9998, `T` or `t`, hours, minutes and seconds in range, at most nine fraction
/// digits after a dot, `Z`, `z` or an offset of at most ±23:59. (That the day exists in its
/// month, the API server's `date-time` check sees to.)
pub const TIME_PATTERN: &str = r"^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// How many conditions a status may hold ([`conditions`]).
pub const MAX_CONDITIONS: u32 = 16;
/// The longest condition message: what `operon_runtime::conditions` writes at most (it cuts
/// longer ones), where metav1.Condition allows 32768. With [`MAX_CONDITIONS`], it bounds the
/// conditions to about 400 KiB of JSON, so that a status stays far from etcd's 1.5 MiB object
/// limit (beyond which the API server answers 500).
pub const MAX_CONDITION_MESSAGE: usize = operon_runtime::conditions::MAX_MESSAGE;

/// A `metav1.Time`: a string of [`TIME_PATTERN`].
pub fn time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "An RFC 3339 time, e.g. 2024-05-01T12:00:00Z.",
        "type": "string",
        "format": "date-time",
        "pattern": TIME_PATTERN,
    })
}

/// An optional `metav1.Time` (`Option<Time>`): [`time`], nullable.
pub fn optional_time(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = time(generator);
    schema.insert("nullable".into(), Value::Bool(true));
    schema
}

/// A `Vec<metav1.Condition>` as controller-gen writes it for Go operators (a list map keyed by
/// `type`; `type`, `reason` and `status` checked as the API conventions define them), with
/// `lastTransitionTime` of [`TIME_PATTERN`], at most [`MAX_CONDITIONS`] entries and messages of
/// at most [`MAX_CONDITION_MESSAGE`] characters.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut item = Condition::json_schema(generator);
    let mut set = |property: &str, constraints: Value| {
        let field = item
            .get_mut("properties")
            .and_then(|p| p.get_mut(property))
            .and_then(Value::as_object_mut);
        if let (Some(field), Value::Object(constraints)) = (field, constraints) {
            field.extend(constraints);
        }
    };
    set(
        "lastTransitionTime",
        json!({ "type": "string", "format": "date-time", "pattern": TIME_PATTERN }),
    );
    set("message", json!({ "maxLength": MAX_CONDITION_MESSAGE }));
    set("observedGeneration", json!({ "minimum": 0 }));
    set(
        "reason",
        json!({
            "minLength": 1,
            "maxLength": 1024,
            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        }),
    );
    set("status", json!({ "enum": ["True", "False", "Unknown"] }));
    set(
        "type",
        json!({
            "maxLength": 316,
            "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        }),
    );
    json_schema!({
        "type": "array",
        "items": item,
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use operon_envtest::hostile::{sample, timestamp};

    fn pattern() -> regex::Regex {
        regex::Regex::new(TIME_PATTERN).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_time_pattern_admits_only_times_the_operator_can_read()
    -> Result<(), operon_envtest::Error> {
        let pattern = pattern();
        // Generated hostile times (the same as the hostile-input tests send): whatever the
        // pattern admits on a day that exists (the API server checks that), k8s-openapi's
        // Time reads.
        let mut admitted = 0;
        for time in sample(&timestamp(), 4000)? {
            let Some(text) = time.as_str() else { continue };
            let day_exists = text
                .get(..10)
                .is_some_and(|d| d.parse::<k8s_openapi::jiff::civil::Date>().is_ok());
            if pattern.is_match(text) && day_exists {
                admitted += 1;
                assert!(
                    serde_json::from_value::<Time>(time.clone()).is_ok(),
                    "{text} matches the pattern but can't be read"
                );
            }
        }
        assert!(admitted > 1000, "only {admitted} generated times admitted");
        for ok in [
            "2024-05-01T12:00:00Z",
            "2024-05-01t12:00:00z",
            "2024-05-01T12:00:00.123456789Z",
            "2024-05-01T12:00:00+05:30",
            "2024-05-01T12:00:00-00:00",
            "0000-01-01T00:00:00+23:59",
            "9998-12-31T23:59:59-23:59",
        ] {
            assert!(pattern.is_match(ok), "{ok}");
            assert!(serde_json::from_value::<Time>(json!(ok)).is_ok(), "{ok}");
        }
        // What the API server accepts as a date-time and the operator can't read.
        for refused in [
            "2024-05-01T12:00:00.1234567890Z",
            "2024-05-01T12:00:00x5Z",
            "2024-05-01T12:00:00+99:99",
            "9999-12-31T23:59:59Z",
            "2024-01-01T24:00:00Z",
        ] {
            assert!(!pattern.is_match(refused), "{refused}");
            assert!(
                serde_json::from_value::<Time>(json!(refused)).is_err(),
                "{refused}"
            );
        }
        Ok(())
    }

    #[test]
    fn conditions_are_a_bounded_list_map_with_strict_times() {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let schema = serde_json::to_value(conditions(&mut generator)).unwrap_or_default();
        assert_eq!(schema["x-kubernetes-list-map-keys"], json!(["type"]));
        assert_eq!(schema["maxItems"], json!(MAX_CONDITIONS));
        let properties = &schema["items"]["properties"];
        assert_eq!(
            properties["lastTransitionTime"]["pattern"],
            json!(TIME_PATTERN)
        );
        assert_eq!(
            properties["message"]["maxLength"],
            json!(MAX_CONDITION_MESSAGE)
        );
        assert_eq!(
            properties["status"]["enum"],
            json!(["True", "False", "Unknown"])
        );
        assert_eq!(
            schema["items"]["required"],
            json!(["lastTransitionTime", "message", "reason", "status", "type"])
        );
    }
}

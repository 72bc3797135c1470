//! The operator's own alert, `ServiceCaOperatorSigningCAExpiresSoon`, run through Prometheus's
//! `promtool test rules` with the rules the generated `config/` ships: it fires on a CA close to
//! expiry, not on a healthy one, and not on a standby's unset gauge.

use std::path::Path;

use operon_envtest::promtool::{case, check_and_test, group};
use operon_manifests::alerts::rule_groups;
use serde_json::{Value, json};
use service_ca_operator::controller::signer::EXPIRY_METRIC;
use service_ca_operator::deploy::{NAMESPACE, declaration};

const ALERT: &str = "ServiceCaOperatorSigningCAExpiresSoon";
const DAY: u64 = 24 * 3600;

/// The expiry gauge of replica `pod`: `values` in promtool's expanding notation.
fn expiry(pod: &str, values: &str) -> Value {
    json!({
        "series": format!(
            r#"{EXPIRY_METRIC}{{job="service-ca-operator-metrics",namespace="{NAMESPACE}",pod="{pod}"}}"#
        ),
        "values": values,
    })
}

fn fired(left: &str) -> (Value, Value) {
    (
        json!({ "severity": "critical", "namespace": NAMESPACE }),
        json!({
            "summary": "service-ca-operator: the signing CA expires in less than 30 days",
            "description": format!(
                "The signing CA of Deployment {NAMESPACE}/service-ca-operator expires in {left} \
                 and has not been rotated: when it expires, no client trusts the serving \
                 certificates it signed. Look at the Events of Secret {NAMESPACE}/signing-key and \
                 the signer's logs; annotating that Secret with \
                 service-ca.operon.dev/force-rotation-reason=<reason> rotates it now."
            ),
        }),
    )
}

#[test]
fn the_ca_expiry_alert_fires_only_for_a_ca_close_to_expiry() -> anyhow::Result<()> {
    let manifests = declaration()?.manifests;
    let groups = rule_groups(&manifests.name, &manifests.namespace, &manifests.alerts);
    // promtool's clock starts at 0, so an expiry of N seconds is N seconds away at the start.
    let soon = format!("{}x180", 20 * DAY);
    let later = format!("{}x180", 400 * DAY);
    check_and_test(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &groups,
        vec![
            group(
                "20 days left fires after an hour",
                vec![expiry("service-ca-operator-0", &soon)],
                vec![
                    case("30m", ALERT, vec![]),
                    // 20 days − 2 hours.
                    case("2h", ALERT, vec![fired("19d 22h 0m 0s")]),
                ],
            ),
            group(
                "400 days left is healthy",
                vec![expiry("service-ca-operator-0", &later)],
                vec![case("2h", ALERT, vec![])],
            ),
            group(
                "a standby's unset gauge is not an expired CA",
                vec![
                    expiry("service-ca-operator-0", &later),
                    expiry("service-ca-operator-1", "0x180"),
                ],
                vec![case("2h", ALERT, vec![])],
            ),
            group(
                "only a standby reporting: silent",
                vec![expiry("service-ca-operator-1", "0x180")],
                vec![case("2h", ALERT, vec![])],
            ),
        ],
    );
    Ok(())
}

//! Fuzzing the certificate parsers with generated input (proptest on stable Rust): arbitrary
//! bytes, PEM-shaped garbage and mutated real certificates never panic any entry point that reads
//! what users or the cluster supply, and garbage is always judged as needing regeneration.

use std::time::Duration;

use proptest::prelude::*;
use service_ca_operator::pki::{self, KeyAlgorithm, Reason, ServingCertRequest, SigningCa};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ca() -> SigningCa {
    match SigningCa::generate(pki::DEFAULT_CA_LIFETIME, now()) {
        Ok(ca) => ca,
        Err(e) => panic!("CA: {e}"),
    }
}

fn request() -> ServingCertRequest<'static> {
    ServingCertRequest {
        service_name: "svc",
        namespace: "ns",
        service_uid: "5d2c1f0e-8a4b-4c3d-9e2f-1a2b3c4d5e6f",
        headless: false,
        cluster_domain: "cluster.local",
        lifetime: Duration::from_secs(3600 * 24),
        key: KeyAlgorithm::EcdsaP256,
    }
}

/// PEM-shaped text: real headers around arbitrary base64 or bytes.
fn pem_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("CERTIFICATE".to_string()),
            Just("PRIVATE KEY".to_string()),
            Just("EC PRIVATE KEY".to_string()),
            Just("RSA PRIVATE KEY".to_string()),
            "[A-Z ]{0,12}"
        ],
        prop_oneof!["[A-Za-z0-9+/=\n]{0,400}", "\\PC{0,200}"],
    )
        .prop_map(|(label, body)| {
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn from_pem_never_panics(cert in prop_oneof![pem_like(), "\\PC{0,300}"], key in prop_oneof![pem_like(), "\\PC{0,300}"]) {
        // Any outcome but a panic; garbage must not load.
        prop_assert!(SigningCa::from_pem(&cert, &key).is_err());
    }

    #[test]
    fn garbage_certificates_are_regenerated(cert in prop_oneof![pem_like(), "\\PC{0,300}"]) {
        let reason = pki::needs_regeneration(&cert, &ca(), &request(), now(), Duration::from_secs(3600));
        prop_assert!(matches!(reason, Some(Reason::Unparseable) | Some(Reason::WrongIssuer)), "{reason:?}");
    }

    #[test]
    fn mutated_real_certificates_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let ca = ca();
        let issued = ca.issue(&request(), now()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = issued.cert_pem.into_bytes();
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Either still a valid certificate for the request, or a reason; never a panic.
        let _ = pki::needs_regeneration(&text, &ca, &request(), now(), Duration::from_secs(3600));
        let _ = SigningCa::from_pem(&text, &issued.key_pem);
    }
}

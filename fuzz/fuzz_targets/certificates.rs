//! Whatever a user or the cluster puts into a serving Secret or the signing Secret reaches these
//! functions: none may panic, whatever the bytes.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use service_ca_operator::pki::{self, KeyAlgorithm, ServingCertRequest, SigningCa};
use time::OffsetDateTime;

fn ca() -> Option<&'static SigningCa> {
    static CA: OnceLock<Option<SigningCa>> = OnceLock::new();
    CA.get_or_init(|| SigningCa::generate(pki::DEFAULT_CA_LIFETIME, OffsetDateTime::now_utc()).ok())
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split the input into a "certificate" and a "key" part.
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    let (cert, key) = text.split_at(middle);
    let _ = SigningCa::from_pem(cert, key);
    let _ = SigningCa::from_pem(&text, &text);
    if let Some(ca) = ca() {
        let req = ServingCertRequest {
            service_name: "svc",
            namespace: "ns",
            service_uid: "5d2c1f0e-8a4b-4c3d-9e2f-1a2b3c4d5e6f",
            headless: data.first().is_some_and(|b| b % 2 == 0),
            cluster_domain: "cluster.local",
            lifetime: Duration::from_secs(86400),
            key: KeyAlgorithm::EcdsaP256,
        };
        let _ = pki::needs_regeneration(
            &text,
            ca,
            &req,
            OffsetDateTime::now_utc(),
            Duration::from_secs(3600),
        );
        let _ = pki::encode_service_uid(&text);
    }
});

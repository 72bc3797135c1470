//! Fuzzing what the operator parses or rewrites (proptest on stable Rust): the scrubber never
//! panics and never lets an access key ID or a secret-shaped word through; policy comparison
//! never panics and is reflexive.

use credentials_operator::iam::scrub;
use credentials_operator::mint::same_policy;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn scrub_never_lets_keys_through(
        before in "\\PC{0,60}",
        key_id in "AKIA[A-Z0-9]{16}",
        secret in "[A-Za-z0-9/+]{40}",
        after in "\\PC{0,60}",
    ) {
        // What AWS secrets look like: mixed case and digits.
        prop_assume!(secret.chars().any(|c| c.is_ascii_digit())
            && secret.chars().any(|c| c.is_ascii_lowercase())
            && secret.chars().any(|c| c.is_ascii_uppercase()));
        let text = format!("{before} {key_id} {secret} {after}");
        let scrubbed = scrub(&text);
        prop_assert!(!scrubbed.contains(&key_id), "{scrubbed}");
        prop_assert!(!scrubbed.contains(&secret), "{scrubbed}");
    }

    #[test]
    fn scrub_never_panics(text in "\\PC{0,500}") {
        let _ = scrub(&text);
    }

    #[test]
    fn policy_comparison_is_total_and_reflexive(a in "\\PC{0,200}", b in "\\PC{0,200}") {
        prop_assert!(same_policy(&a, &a));
        let _ = same_policy(&a, &b);
    }
}

//! Names users give (operator, kind, group, version), checked with messages that say what is
//! allowed, and the names derived from them (module, plural, field).

use anyhow::{Result, bail};

/// Rust keywords (strict and reserved, 2024): a module or field can't be named one of them.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// An operator (and crate) name: a DNS label that starts with a letter, e.g. `pod-operator`.
pub fn check_operator_name(name: &str) -> Result<()> {
    if !is_dns_label(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!(
            "invalid operator name {name:?}: use lowercase letters, digits and '-', starting with a \
             letter and ending with a letter or digit, at most 63 characters (e.g. pod-operator); \
             it names the crate, the binary, the Deployment and the namespace <name>-system"
        );
    }
    if name.len() > 56 {
        bail!("invalid operator name {name:?}: at most 56 characters, so that <name>-system fits");
    }
    if KEYWORDS.contains(&crate_ident(name).as_str()) || name == "test" || name == "operon" {
        bail!("invalid operator name {name:?}: it is reserved in Rust or by Operon");
    }
    Ok(())
}

/// The Rust identifier of a crate named `name`.
pub fn crate_ident(name: &str) -> String {
    name.replace('-', "_")
}

/// A kind: CamelCase, starting with an upper-case letter, letters and digits only.
pub fn check_kind(kind: &str) -> Result<()> {
    let ok = kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
        && kind.len() <= 63;
    if !ok {
        bail!(
            "invalid kind {kind:?}: kinds are CamelCase, start with an upper-case letter and hold \
             only letters and digits, e.g. PodRequest"
        );
    }
    if kind.ends_with("List") {
        bail!("invalid kind {kind:?}: <Kind>List is the name of the kind's list type");
    }
    if KEYWORDS.contains(&snake(kind).as_str()) {
        bail!(
            "invalid kind {kind:?}: its module name {:?} is a Rust keyword",
            snake(kind)
        );
    }
    if let Some(singular) = singular_of_plural(kind) {
        bail!(
            "invalid kind {kind:?}: kinds are singular (the resource name is the plural, \
             {:?}); did you mean {singular}?",
            resource_plural(&singular)
        );
    }
    Ok(())
}

/// Words ending in `s` that are singular (the last word of a kind such as `NodeStatus`).
const SINGULAR_S: &[&str] = &[
    "alias",
    "analysis",
    "atlas",
    "basis",
    "bias",
    "bonus",
    "bus",
    "campus",
    "canvas",
    "census",
    "chaos",
    "consensus",
    "corpus",
    "diagnosis",
    "gas",
    "kudos",
    "lens",
    "news",
    "series",
    "species",
    "status",
    "thesis",
    "virus",
];

/// The singular `kind` looks like the plural of, if it looks plural: `PodRequests` →
/// `PodRequest`, `Policies` → `Policy`, `Boxes` → `Box`; `Ingress`, `NodeStatus`, `DNS` are
/// singular.
pub fn singular_of_plural(kind: &str) -> Option<String> {
    // The last CamelCase word; an acronym (`DNS`, `TLS`) ends in a capital S.
    let start = kind
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_ascii_uppercase())
        .map_or(0, |(i, _)| i);
    let (head, word) = kind.split_at(start);
    let lower = word.to_ascii_lowercase();
    if !lower.ends_with('s') || lower.len() < 3 || !word.ends_with('s') {
        return None;
    }
    if lower.ends_with("ss") || lower.ends_with("us") || lower.ends_with("is") {
        return None;
    }
    if SINGULAR_S.contains(&lower.as_str()) {
        return None;
    }
    let singular_word = if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if ["sses", "xes", "zes", "ches", "shes"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        word[..word.len() - 2].to_string()
    } else {
        word[..word.len() - 1].to_string()
    };
    Some(format!("{head}{singular_word}"))
}

/// Edit distance of `a` and `b`, ignoring case: insertions, deletions, substitutions and
/// swaps of adjacent letters (the usual typos) count one each.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_ascii_lowercase().chars().collect();
    let b: Vec<char> = b.to_ascii_lowercase().chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The name of `known` nearest to `name` when it is close enough to be a slip (a typo, a
/// different case, a plural): at most 2 edits, and fewer than a third of the name's letters.
pub fn near_miss<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .filter(|k| *k != name)
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2 && *d * 3 < name.len().max(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The full API group: `group` as is when it has a dot, else `<group>.<domain>`; must be a DNS
/// subdomain, with a dot, outside the groups Kubernetes reserves.
pub fn full_group(group: &str, domain: &str) -> Result<String> {
    let full = if group.contains('.') || domain.is_empty() {
        group.to_string()
    } else {
        format!("{group}.{domain}")
    };
    let labels_ok = full.split('.').all(is_dns_label);
    if !labels_ok || full.len() > 253 || !full.contains('.') {
        bail!(
            "invalid API group {group:?}: groups are DNS names in lowercase with at least one dot, \
             such as pod.example.com (a bare word gets the project's domain: <group>.<domain>)"
        );
    }
    for reserved in ["k8s.io", "kubernetes.io"] {
        if full == reserved || full.ends_with(&format!(".{reserved}")) {
            bail!(
                "invalid API group {full:?}: groups under {reserved} are reserved for Kubernetes"
            );
        }
    }
    Ok(full)
}

/// A project domain: a DNS name (`example.com`).
pub fn check_domain(domain: &str) -> Result<()> {
    if domain.is_empty() || !domain.split('.').all(is_dns_label) || domain.len() > 253 {
        bail!("invalid domain {domain:?}: use a lowercase DNS name such as example.com");
    }
    Ok(())
}

/// A Kubernetes API version: `v<N>`, `v<N>alpha<M>` or `v<N>beta<M>`, N and M from 1.
pub fn check_version(version: &str) -> Result<()> {
    fn number(s: &str) -> bool {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && !s.starts_with('0')
    }
    let ok = version.strip_prefix('v').is_some_and(|rest| {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (major, qualifier) = rest.split_at(split);
        number(major)
            && (qualifier.is_empty()
                || qualifier.strip_prefix("alpha").is_some_and(number)
                || qualifier.strip_prefix("beta").is_some_and(number))
    });
    if !ok {
        bail!(
            "invalid API version {version:?}: use v1, v2, … or a pre-release such as v1alpha1 or \
             v2beta3"
        );
    }
    Ok(())
}

/// `PodRequest` → `pod_request`, `HTTPRoute` → `http_route`.
pub fn snake(kind: &str) -> String {
    heck::ToSnakeCase::to_snake_case(kind)
}

/// The English plural of a lowercase word, as Kubernetes resource names use it.
pub fn plural(word: &str) -> String {
    let consonant_y =
        word.ends_with('y') && !word[..word.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{}ies", &word[..word.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| word.ends_with(e))
    {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

/// The resource name of `kind`: its lowercase plural (`PodRequest` → `podrequests`).
pub fn resource_plural(kind: &str) -> String {
    plural(&kind.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for good in ["PodRequest", "Widget", "HTTPRoute", "V1Thing"] {
            assert!(check_kind(good).is_ok(), "{good}");
        }
        for bad in [
            "podRequest",
            "pod-request",
            "Pod_Request",
            "",
            "PodRequestList",
            "Type",
        ] {
            let e = check_kind(bad).expect_err(bad).to_string();
            assert!(e.contains("invalid kind"), "{e}");
        }
    }

    #[test]
    fn plural_looking_kinds_are_refused_with_the_singular() {
        for (plural, singular) in [
            ("PodRequests", "PodRequest"),
            ("Widgets", "Widget"),
            ("NetworkPolicies", "NetworkPolicy"),
            ("Boxes", "Box"),
            ("Matches", "Match"),
        ] {
            let e = check_kind(plural).expect_err(plural).to_string();
            assert!(e.contains(&format!("did you mean {singular}?")), "{e}");
        }
        for singular in [
            "Ingress",
            "NodeStatus",
            "DNS",
            "Gas",
            "Alias",
            "Analysis",
            "Bus",
            "Series",
            "Class",
            "Os",
        ] {
            assert!(check_kind(singular).is_ok(), "{singular}");
        }
    }

    #[test]
    fn near_misses() {
        let known = ["PodRequest", "Widget", "Pod", "Deployment"];
        assert_eq!(near_miss("PodRequst", known), Some("PodRequest"));
        assert_eq!(near_miss("podrequest", known), Some("PodRequest"));
        assert_eq!(near_miss("Widgets", known), Some("Widget"));
        assert_eq!(near_miss("Deploymnet", known), Some("Deployment"));
        assert_eq!(near_miss("Gadget", known), None);
        // Short names: one edit is a third of them already.
        assert_eq!(near_miss("Job", known), None);
        assert_eq!(near_miss("PodRequest", known), None);
    }

    #[test]
    fn groups() {
        assert_eq!(
            full_group("pod.example.com", "x.org").ok().as_deref(),
            Some("pod.example.com")
        );
        assert_eq!(
            full_group("pod", "example.com").ok().as_deref(),
            Some("pod.example.com")
        );
        for bad in [
            "Pod.example.com",
            "pod..example.com",
            "-pod.example.com",
            "pod_x.example.com",
        ] {
            let e = full_group(bad, "example.com").expect_err(bad).to_string();
            assert!(e.contains("DNS names"), "{e}");
        }
        assert!(full_group("pod", "").is_err(), "a group needs a dot");
        let e = full_group("apps.k8s.io", "")
            .expect_err("reserved")
            .to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn versions() {
        for good in ["v1", "v2", "v1alpha1", "v1beta2", "v10beta10"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in [
            "1",
            "v0",
            "V1",
            "v1alpha",
            "v1alpha0",
            "v1gamma1",
            "v01",
            "v1-alpha1",
            "",
        ] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operator_names() {
        assert!(check_operator_name("pod-operator2").is_ok());
        for bad in [
            "Pod",
            "2pod",
            "pod-",
            "pod_operator",
            "",
            "test",
            "operon",
            "self",
        ] {
            assert!(check_operator_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_names() {
        assert_eq!(snake("PodRequest"), "pod_request");
        assert_eq!(snake("HTTPRoute"), "http_route");
        assert_eq!(snake("ConfigMap"), "config_map");
        assert_eq!(snake("V1Thing"), "v1_thing");
        assert_eq!(resource_plural("PodRequest"), "podrequests");
        assert_eq!(resource_plural("Policy"), "policies");
        assert_eq!(resource_plural("Gateway"), "gateways");
        assert_eq!(resource_plural("Ingress"), "ingresses");
        assert_eq!(resource_plural("Mesh"), "meshes");
    }
}

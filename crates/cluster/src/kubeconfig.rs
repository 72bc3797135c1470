//! Kubeconfig files for one cluster, one user and one context, built with kube's own typed
//! [`Kubeconfig`] (so a field can't be misspelled) and written as JSON, which every YAML reader
//! (kube-rs, client-go, kubectl) accepts.

use std::path::Path;

use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

/// How the client trusts the apiserver's certificate.
pub enum Ca<'a> {
    /// The CA certificate(s), PEM, inline.
    Pem(&'a str),
    /// A file holding them.
    File(&'a Path),
}

/// Who the client is.
pub enum Credentials<'a> {
    /// A client certificate and its key, PEM, inline.
    ClientCert { cert_pem: &'a str, key_pem: &'a str },
    /// A bearer token (a ServiceAccount's).
    Token(&'a str),
}

/// DER certificates (a client configuration's `root_cert`) as one PEM bundle, for [`Ca::Pem`].
pub fn certificates_pem(ders: &[Vec<u8>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.iter()
        .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.as_slice()), config))
        .collect()
}

/// A kubeconfig whose cluster, user and context are all called `name` and current.
pub fn single(
    name: &str,
    server: &str,
    ca: Ca<'_>,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> Kubeconfig {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut cluster = Cluster {
        server: Some(server.to_string()),
        ..Cluster::default()
    };
    match ca {
        Ca::Pem(pem) => cluster.certificate_authority_data = Some(b64(pem)),
        Ca::File(path) => cluster.certificate_authority = Some(path.display().to_string()),
    }
    let mut user = AuthInfo::default();
    match credentials {
        Credentials::ClientCert { cert_pem, key_pem } => {
            user.client_certificate_data = Some(b64(cert_pem));
            user.client_key_data = Some(b64(key_pem).into());
        }
        Credentials::Token(token) => user.token = Some(token.to_string().into()),
    }
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.into(),
            cluster: Some(cluster),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: name.into(),
            auth_info: Some(user),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: name.into(),
            context: Some(Context {
                cluster: name.into(),
                user: Some(name.into()),
                namespace: namespace.map(str::to_string),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(name.into()),
        ..Kubeconfig::default()
    }
}

/// The file's text (JSON).
pub fn to_text(config: &Kubeconfig) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_as_the_same_cluster_user_and_context() {
        let config = single(
            "test",
            "https://127.0.0.1:6443",
            Ca::Pem("CA PEM"),
            Credentials::Token("secret-token"),
            Some("ns"),
        );
        let text = to_text(&config).expect("serializes");
        let back = Kubeconfig::from_yaml(&text).expect("a kubeconfig");
        assert_eq!(back.current_context.as_deref(), Some("test"));
        let cluster = back.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode("CA PEM")
                    .as_str()
            )
        );
        let context = back.contexts[0].context.as_ref().expect("context");
        assert_eq!(
            (context.user.as_deref(), context.namespace.as_deref()),
            (Some("test"), Some("ns"))
        );
        // The token is written, not redacted.
        assert!(text.contains("secret-token"), "{text}");
    }
}

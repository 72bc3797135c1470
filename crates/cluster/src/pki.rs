//! Certificates and keys for a local control plane, generated in-process.
//!
//! One CA signs the apiserver's serving certificate and every client certificate; each component
//! gets its own identity so that the built-in RBAC bindings for `system:kube-controller-manager`
//! and `system:kube-scheduler` apply exactly as in a real cluster.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::Error;

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the control plane needs to run TLS, authenticate clients and sign tokens.
pub struct Pki {
    /// The CA that signs everything below; trusted by clients and by the apiserver for client certs.
    pub ca: CertKey,
    /// The apiserver's serving certificate.
    pub serving: CertKey,
    /// `O=system:masters`: full access, used by tests, xtask and kwok.
    pub admin: CertKey,
    pub controller_manager: CertKey,
    pub scheduler: CertKey,
    /// Identities of a real node, when the control plane has one.
    pub node: Option<NodeCerts>,
    /// ServiceAccount token signing key (PKCS#8 PEM, ECDSA P-256, so tokens are ES256).
    pub service_account_key_pem: String,
    /// Its public half (SPKI PEM), which the apiserver verifies tokens with.
    pub service_account_public_pem: String,
}

/// Where a real node is: the API server's address on the node's link, the node's own, and its
/// name.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddresses<'a> {
    pub host_ip: Ipv4Addr,
    pub node_ip: Ipv4Addr,
    pub name: &'a str,
}

/// Certificates of a real node and of the API server towards it.
pub struct NodeCerts {
    /// The API server's client certificate towards kubelets (`kube-apiserver-kubelet-client`).
    pub apiserver_kubelet_client: CertKey,
    /// kubelet's identity towards the API server: `system:node:<name>` in `system:nodes`, which
    /// the Node authorizer and NodeRestriction know.
    pub kubelet: CertKey,
    /// kubelet's serving certificate, for its address and name.
    pub kubelet_serving: CertKey,
    /// `system:kube-proxy`, bound to `system:node-proxier` by the default RBAC policy.
    pub kube_proxy: CertKey,
}

/// The IP the `kubernetes` Service gets in the default service range (10.0.0.0/24).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

const LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

fn pki_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Pki { what, source }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks of processes started at the same moment.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + LIFETIME;
}

impl Pki {
    /// Generates a fresh CA and all leaf certificates.
    pub fn generate() -> Result<Self, Error> {
        Self::generate_with(None)
    }

    /// [`generate`](Self::generate), with the certificates of a real node at `node`.
    pub fn generate_with(node: Option<NodeAddresses<'_>>) -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("operon-envtest-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params);
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(pki_err("CA certificate"))?;
        let ca = CertKey {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let serving = Self::leaf(
            &issuer,
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            &serving_names(node.map(|n| n.host_ip)),
        )?;
        let client = |cn: &str, org: Option<&str>| {
            Self::leaf(&issuer, cn, org, ExtendedKeyUsagePurpose::ClientAuth, &[])
        };
        let admin = client("operon-admin", Some("system:masters"))?;
        let controller_manager = client("system:kube-controller-manager", None)?;
        let scheduler = client("system:kube-scheduler", None)?;

        let node = node
            .map(|n| -> Result<NodeCerts, Error> {
                let mut sans = vec![SanType::IpAddress(IpAddr::V4(n.node_ip))];
                sans.extend(n.name.try_into().ok().map(SanType::DnsName));
                Ok(NodeCerts {
                    apiserver_kubelet_client: client("kube-apiserver-kubelet-client", None)?,
                    kubelet: client(&format!("system:node:{}", n.name), Some("system:nodes"))?,
                    kubelet_serving: Self::leaf(
                        &issuer,
                        n.name,
                        None,
                        ExtendedKeyUsagePurpose::ServerAuth,
                        &sans,
                    )?,
                    kube_proxy: client("system:kube-proxy", None)?,
                })
            })
            .transpose()?;
        let sa_key = KeyPair::generate().map_err(pki_err("ServiceAccount signing key"))?;
        Ok(Pki {
            ca,
            serving,
            admin,
            controller_manager,
            scheduler,
            node,
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }

    fn leaf(
        issuer: &Issuer<'_, KeyPair>,
        common_name: &str,
        organization: Option<&str>,
        usage: ExtendedKeyUsagePurpose,
        sans: &[SanType],
    ) -> Result<CertKey, Error> {
        let key = KeyPair::generate().map_err(pki_err("leaf key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, organization);
        params.subject_alt_names = sans.to_vec();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params
            .signed_by(&key, issuer)
            .map_err(pki_err("leaf certificate"))?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Names the apiserver answers to: loopback for local clients, the in-cluster names for Pods,
/// and the host's address on a real node's link.
fn serving_names(host_ip: Option<Ipv4Addr>) -> Vec<SanType> {
    let mut sans: Vec<SanType> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .filter_map(|n| (*n).try_into().ok().map(SanType::DnsName))
    .collect();
    sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.push(SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)));
    sans.extend(host_ip.map(|ip| SanType::IpAddress(IpAddr::V4(ip))));
    sans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_material() -> Result<(), Error> {
        let pki = Pki::generate()?;
        for pem in [
            &pki.ca.cert_pem,
            &pki.serving.cert_pem,
            &pki.admin.cert_pem,
            &pki.scheduler.cert_pem,
        ] {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        assert!(pki.service_account_key_pem.contains("PRIVATE KEY"));
        assert_ne!(pki.admin.cert_pem, pki.controller_manager.cert_pem);
        assert_ne!(pki.ca.key_pem, pki.serving.key_pem);
        Ok(())
    }

    #[test]
    fn serving_names_cover_loopback_and_in_cluster_names() {
        let sans = serving_names(Some(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(sans.contains(&SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(
            10, 200, 0, 1
        )))));
        assert!(sans.contains(&SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))));
        assert!(
            sans.iter().any(
                |s| matches!(s, SanType::DnsName(n) if n.as_str() == "kubernetes.default.svc")
            )
        );
    }
}

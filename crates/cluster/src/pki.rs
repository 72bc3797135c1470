//! Certificates and keys for a local control plane, generated in-process.
//!
//! One CA signs the apiserver's serving certificate and every client certificate of the API;
//! each component gets its own identity so that the built-in RBAC bindings for
//! `system:kube-controller-manager` and `system:kube-scheduler` apply exactly as in a real
//! cluster. etcd has a CA of its own (as kubeadm does): see [`EtcdCerts`].
//!
//! The admin identities follow kubeadm 1.29 and later: `admin` (the kubeconfig everything uses)
//! is in [`CLUSTER_ADMINS_GROUP`], which the control plane binds to `cluster-admin` through
//! RBAC, so it can be audited, restricted or revoked like any other subject; only `super_admin`
//! is in `system:masters`, the group no authorizer can deny, and it serves to create that
//! binding and to recover a cluster whose RBAC is broken.

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

/// The group of the `admin` identity, bound to the `cluster-admin` ClusterRole by the
/// ClusterRoleBinding of the same name (kubeadm's names, so that tools that know kubeadm's
/// clusters recognise it).
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";

/// The group whose members the API server authorizes without asking any authorizer.
pub const MASTERS_GROUP: &str = "system:masters";

/// Everything the control plane needs to run TLS, authenticate clients and sign tokens.
pub struct Pki {
    /// The CA that signs the API's certificates below; trusted by clients and by the apiserver
    /// for client certs (and used by kube-controller-manager to sign CSRs).
    pub ca: CertKey,
    /// The apiserver's serving certificate.
    pub serving: CertKey,
    /// `O=kubeadm:cluster-admins`, which RBAC binds to `cluster-admin`: used by tests, xtask
    /// and kwok.
    pub admin: CertKey,
    /// `O=system:masters`: beyond any authorizer. Only creates the binding that makes `admin`
    /// an admin, and stays in the run directory for recovery.
    pub super_admin: CertKey,
    /// etcd's own CA and certificates.
    pub etcd: EtcdCerts,
    pub controller_manager: CertKey,
    pub scheduler: CertKey,
    /// Identities of a real node, when the control plane has one.
    pub node: Option<NodeCerts>,
    /// ServiceAccount token signing key (PKCS#8 PEM, ECDSA P-256, so tokens are ES256).
    pub service_account_key_pem: String,
    /// Its public half (SPKI PEM), which the apiserver verifies tokens with.
    pub service_account_public_pem: String,
}

/// etcd's certificates, under a CA of their own.
///
/// etcd grants every client whose certificate its trusted CA signed full read and write access
/// to everything stored (Secrets included): it has no authorization of its own here. With the
/// cluster CA as etcd's trusted CA, every certificate that CA signs would be such a key — and
/// kube-controller-manager signs with it whatever CertificateSigningRequest an API user may get
/// approved, and kubelets' and users' client certificates come from it. A separate CA, whose
/// key signs these three certificates in memory and is never written anywhere, makes the
/// API server's `kube-apiserver-etcd-client` certificate the only client etcd accepts.
pub struct EtcdCerts {
    /// Trusted by etcd for clients and peers, and by the API server for etcd's serving
    /// certificate. Only the certificate is kept: nothing signs with the key after startup.
    pub ca_cert_pem: String,
    /// etcd's serving certificate for its client port (`localhost`, `127.0.0.1`). Client auth
    /// too: etcd's JSON gateway connects to etcd's own gRPC server with it.
    pub server: CertKey,
    /// etcd's certificate towards its peers, as server and as client.
    pub peer: CertKey,
    /// The API server's client certificate towards etcd.
    pub apiserver_client: CertKey,
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
        Self::generate_for(node, &[])
    }

    /// [`generate_with`](Self::generate_with), the API servers' certificate also naming
    /// `apiserver_ips` (each API server's own address in the HA mode).
    pub fn generate_for(
        node: Option<NodeAddresses<'_>>,
        apiserver_ips: &[Ipv4Addr],
    ) -> Result<Self, Error> {
        let (ca, issuer) = Self::ca("operon-envtest-ca")?;

        let mut names = serving_names(node.map(|n| n.host_ip));
        for ip in apiserver_ips {
            let san = SanType::IpAddress(IpAddr::V4(*ip));
            if !names.contains(&san) {
                names.push(san);
            }
        }
        let serving = Self::leaf(
            &issuer,
            "kube-apiserver",
            None,
            &[ExtendedKeyUsagePurpose::ServerAuth],
            &names,
        )?;
        let client = |cn: &str, org: Option<&str>| {
            Self::leaf(
                &issuer,
                cn,
                org,
                &[ExtendedKeyUsagePurpose::ClientAuth],
                &[],
            )
        };
        let admin = client("operon-admin", Some(CLUSTER_ADMINS_GROUP))?;
        let super_admin = client("operon-super-admin", Some(MASTERS_GROUP))?;
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
                        &[ExtendedKeyUsagePurpose::ServerAuth],
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
            super_admin,
            etcd: EtcdCerts::generate()?,
            controller_manager,
            scheduler,
            node,
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }

    /// A self-signed CA: its certificate and key, and the issuer that signs with it.
    fn ca(common_name: &str) -> Result<(CertKey, Issuer<'static, KeyPair>), Error> {
        let key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params
            .self_signed(&key)
            .map_err(pki_err("CA certificate"))?;
        let pems = CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((pems, Issuer::new(params, key)))
    }

    fn leaf(
        issuer: &Issuer<'_, KeyPair>,
        common_name: &str,
        organization: Option<&str>,
        usages: &[ExtendedKeyUsagePurpose],
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
        params.extended_key_usages = usages.to_vec();
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

impl EtcdCerts {
    fn generate() -> Result<Self, Error> {
        // The key is dropped with `issuer` at the end of this function.
        let (ca, issuer) = Pki::ca("operon-etcd-ca")?;
        // etcd listens on loopback only; these are the names its clients and its one peer dial.
        let sans: Vec<SanType> = ["localhost"]
            .iter()
            .filter_map(|n| (*n).try_into().ok().map(SanType::DnsName))
            .chain([SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))])
            .collect();
        let both = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        Ok(EtcdCerts {
            ca_cert_pem: ca.cert_pem,
            server: Pki::leaf(&issuer, "operon-etcd-server", None, &both, &sans)?,
            peer: Pki::leaf(&issuer, "operon-etcd-peer", None, &both, &sans)?,
            apiserver_client: Pki::leaf(
                &issuer,
                "kube-apiserver-etcd-client",
                None,
                &[ExtendedKeyUsagePurpose::ClientAuth],
                &[],
            )?,
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

    /// Whether the DER of a PEM certificate holds `text`: subject and issuer names are stored
    /// as plain strings, so this tells a certificate's group and issuer without an X.509 parser.
    fn der_contains(pem: &str, text: &str) -> bool {
        use base64::Engine;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default();
        der.windows(text.len()).any(|w| w == text.as_bytes())
    }

    #[test]
    fn the_admin_is_a_cluster_admin_and_only_the_super_admin_a_master() -> Result<(), Error> {
        let pki = Pki::generate()?;
        assert!(der_contains(&pki.admin.cert_pem, CLUSTER_ADMINS_GROUP));
        assert!(!der_contains(&pki.admin.cert_pem, MASTERS_GROUP));
        assert!(der_contains(&pki.super_admin.cert_pem, MASTERS_GROUP));
        Ok(())
    }

    #[test]
    fn etcd_has_a_ca_of_its_own() -> Result<(), Error> {
        let pki = Pki::generate()?;
        assert_ne!(pki.etcd.ca_cert_pem, pki.ca.cert_pem);
        assert!(der_contains(&pki.etcd.ca_cert_pem, "operon-etcd-ca"));
        for leaf in [&pki.etcd.server, &pki.etcd.peer, &pki.etcd.apiserver_client] {
            // Issued by etcd's CA, not the cluster's.
            assert!(der_contains(&leaf.cert_pem, "operon-etcd-ca"));
            assert!(!der_contains(&leaf.cert_pem, "operon-envtest-ca"));
        }
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

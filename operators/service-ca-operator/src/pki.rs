//! The certificate core: the service-serving signer CA, serving certificates for Services, and the
//! decision whether an existing certificate has to be re-issued.
//!
//! Certificates follow `openshift/service-ca-operator`: SANs `<svc>.<ns>.svc` and
//! `<svc>.<ns>.svc.<cluster domain>` (plus their `*.` wildcards for headless Services), CN = the
//! lexicographically first SAN, NotBefore = now − 1 s, KeyUsage DigitalSignature|KeyEncipherment,
//! EKU ServerAuth, AKI = the CA's SKI, and the non-critical extension
//! [`SERVICE_UID_EXTENSION_OID`] carrying the Service UID.
//!
//! CA rotation ([`needs_rotation`], [`rotate`]) follows OpenShift too: same Subject, new key; the
//! bundle is the new CA plus the old CA re-signed by the new key, and new leaves carry the new CA
//! signed by the old key ([`SigningCa::issue_with_chain`]: leaf, CA, intermediate).
//!
//! Keys are ECDSA P-256 by default, or RSA 2048 like OpenShift ([`KeyAlgorithm`], per serving
//! certificate and, through [`SigningCa::generate_with`], for the signer). `ring` signs with RSA
//! keys but cannot generate them, so RSA keys come from the `rsa` crate and reach `rcgen` as
//! PKCS#8; RSA signatures are PKCS#1 v1.5 with SHA-256.
//!
//! Differences from OpenShift, on purpose or for now:
//! - The default key algorithm is ECDSA P-256, not RSA 2048.
//! - Private keys are written as PKCS#8 (`PRIVATE KEY`), also for RSA; OpenShift writes PKCS#1
//!   (`RSA PRIVATE KEY`), which [`SigningCa::from_pem`] reads too.
//! - Validity is cut to whole seconds (X.509 times have no fractions).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PKCS_RSA_SHA384, PKCS_RSA_SHA512, PublicKeyData,
    SanType, SerialNumber, SignatureAlgorithm, SubjectPublicKeyInfo,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::x509::X509Name;

/// OID of the extension that carries the UID of the Service a certificate was issued for.
pub const SERVICE_UID_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 17, 100, 2, 1];

/// The signer's CN is this prefix followed by the Unix time (seconds) of its creation.
pub const SIGNER_NAME_PREFIX: &str = "openshift-service-serving-signer@";

/// Lifetime of a signing CA in OpenShift: 790 days.
pub const DEFAULT_CA_LIFETIME: Duration = Duration::from_secs(790 * 24 * 3600);

/// Lifetime of a serving certificate in OpenShift: 2 years.
pub const DEFAULT_SERVING_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// OpenShift re-issues a serving certificate when less than this remains.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(3600);

/// OpenShift rotates the signing CA when less than this remains (395 days), and keeps the
/// previous CA trusted (re-signed by the new key) for at least this long after a rotation.
pub const ROTATION_MIN_REMAINING: Duration = Duration::from_secs(395 * 24 * 3600);

/// The cluster domain unless configured otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot parse {what}: {detail}")]
    Parse { what: &'static str, detail: String },
    #[error("the CA private key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("RSA key: {0}")]
    RsaKey(String),
    #[error("validity out of range: {0}")]
    TimeOutOfRange(&'static str),
    #[error("no randomness for a serial number")]
    Random,
    #[error("the CA subject cannot be reproduced for a rotated CA: {0}")]
    UnsupportedSubject(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Rcgen { what, source }
}

fn parse_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Parse {
        what,
        detail: e.to_string(),
    }
}

/// Key type of an issued certificate or of a signing CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256, signing with SHA-256.
    #[default]
    EcdsaP256,
    /// RSA with a 2048-bit modulus, signing with PKCS#1 v1.5 and SHA-256: what OpenShift uses.
    Rsa2048,
}

/// The service-serving signer: a self-signed CA and its key.
pub struct SigningCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM: PKCS#8 for CAs made here, as given for a CA loaded with
    /// [`SigningCa::from_pem`] (which also reads PKCS#1 RSA keys).
    pub key_pem: String,
    /// The CA's CN (`openshift-service-serving-signer@<unix-seconds>` for CAs made here).
    pub common_name: String,
    /// The CA's Subject Key Identifier, which every leaf names as its AKI. `None` for a CA
    /// made elsewhere without one: its leaves then carry no AKI and are matched to it by the
    /// issuer's CN, as OpenShift does.
    pub subject_key_id: Option<Vec<u8>>,
    pub not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa")
            .field("common_name", &self.common_name)
            .field("subject_key_id", &self.subject_key_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What to issue a serving certificate for.
#[derive(Debug, Clone)]
pub struct ServingCertRequest<'a> {
    pub service_name: &'a str,
    pub namespace: &'a str,
    /// `metadata.uid` of the Service, written into [`SERVICE_UID_EXTENSION_OID`].
    pub service_uid: &'a str,
    /// `spec.clusterIP: None`: the wildcard names are added.
    pub headless: bool,
    /// Usually [`DEFAULT_CLUSTER_DOMAIN`].
    pub cluster_domain: &'a str,
    pub lifetime: Duration,
    pub key: KeyAlgorithm,
}

/// An issued serving certificate.
#[derive(Clone)]
pub struct ServingCert {
    /// The leaf followed by the signing CA, PEM (what goes into `tls.crt`).
    pub cert_pem: String,
    /// The leaf's private key, PKCS#8 PEM (`tls.key`).
    pub key_pem: String,
    /// The leaf's NotAfter (for the expiry annotations).
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why an existing serving certificate has to be re-issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No PEM certificate, or not a parseable X.509 certificate.
    Unparseable,
    /// Its Authority Key Identifier is not the current CA's Subject Key Identifier.
    WrongIssuer,
    /// Its DNS SANs are not exactly [`expected_sans`].
    SanMismatch,
    /// It expires within the refresh margin.
    Expiring,
}

/// The DNS names a serving certificate for `req` carries, sorted.
pub fn expected_sans(req: &ServingCertRequest<'_>) -> Vec<String> {
    let base = format!("{}.{}.svc", req.service_name, req.namespace);
    let full = format!("{base}.{}", req.cluster_domain);
    let mut sans = if req.headless {
        vec![format!("*.{base}"), format!("*.{full}"), base, full]
    } else {
        vec![base, full]
    };
    sans.sort();
    sans.dedup();
    sans
}

/// Truncates to whole seconds, as the certificate will.
fn whole_seconds(t: OffsetDateTime) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp())
        .map_err(|_| Error::TimeOutOfRange("now"))
}

fn add(t: OffsetDateTime, d: Duration, what: &'static str) -> Result<OffsetDateTime> {
    time::Duration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d))
        .ok_or(Error::TimeOutOfRange(what))
}

/// A fresh key of `alg`. ECDSA keys come from `ring` (through `rcgen`); RSA keys from the `rsa`
/// crate, since `ring` can sign with RSA keys but not generate them.
fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair> {
    match alg {
        KeyAlgorithm::EcdsaP256 => {
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("ECDSA P-256 key"))
        }
        KeyAlgorithm::Rsa2048 => {
            let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| Error::RsaKey(format!("cannot generate a 2048-bit key: {e}")))?;
            rsa_key_pair(&key)
        }
    }
}

/// `key` as an `rcgen` key pair (through PKCS#8) that signs with PKCS#1 v1.5 and SHA-256.
fn rsa_key_pair(key: &RsaPrivateKey) -> Result<KeyPair> {
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| Error::RsaKey(format!("cannot encode as PKCS#8: {e}")))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_bytes().into(), &PKCS_RSA_SHA256)
        .map_err(rcgen_err("RSA key"))
}

/// Parses the first PEM block of `key_pem` as a private key: PKCS#8 (`PRIVATE KEY`; `rcgen`
/// detects ECDSA P-256/P-384, Ed25519 and RSA, and signs with SHA-256 for RSA), or PKCS#1
/// (`RSA PRIVATE KEY`, how OpenShift stores its RSA signer key), which `ring` cannot read and is
/// converted to PKCS#8 first.
fn key_pair_from_pem(key_pem: &str) -> Result<KeyPair> {
    if let Ok((_, block)) = x509_parser::pem::parse_x509_pem(key_pem.as_bytes())
        && block.label == "RSA PRIVATE KEY"
    {
        let key = RsaPrivateKey::from_pkcs1_der(&block.contents)
            .map_err(parse_err("PKCS#1 RSA private key"))?;
        return rsa_key_pair(&key);
    }
    KeyPair::from_pem(key_pem).map_err(rcgen_err("CA private key"))
}

fn is_rsa(alg: &SignatureAlgorithm) -> bool {
    [&PKCS_RSA_SHA256, &PKCS_RSA_SHA384, &PKCS_RSA_SHA512].contains(&alg)
}

/// 128 random bits, positive.
fn random_serial() -> Result<SerialNumber> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    bytes[0] &= 0x7f;
    // Never zero, and never a leading zero byte that DER would have to strip.
    bytes[0] |= 0x40;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Rebuilds `name` for rcgen so that it re-encodes to the same bytes (checked by the caller).
/// Only single-attribute RDNs with PrintableString, UTF8String or IA5String values are supported,
/// which covers every CA made here and by OpenShift.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let unsupported = |what: &str| Error::UnsupportedSubject(format!("{what} in {name}"));
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("an RDN without exactly one attribute"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute OID"))?
            .collect();
        let data = attr.attr_value().data;
        let text = std::str::from_utf8(data).map_err(|_| unsupported("a non-UTF-8 value"))?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| unsupported("a bad PrintableString"))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| unsupported("a bad IA5String"))?,
            ),
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            _ => {
                return Err(unsupported(
                    "a value type other than Printable/UTF8/IA5String",
                ));
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Parameters of a signer CA certificate named `dn`, valid from `now − 1 s` until `not_after`,
/// with a fresh serial.
fn ca_params(
    dn: DistinguishedName,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    params.not_before = now - time::Duration::seconds(1);
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn push_pem(out: &mut String, pem: &str) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(pem);
}

/// The first PEM block of `pem`, parsed. The returned DER must outlive the certificate.
fn first_pem_der(pem: &str) -> Result<Vec<u8>> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(parse_err("PEM certificate"))?;
    if block.label != "CERTIFICATE" {
        return Err(Error::Parse {
            what: "PEM certificate",
            detail: format!("first block is {:?}", block.label),
        });
    }
    Ok(block.contents)
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(parse_err("X.509 certificate"))?;
    Ok(cert)
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The DNS SANs of `cert`, sorted and deduplicated; `None` if the extension is malformed.
fn dns_sans(cert: &X509Certificate<'_>) -> Option<Vec<String>> {
    let san = cert.subject_alternative_name().ok()?;
    let mut names: Vec<String> = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Some(names)
}

/// Go's `asn1.Marshal` of a string, which is how OpenShift encodes the Service UID
/// (`asn1.Marshal(svc.UID)`): a PrintableString when every character is in its alphabet (always,
/// for the UUIDs Kubernetes hands out), otherwise a UTF8String. Go excludes `*` and `&` from the
/// alphabet here.
pub fn encode_service_uid(uid: &str) -> Vec<u8> {
    let printable = uid.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b' ' | b'\'' | b'(' | b')' | b'+' | b',' | b'-' | b'.' | b'/' | b':' | b'=' | b'?'
            )
    });
    const PRINTABLE_STRING: u8 = 0x13;
    const UTF8_STRING: u8 = 0x0c;
    let tag = if printable {
        PRINTABLE_STRING
    } else {
        UTF8_STRING
    };
    let content = uid.as_bytes();
    let mut der = vec![tag];
    let len = content.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let skip = len_bytes.iter().take_while(|b| **b == 0).count();
        let significant = &len_bytes[skip..];
        der.push(0x80 | significant.len() as u8);
        der.extend_from_slice(significant);
    }
    der.extend_from_slice(content);
    der
}

impl SigningCa {
    /// A fresh self-signed ECDSA P-256 CA named `openshift-service-serving-signer@<now>`, valid
    /// from `now − 1 s` for `lifetime`.
    pub fn generate(lifetime: Duration, now: OffsetDateTime) -> Result<Self> {
        Self::generate_with(KeyAlgorithm::EcdsaP256, lifetime, now)
    }

    /// [`generate`](Self::generate) with a `key` of the given algorithm
    /// ([`KeyAlgorithm::Rsa2048`] for an OpenShift-like signer).
    pub fn generate_with(
        key: KeyAlgorithm,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let now = whole_seconds(now)?;
        let key = generate_key(key)?;
        let params = ca_params(
            common_name(&format!("{SIGNER_NAME_PREFIX}{}", now.unix_timestamp())),
            now,
            add(now, lifetime, "CA lifetime")?,
        )?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("CA certificate"))?;
        // Go through the same path as a CA loaded from its Secret.
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from PEM (the first certificate of `cert_pem` is the CA). The issuer's subject
    /// DN and SKI are taken from the certificate itself (rcgen's `x509-parser` feature), so leaves
    /// chain to it byte for byte whoever created it. `key_pem` is PKCS#8 (ECDSA or RSA) or PKCS#1
    /// (RSA); an RSA CA signs with PKCS#1 v1.5 and SHA-256.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = key_pair_from_pem(key_pem)?;
        let der = first_pem_der(cert_pem)?;
        let cert = parse_der(&der)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::KeyMismatch);
        }
        let subject_key_id = subject_key_id(&cert);
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let not_after = cert.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(rcgen_err("CA certificate"))?;
        Ok(SigningCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            common_name,
            subject_key_id,
            not_after,
            issuer,
        })
    }

    /// The algorithm of this CA's key, which a rotation keeps: RSA of any size is
    /// [`KeyAlgorithm::Rsa2048`], anything else (a CA loaded from elsewhere may have, say, a P-384
    /// key) [`KeyAlgorithm::EcdsaP256`].
    fn key_algorithm(&self) -> KeyAlgorithm {
        if is_rsa(self.issuer.key().algorithm()) {
            KeyAlgorithm::Rsa2048
        } else {
            KeyAlgorithm::EcdsaP256
        }
    }

    /// Issues a serving certificate for `req` with a fresh `req.key` key, valid from `now − 1 s`
    /// for `req.lifetime`, signed with SHA-256 by this CA's key (whatever its algorithm).
    pub fn issue(&self, req: &ServingCertRequest<'_>, now: OffsetDateTime) -> Result<ServingCert> {
        let key = generate_key(req.key)?;
        let now = whole_seconds(now)?;
        let sans = expected_sans(req);
        let mut params = CertificateParams::default();
        // `expected_sans` is sorted, so the first one is the lexicographically first.
        if let Some(first) = sans.first() {
            params.distinguished_name = common_name(first);
        }
        params.subject_alt_names = sans
            .into_iter()
            .map(|name| name.try_into().map(SanType::DnsName))
            .collect::<Result<_, _>>()
            .map_err(rcgen_err("DNS name"))?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // No SKI to name: rcgen would derive an AKI from the key that matches nothing.
        params.use_authority_key_identifier_extension = self.subject_key_id.is_some();
        params.not_before = now - time::Duration::seconds(1);
        params.not_after = add(now, req.lifetime, "serving certificate lifetime")?;
        params.serial_number = Some(random_serial()?);
        // Non-critical by default.
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            SERVICE_UID_EXTENSION_OID,
            encode_service_uid(req.service_uid),
        )];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err("serving certificate"))?;
        let mut cert_pem = cert.pem();
        if !cert_pem.ends_with('\n') {
            cert_pem.push('\n');
        }
        cert_pem.push_str(&self.cert_pem);
        Ok(ServingCert {
            cert_pem,
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        })
    }

    /// [`issue`](Self::issue), with `extra_chain_pem` appended after the leaf and this CA: the
    /// `tls.crt` order is leaf, CA, then `extra_chain_pem` (after a rotation, OpenShift's
    /// `intermediate-ca.crt`, i.e. [`Rotation::intermediate_pem`], so that clients that only
    /// trust the previous CA can still build a path). An empty `extra_chain_pem` is `issue`.
    pub fn issue_with_chain(
        &self,
        req: &ServingCertRequest<'_>,
        now: OffsetDateTime,
        extra_chain_pem: &str,
    ) -> Result<ServingCert> {
        let mut issued = self.issue(req, now)?;
        if !extra_chain_pem.trim().is_empty() {
            push_pem(&mut issued.cert_pem, extra_chain_pem);
        }
        Ok(issued)
    }
}

/// Whether `ca` has to be rotated at `now`: less than `min_remaining` (usually
/// [`ROTATION_MIN_REMAINING`]) remains before its NotAfter.
pub fn needs_rotation(ca: &SigningCa, now: OffsetDateTime, min_remaining: Duration) -> bool {
    match add(now, min_remaining, "rotation margin") {
        Ok(deadline) => ca.not_after < deadline,
        Err(_) => true,
    }
}

/// The result of [`rotate`]: what goes into the `signing-key` Secret (`tls.crt`/`tls.key` from
/// `new_ca`, `ca-bundle.crt` = `bundle_pem`, `intermediate-ca.crt` = `intermediate_pem`).
#[derive(Debug)]
pub struct Rotation {
    /// The new signer: same Subject as the old one, new key, new SKI.
    pub new_ca: SigningCa,
    /// The new CA certificate, then the old CA certificate re-signed by the new key (old public
    /// key and SKI, AKI = new SKI, NotAfter ≥ now + [`ROTATION_MIN_REMAINING`]). What gets
    /// injected as the CA bundle: leaves of either CA chain to the new CA through it.
    pub bundle_pem: String,
    /// The new CA's public key and Subject (SKI = new SKI) signed by the old key (AKI = old SKI):
    /// appended to new leaves so that clients that only trust the old CA can verify them.
    pub intermediate_pem: String,
}

/// Rotates `old` at `now` the way OpenShift does: a new key (of the old key's algorithm: RSA 2048
/// for an RSA CA, otherwise ECDSA P-256) under the same Subject, valid for `lifetime`, plus the
/// two cross-signed certificates of [`Rotation`], each with a fresh serial. The re-signed old CA
/// stays trusted for at least `min_trust` (the rotation margin, [`ROTATION_MIN_REMAINING`] by
/// default, as OpenShift's minimum trust duration): leaves of the old CA keep verifying until
/// the new CA's own rotation.
pub fn rotate(
    old: &SigningCa,
    lifetime: Duration,
    now: OffsetDateTime,
    min_trust: Duration,
) -> Result<Rotation> {
    // Rounded up to a whole second, so that the guarantee holds despite X.509's whole seconds.
    let min_not_after = {
        let t = add(now, min_trust, "rotation margin")?;
        let whole = whole_seconds(t)?;
        if whole < t {
            whole + time::Duration::seconds(1)
        } else {
            whole
        }
    };
    let now = whole_seconds(now)?;
    let old_der = first_pem_der(&old.cert_pem)?;
    let old_cert = parse_der(&old_der)?;
    let dn = distinguished_name(old_cert.subject())?;
    let new_not_after = add(now, lifetime, "CA lifetime")?;

    // The new self-signed CA.
    let new_key = generate_key(old.key_algorithm())?;
    let new_cert = ca_params(dn.clone(), now, new_not_after)?
        .self_signed(&new_key)
        .map_err(rcgen_err("rotated CA certificate"))?;
    if parse_der(new_cert.der())?.subject().as_raw() != old_cert.subject().as_raw() {
        return Err(Error::UnsupportedSubject(format!(
            "{} does not re-encode byte for byte",
            old_cert.subject()
        )));
    }
    let new_ca = SigningCa::from_pem(&new_cert.pem(), &new_key.serialize_pem())?;

    // The old CA re-signed by the new key: old public key and SKI, trusted for long enough.
    let old_public_key = SubjectPublicKeyInfo::from_der(old_cert.public_key().raw)
        .map_err(rcgen_err("old CA public key"))?;
    let mut params = ca_params(dn.clone(), now, old.not_after.max(min_not_after))?;
    params.not_before = old_cert.validity().not_before.to_datetime();
    params.key_identifier_method = match &old.subject_key_id {
        Some(id) => KeyIdMethod::PreSpecified(id.clone()),
        // The old CA had none; the re-signed copy gets one derived from its key.
        None => KeyIdMethod::Sha256,
    };
    params.use_authority_key_identifier_extension = true;
    let old_resigned = params
        .signed_by(&old_public_key, &new_ca.issuer)
        .map_err(rcgen_err("re-signed old CA certificate"))?;

    // The new CA signed by the old key.
    let mut params = ca_params(dn, now, new_not_after)?;
    if let Some(id) = &new_ca.subject_key_id {
        params.key_identifier_method = KeyIdMethod::PreSpecified(id.clone());
    }
    params.use_authority_key_identifier_extension = old.subject_key_id.is_some();
    let intermediate = params
        .signed_by(&new_key, &old.issuer)
        .map_err(rcgen_err("intermediate CA certificate"))?;

    let mut bundle_pem = String::new();
    push_pem(&mut bundle_pem, &new_ca.cert_pem);
    push_pem(&mut bundle_pem, &old_resigned.pem());
    Ok(Rotation {
        new_ca,
        bundle_pem,
        intermediate_pem: intermediate.pem(),
    })
}

/// Whether the serving certificate `cert_pem` (leaf first) must be re-issued for `req` under `ca`
/// at `now`, and why. Checks, in this order: parseable, AKI = CA SKI, SANs = [`expected_sans`],
/// and `now + refresh_margin` before NotAfter.
pub fn needs_regeneration(
    cert_pem: &str,
    ca: &SigningCa,
    req: &ServingCertRequest<'_>,
    now: OffsetDateTime,
    refresh_margin: Duration,
) -> Option<Reason> {
    let Ok(der) = first_pem_der(cert_pem) else {
        return Some(Reason::Unparseable);
    };
    let Ok(cert) = parse_der(&der) else {
        return Some(Reason::Unparseable);
    };
    let issued_by_ca = match &ca.subject_key_id {
        Some(ski) => authority_key_id(&cert).as_deref() == Some(ski.as_slice()),
        // OpenShift's fallback for a CA without SKI: the issuer's CN.
        None => {
            cert.issuer()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                == Some(ca.common_name.as_str())
        }
    };
    if !issued_by_ca {
        return Some(Reason::WrongIssuer);
    }
    let Some(sans) = dns_sans(&cert) else {
        return Some(Reason::Unparseable);
    };
    if sans != expected_sans(req) {
        return Some(Reason::SanMismatch);
    }
    match add(now, refresh_margin, "refresh margin") {
        Ok(deadline) if deadline <= cert.validity().not_after.to_datetime() => None,
        _ => Some(Reason::Expiring),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::oid_registry::Oid;
    use x509_parser::pem::Pem;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const UID: &str = "5d2c1f0e-8a4b-4c3d-9e2f-1a2b3c4d5e6f";
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> OffsetDateTime {
        // 2026-01-02T03:04:05.678Z: fractional on purpose.
        OffsetDateTime::from_unix_timestamp(1_767_323_045)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .replace_millisecond(678)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn request(headless: bool) -> ServingCertRequest<'static> {
        ServingCertRequest {
            service_name: "api",
            namespace: "shop",
            service_uid: UID,
            headless,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN,
            lifetime: DEFAULT_SERVING_CERT_LIFETIME,
            key: KeyAlgorithm::EcdsaP256,
        }
    }

    fn new_ca() -> Result<SigningCa> {
        SigningCa::generate(DEFAULT_CA_LIFETIME, now())
    }

    fn pem_blocks(pem: &str) -> std::result::Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
        Ok(Pem::iter_from_buffer(pem.as_bytes())
            .map(|block| block.map(|b| b.contents))
            .collect::<std::result::Result<_, _>>()?)
    }

    fn uid_oid() -> std::result::Result<Oid<'static>, Box<dyn std::error::Error>> {
        Ok(Oid::from(SERVICE_UID_EXTENSION_OID).map_err(|e| format!("{e:?}"))?)
    }

    fn secs(t: OffsetDateTime) -> i64 {
        t.unix_timestamp()
    }

    #[test]
    fn expected_sans_cluster_ip_and_headless() {
        assert_eq!(
            expected_sans(&request(false)),
            ["api.shop.svc", "api.shop.svc.cluster.local"]
        );
        assert_eq!(
            expected_sans(&request(true)),
            [
                "*.api.shop.svc",
                "*.api.shop.svc.cluster.local",
                "api.shop.svc",
                "api.shop.svc.cluster.local"
            ]
        );
        let custom = ServingCertRequest {
            cluster_domain: "example.internal",
            ..request(false)
        };
        assert_eq!(
            expected_sans(&custom),
            ["api.shop.svc", "api.shop.svc.example.internal"]
        );
    }

    #[test]
    fn ca_is_self_signed_signer() -> TestResult {
        let ca = new_ca()?;
        let der = first_pem_der(&ca.cert_pem)?;
        let cert = parse_der(&der)?;
        let expected_cn = format!("openshift-service-serving-signer@{}", secs(now()));
        assert_eq!(ca.common_name, expected_cn);
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .map(|cn| cn.as_str()),
            Some(Ok(expected_cn.as_str()))
        );
        assert_eq!(cert.subject(), cert.issuer());
        assert!(cert.is_ca());
        let ku = cert.key_usage()?.ok_or("no key usage")?.value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(subject_key_id(&cert), ca.subject_key_id.clone());
        assert!(ca.subject_key_id.as_ref().is_some_and(|id| !id.is_empty()));
        assert_eq!(
            secs(cert.validity().not_before.to_datetime()),
            secs(now()) - 1
        );
        assert_eq!(
            secs(cert.validity().not_after.to_datetime()),
            secs(now()) + DEFAULT_CA_LIFETIME.as_secs() as i64
        );
        assert_eq!(ca.not_after, cert.validity().not_after.to_datetime());
        cert.verify_signature(None)?;
        Ok(())
    }

    #[test]
    fn cluster_ip_serving_cert() -> TestResult {
        let ca = new_ca()?;
        check_cluster_ip_serving_cert(&ca, &ca.issue(&request(false), now())?)
    }

    /// The properties of a serving certificate issued by `ca` for `request(false)`, with a key of
    /// any algorithm.
    fn check_cluster_ip_serving_cert(ca: &SigningCa, issued: &ServingCert) -> TestResult {
        let blocks = pem_blocks(&issued.cert_pem)?;
        assert_eq!(blocks.len(), 2, "leaf then CA");
        assert_eq!(blocks[1], first_pem_der(&ca.cert_pem)?);
        let leaf = parse_der(&blocks[0])?;
        let ca_der = first_pem_der(&ca.cert_pem)?;
        let ca_cert = parse_der(&ca_der)?;

        assert_eq!(
            dns_sans(&leaf),
            Some(vec![
                "api.shop.svc".to_owned(),
                "api.shop.svc.cluster.local".to_owned()
            ])
        );
        assert_eq!(
            leaf.subject()
                .iter_common_name()
                .next()
                .map(|cn| cn.as_str()),
            Some(Ok("api.shop.svc"))
        );
        assert_eq!(leaf.issuer(), ca_cert.subject());
        assert!(!leaf.is_ca());

        let eku = leaf.extended_key_usage()?.ok_or("no EKU")?.value;
        assert!(eku.server_auth);
        assert!(!eku.client_auth && !eku.any);
        let ku = leaf.key_usage()?.ok_or("no key usage")?.value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(!ku.key_cert_sign());

        assert_eq!(authority_key_id(&leaf), ca.subject_key_id.clone());

        let uid_oid = uid_oid()?;
        let uid_ext = leaf
            .extensions()
            .iter()
            .find(|ext| ext.oid == uid_oid)
            .ok_or("no service UID extension")?;
        assert!(!uid_ext.critical);
        assert_eq!(uid_ext.value, encode_service_uid(UID).as_slice());
        // PrintableString (Go's encoding of a UUID string).
        assert_eq!(uid_ext.value[0], 0x13);
        assert_eq!(&uid_ext.value[2..], UID.as_bytes());

        assert_eq!(
            secs(leaf.validity().not_before.to_datetime()),
            secs(now()) - 1
        );
        let not_after = leaf.validity().not_after.to_datetime();
        assert_eq!(
            secs(not_after),
            secs(now()) + DEFAULT_SERVING_CERT_LIFETIME.as_secs() as i64
        );
        assert_eq!(issued.not_after, not_after);

        // The chain: signed by the CA's key, and not self-signed.
        leaf.verify_signature(Some(ca_cert.public_key()))?;
        assert!(leaf.verify_signature(None).is_err());

        // The key is the leaf's.
        let key = KeyPair::from_pem(&issued.key_pem)?;
        assert_eq!(
            leaf.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        Ok(())
    }

    #[test]
    fn headless_serving_cert() -> TestResult {
        let ca = new_ca()?;
        let issued = ca.issue(&request(true), now())?;
        let der = first_pem_der(&issued.cert_pem)?;
        let leaf = parse_der(&der)?;
        assert_eq!(dns_sans(&leaf), Some(expected_sans(&request(true))));
        assert_eq!(dns_sans(&leaf).map(|s| s.len()), Some(4));
        assert_eq!(
            leaf.subject()
                .iter_common_name()
                .next()
                .map(|cn| cn.as_str()),
            Some(Ok("*.api.shop.svc"))
        );
        Ok(())
    }

    #[test]
    fn serials_are_random() -> TestResult {
        let ca = new_ca()?;
        let a_der = first_pem_der(&ca.issue(&request(false), now())?.cert_pem)?;
        let b_der = first_pem_der(&ca.issue(&request(false), now())?.cert_pem)?;
        let (a, b) = (parse_der(&a_der)?, parse_der(&b_der)?);
        assert_ne!(a.raw_serial(), b.raw_serial());
        assert_eq!(a.raw_serial().len(), 16);
        Ok(())
    }

    #[test]
    fn ca_round_trips_through_pem() -> TestResult {
        let original = new_ca()?;
        let loaded = SigningCa::from_pem(&original.cert_pem, &original.key_pem)?;
        assert_eq!(loaded.subject_key_id, original.subject_key_id);
        assert_eq!(loaded.common_name, original.common_name);
        assert_eq!(loaded.not_after, original.not_after);

        let issued = loaded.issue(&request(false), now())?;
        let der = first_pem_der(&issued.cert_pem)?;
        let leaf = parse_der(&der)?;
        let ca_der = first_pem_der(&original.cert_pem)?;
        let ca_cert = parse_der(&ca_der)?;
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());
        leaf.verify_signature(Some(ca_cert.public_key()))?;
        assert_eq!(
            needs_regeneration(
                &issued.cert_pem,
                &original,
                &request(false),
                now(),
                DEFAULT_REFRESH_MARGIN
            ),
            None
        );
        Ok(())
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_garbage() -> TestResult {
        let a = new_ca()?;
        let b = new_ca()?;
        assert!(matches!(
            SigningCa::from_pem(&a.cert_pem, &b.key_pem),
            Err(Error::KeyMismatch)
        ));
        assert!(matches!(
            SigningCa::from_pem("not a certificate", &a.key_pem),
            Err(Error::Parse { .. })
        ));
        assert!(matches!(
            SigningCa::from_pem(&a.cert_pem, "not a key"),
            Err(Error::Rcgen { .. })
        ));
        Ok(())
    }

    fn rsa_request(headless: bool) -> ServingCertRequest<'static> {
        ServingCertRequest {
            key: KeyAlgorithm::Rsa2048,
            ..request(headless)
        }
    }

    fn new_rsa_ca() -> Result<SigningCa> {
        SigningCa::generate_with(KeyAlgorithm::Rsa2048, DEFAULT_CA_LIFETIME, now())
    }

    /// `cert`'s public key is of `alg`: an EC P-256 key, or a 2048-bit RSA key with e = 65537.
    fn assert_public_key(cert: &X509Certificate<'_>, alg: KeyAlgorithm) -> TestResult {
        use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
        use x509_parser::public_key::PublicKey;
        let spki = cert.public_key();
        match (alg, spki.parsed()?) {
            (KeyAlgorithm::Rsa2048, PublicKey::RSA(rsa)) => {
                assert_eq!(spki.algorithm.algorithm, OID_PKCS1_RSAENCRYPTION);
                assert_eq!(rsa.key_size(), 2048);
                assert_eq!(rsa.try_exponent()?, 65537);
            }
            (KeyAlgorithm::EcdsaP256, PublicKey::EC(ec)) => {
                assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
                assert_eq!(ec.key_size(), 256);
            }
            (alg, key) => return Err(format!("expected a {alg:?} key, got {key:?}").into()),
        }
        Ok(())
    }

    /// `cert` is signed with SHA-256 by a key of `alg`.
    fn assert_signed_by(cert: &X509Certificate<'_>, alg: KeyAlgorithm) {
        use x509_parser::oid_registry::{OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256};
        let expected = match alg {
            KeyAlgorithm::Rsa2048 => OID_PKCS1_SHA256WITHRSA,
            KeyAlgorithm::EcdsaP256 => OID_SIG_ECDSA_WITH_SHA256,
        };
        assert_eq!(cert.signature_algorithm.algorithm, expected);
    }

    /// The RSA key `pkcs8_pem` re-encoded as PKCS#1 PEM (`RSA PRIVATE KEY`), as OpenShift
    /// stores it.
    fn pkcs1_pem(pkcs8_pem: &str) -> BoxResult<String> {
        use base64::Engine;
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pkcs8_pem.as_bytes()).map_err(|e| e.to_string())?;
        assert_eq!(block.label, "PRIVATE KEY");
        let der = RsaPrivateKey::from_pkcs8_der(&block.contents)
            .map_err(|e| e.to_string())?
            .to_pkcs1_der()
            .map_err(|e| e.to_string())?;
        let base64 = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        let mut pem = "-----BEGIN RSA PRIVATE KEY-----\n".to_owned();
        for line in base64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line)?);
            pem.push('\n');
        }
        pem.push_str("-----END RSA PRIVATE KEY-----\n");
        Ok(pem)
    }

    #[test]
    fn rsa_serving_cert_from_ecdsa_ca() -> TestResult {
        let ca = new_ca()?;
        let ca_der = first_pem_der(&ca.cert_pem)?;
        let started = std::time::Instant::now();
        let issued = ca.issue(&rsa_request(false), now())?;
        eprintln!(
            "RSA 2048 serving certificate issued in {:?}",
            started.elapsed()
        );
        check_cluster_ip_serving_cert(&ca, &issued)?;
        let der = first_pem_der(&issued.cert_pem)?;
        let leaf = parse_der(&der)?;
        assert_public_key(&leaf, KeyAlgorithm::Rsa2048)?;
        assert_signed_by(&leaf, KeyAlgorithm::EcdsaP256);
        verifies(&der, &ca_der)?;
        // PKCS#8, which rcgen (ring) reads back as an RSA key.
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(is_rsa(KeyPair::from_pem(&issued.key_pem)?.algorithm()));
        assert_eq!(
            needs_regeneration(
                &issued.cert_pem,
                &ca,
                &rsa_request(false),
                now(),
                DEFAULT_REFRESH_MARGIN
            ),
            None
        );

        let headless = ca.issue(&rsa_request(true), now())?;
        let der = first_pem_der(&headless.cert_pem)?;
        let leaf = parse_der(&der)?;
        assert_eq!(dns_sans(&leaf), Some(expected_sans(&rsa_request(true))));
        assert_public_key(&leaf, KeyAlgorithm::Rsa2048)?;
        verifies(&der, &ca_der)?;
        Ok(())
    }

    #[test]
    fn rsa_ca_issues_ecdsa_and_rsa_leaves() -> TestResult {
        let started = std::time::Instant::now();
        let ca = new_rsa_ca()?;
        eprintln!("RSA 2048 CA generated in {:?}", started.elapsed());
        assert_eq!(ca.key_algorithm(), KeyAlgorithm::Rsa2048);
        assert_eq!(new_ca()?.key_algorithm(), KeyAlgorithm::EcdsaP256);
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let ca_der = first_pem_der(&ca.cert_pem)?;
        let ca_cert = parse_der(&ca_der)?;
        assert_public_key(&ca_cert, KeyAlgorithm::Rsa2048)?;
        assert_signed_by(&ca_cert, KeyAlgorithm::Rsa2048);
        ca_cert.verify_signature(None)?;
        assert!(ca_cert.is_ca());
        assert_eq!(
            ca.common_name,
            format!("{SIGNER_NAME_PREFIX}{}", secs(now()))
        );
        assert_eq!(subject_key_id(&ca_cert), ca.subject_key_id.clone());
        assert_eq!(
            secs(ca.not_after),
            secs(now()) + DEFAULT_CA_LIFETIME.as_secs() as i64
        );

        for key in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let issued = ca.issue(
                &ServingCertRequest {
                    key,
                    ..request(false)
                },
                now(),
            )?;
            check_cluster_ip_serving_cert(&ca, &issued)?;
            let der = first_pem_der(&issued.cert_pem)?;
            let leaf = parse_der(&der)?;
            assert_public_key(&leaf, key)?;
            assert_signed_by(&leaf, KeyAlgorithm::Rsa2048);
            verifies(&der, &ca_der)?;
        }
        Ok(())
    }

    #[test]
    fn rsa_ca_round_trips_through_pem() -> TestResult {
        let original = new_rsa_ca()?;
        let ca_der = first_pem_der(&original.cert_pem)?;
        let pkcs1 = pkcs1_pem(&original.key_pem)?;
        // PKCS#8 as written here, and PKCS#1 as OpenShift writes it.
        for key_pem in [&original.key_pem, &pkcs1] {
            let loaded = SigningCa::from_pem(&original.cert_pem, key_pem)?;
            assert_eq!(loaded.key_algorithm(), KeyAlgorithm::Rsa2048);
            assert_eq!(&loaded.key_pem, key_pem);
            assert_eq!(loaded.subject_key_id, original.subject_key_id);
            assert_eq!(loaded.common_name, original.common_name);
            assert_eq!(loaded.not_after, original.not_after);
            let issued = loaded.issue(&request(false), now())?;
            let der = first_pem_der(&issued.cert_pem)?;
            assert_signed_by(&parse_der(&der)?, KeyAlgorithm::Rsa2048);
            verifies(&der, &ca_der)?;
            assert_eq!(
                needs_regeneration(
                    &issued.cert_pem,
                    &original,
                    &request(false),
                    now(),
                    DEFAULT_REFRESH_MARGIN
                ),
                None
            );
        }

        let ecdsa = new_ca()?;
        for (cert_pem, key_pem) in [
            (&original.cert_pem, &ecdsa.key_pem),
            (&ecdsa.cert_pem, &original.key_pem),
            (&ecdsa.cert_pem, &pkcs1),
        ] {
            assert!(matches!(
                SigningCa::from_pem(cert_pem, key_pem),
                Err(Error::KeyMismatch)
            ));
        }
        assert!(matches!(
            SigningCa::from_pem(
                &original.cert_pem,
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
            ),
            Err(Error::Parse { .. })
        ));
        Ok(())
    }

    #[test]
    fn rsa_ca_rotation_keeps_rsa() -> TestResult {
        let r = rotated_with(KeyAlgorithm::Rsa2048)?;
        check_rotation_certificates(&r)?;
        let Rotated {
            old,
            old_leaf,
            rotation,
            at,
        } = r;
        let new = &rotation.new_ca;
        assert_eq!(new.key_algorithm(), KeyAlgorithm::Rsa2048);
        assert!(new.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let new_der = first_pem_der(&new.cert_pem)?;
        let new_cert = parse_der(&new_der)?;
        assert_public_key(&new_cert, KeyAlgorithm::Rsa2048)?;
        assert_signed_by(&new_cert, KeyAlgorithm::Rsa2048);
        let bundle = pem_blocks(&rotation.bundle_pem)?;
        let resigned = parse_der(&bundle[1])?;
        assert_public_key(&resigned, KeyAlgorithm::Rsa2048)?;
        assert_signed_by(&resigned, KeyAlgorithm::Rsa2048);
        let intermediate = pem_blocks(&rotation.intermediate_pem)?;
        assert_signed_by(&parse_der(&intermediate[0])?, KeyAlgorithm::Rsa2048);

        // New leaf (ECDSA, the default) → new CA, or → intermediate → old CA.
        let new_leaf = new.issue_with_chain(&request(false), at, &rotation.intermediate_pem)?;
        let new_chain = pem_blocks(&new_leaf.cert_pem)?;
        let (anchors, bundle_rest) = bundle.split_at(1);
        let old_anchor = [first_pem_der(&old.cert_pem)?];
        assert!(chain_verifies(&new_chain, bundle_rest, anchors));
        assert!(chain_verifies(&new_chain, &[], &old_anchor));
        // Old (RSA) leaf → old CA re-signed by the new key → new CA.
        let old_chain = pem_blocks(&old_leaf.cert_pem)?;
        assert_public_key(&parse_der(&old_chain[0])?, KeyAlgorithm::Rsa2048)?;
        assert!(chain_verifies(&old_chain, bundle_rest, anchors));
        assert!(!chain_verifies(&old_chain, &[], anchors));
        assert!(chain_verifies(&old_chain, &[], &old_anchor));

        // The new CA, loaded back from its Secret, is RSA too.
        let loaded = SigningCa::from_pem(&new.cert_pem, &new.key_pem)?;
        assert_eq!(loaded.key_algorithm(), KeyAlgorithm::Rsa2048);
        Ok(())
    }

    #[test]
    fn service_uid_encoding_matches_go() {
        assert_eq!(encode_service_uid("ab-1"), b"\x13\x04ab-1");
        // `&` and `*` and non-ASCII are outside Go's PrintableString: UTF8String.
        assert_eq!(encode_service_uid("a&b"), b"\x0c\x03a&b");
        assert_eq!(encode_service_uid("ü"), b"\x0c\x02\xc3\xbc");
        let long = "x".repeat(300);
        let der = encode_service_uid(&long);
        assert_eq!(&der[..4], &[0x13, 0x82, 0x01, 0x2c]);
        assert_eq!(der.len(), 4 + 300);
    }

    #[test]
    fn fresh_cert_needs_nothing() -> TestResult {
        let ca = new_ca()?;
        for headless in [false, true] {
            let issued = ca.issue(&request(headless), now())?;
            assert_eq!(
                needs_regeneration(
                    &issued.cert_pem,
                    &ca,
                    &request(headless),
                    now(),
                    DEFAULT_REFRESH_MARGIN
                ),
                None
            );
        }
        Ok(())
    }

    #[test]
    fn regeneration_reasons() -> TestResult {
        let ca = new_ca()?;
        let req = request(false);
        let issued = ca.issue(&req, now())?;
        let check = |pem: &str, req: &ServingCertRequest<'_>, at: OffsetDateTime| {
            needs_regeneration(pem, &ca, req, at, DEFAULT_REFRESH_MARGIN)
        };

        assert_eq!(check("", &req, now()), Some(Reason::Unparseable));
        assert_eq!(check("garbage", &req, now()), Some(Reason::Unparseable));
        assert_eq!(
            check(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &req,
                now()
            ),
            Some(Reason::Unparseable)
        );
        assert_eq!(
            check(&issued.key_pem, &req, now()),
            Some(Reason::Unparseable)
        );

        let other = new_ca()?.issue(&req, now())?;
        assert_eq!(
            check(&other.cert_pem, &req, now()),
            Some(Reason::WrongIssuer)
        );

        assert_eq!(
            check(&issued.cert_pem, &request(true), now()),
            Some(Reason::SanMismatch)
        );
        let headless = ca.issue(&request(true), now())?;
        assert_eq!(
            check(&headless.cert_pem, &req, now()),
            Some(Reason::SanMismatch)
        );
        let renamed = ServingCertRequest {
            service_name: "web",
            ..request(false)
        };
        assert_eq!(
            check(&issued.cert_pem, &renamed, now()),
            Some(Reason::SanMismatch)
        );

        let later = |d: Duration| now() + d;
        let lifetime = DEFAULT_SERVING_CERT_LIFETIME;
        assert_eq!(
            check(
                &issued.cert_pem,
                &req,
                later(lifetime - Duration::from_secs(7200))
            ),
            None
        );
        assert_eq!(
            check(
                &issued.cert_pem,
                &req,
                later(lifetime - Duration::from_secs(1800))
            ),
            Some(Reason::Expiring)
        );
        assert_eq!(
            check(&issued.cert_pem, &req, later(lifetime + DAY)),
            Some(Reason::Expiring)
        );
        Ok(())
    }

    type BoxResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// Whether `issuer_der` issued `cert_der`: the signature verifies with the issuer's public
    /// key, the issuer name is the issuer's subject, and the AKI is the issuer's SKI.
    fn verifies(cert_der: &[u8], issuer_der: &[u8]) -> BoxResult<()> {
        let cert = parse_der(cert_der)?;
        let issuer = parse_der(issuer_der)?;
        cert.verify_signature(Some(issuer.public_key()))?;
        if cert.issuer().as_raw() != issuer.subject().as_raw() {
            return Err("issuer name is not the issuer's subject".into());
        }
        match (authority_key_id(&cert), subject_key_id(&issuer)) {
            // No AKI (a CA without SKI issued it): name and signature, as verifiers do.
            (None, _) => Ok(()),
            (Some(aki), Some(ski)) if aki == ski => Ok(()),
            _ => Err("AKI is not the issuer's SKI".into()),
        }
    }

    /// Depth-first path building from `cert` to one of `anchors` through certificates of `pool`
    /// (each used at most once), as a verifier does with the presented chain and its trust store.
    fn chains_to(
        cert: &[u8],
        pool: &[Vec<u8>],
        anchors: &[Vec<u8>],
        used: &mut Vec<usize>,
    ) -> bool {
        if anchors.iter().any(|anchor| verifies(cert, anchor).is_ok()) {
            return true;
        }
        for (i, candidate) in pool.iter().enumerate() {
            if used.contains(&i)
                || candidate.as_slice() == cert
                || verifies(cert, candidate).is_err()
            {
                continue;
            }
            used.push(i);
            if chains_to(candidate, pool, anchors, used) {
                return true;
            }
            used.pop();
        }
        false
    }

    /// Whether the presented `chain` (leaf first) verifies against `anchors`, with `extra`
    /// (e.g. the rest of a CA bundle) available as intermediates.
    fn chain_verifies(chain: &[Vec<u8>], extra: &[Vec<u8>], anchors: &[Vec<u8>]) -> bool {
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        let pool: Vec<Vec<u8>> = rest.iter().chain(extra).cloned().collect();
        chains_to(leaf, &pool, anchors, &mut Vec::new())
    }

    /// An old CA made at `now()`, rotated 400 days later (390 days left), and a leaf of the old CA.
    struct Rotated {
        old: SigningCa,
        old_leaf: ServingCert,
        rotation: Rotation,
        at: OffsetDateTime,
    }

    fn rotated() -> BoxResult<Rotated> {
        rotated_with(KeyAlgorithm::EcdsaP256)
    }

    /// [`rotated`] with the old CA's key and the old leaf's key of `key`.
    fn rotated_with(key: KeyAlgorithm) -> BoxResult<Rotated> {
        let old = SigningCa::generate_with(key, DEFAULT_CA_LIFETIME, now())?;
        let old_leaf = old.issue(
            &ServingCertRequest {
                key,
                ..request(false)
            },
            now(),
        )?;
        let at = now() + 400 * DAY;
        assert!(needs_rotation(&old, at, ROTATION_MIN_REMAINING));
        let rotation = rotate(&old, DEFAULT_CA_LIFETIME, at, ROTATION_MIN_REMAINING)?;
        Ok(Rotated {
            old,
            old_leaf,
            rotation,
            at,
        })
    }

    #[test]
    fn rotation_certificates() -> TestResult {
        check_rotation_certificates(&rotated()?)
    }

    /// The certificates of a rotation made by [`rotated_with`], with keys of any algorithm.
    fn check_rotation_certificates(r: &Rotated) -> TestResult {
        let (old, rotation, at) = (&r.old, &r.rotation, r.at);
        let new = &rotation.new_ca;
        let old_der = first_pem_der(&old.cert_pem)?;
        let old_cert = parse_der(&old_der)?;
        let new_der = first_pem_der(&new.cert_pem)?;
        let new_cert = parse_der(&new_der)?;

        // Same Subject (so names chain), new key, new SKI, new lifetime.
        assert_eq!(new_cert.subject().as_raw(), old_cert.subject().as_raw());
        assert_eq!(new.common_name, old.common_name);
        assert_ne!(new_cert.public_key().raw, old_cert.public_key().raw);
        assert_ne!(new.subject_key_id, old.subject_key_id);
        assert_eq!(
            secs(new.not_after),
            secs(at) + DEFAULT_CA_LIFETIME.as_secs() as i64
        );
        new_cert.verify_signature(None)?;
        assert!(new_cert.is_ca());

        // Bundle: new CA, then the old CA re-signed by the new key.
        let bundle = pem_blocks(&rotation.bundle_pem)?;
        assert_eq!(bundle.len(), 2);
        assert_eq!(bundle[0], new_der);
        let resigned = parse_der(&bundle[1])?;
        assert_eq!(resigned.public_key().raw, old_cert.public_key().raw);
        assert_eq!(subject_key_id(&resigned), old.subject_key_id.clone());
        assert_eq!(authority_key_id(&resigned), new.subject_key_id.clone());
        assert_eq!(resigned.subject().as_raw(), old_cert.subject().as_raw());
        assert!(resigned.is_ca());
        let trusted_until = resigned.validity().not_after.to_datetime();
        assert!(trusted_until >= at + ROTATION_MIN_REMAINING);
        // The old CA had only 390 days left: extended to now + 395 days, rounded up to the
        // next whole second (`at` is fractional).
        assert_eq!(
            secs(trusted_until),
            secs(at) + ROTATION_MIN_REMAINING.as_secs() as i64 + 1
        );
        verifies(&bundle[1], &new_der)?;
        assert!(resigned.verify_signature(None).is_err());

        // Intermediate: the new CA's key and subject, signed by the old key.
        let intermediate_blocks = pem_blocks(&rotation.intermediate_pem)?;
        assert_eq!(intermediate_blocks.len(), 1);
        let intermediate = parse_der(&intermediate_blocks[0])?;
        assert_eq!(intermediate.public_key().raw, new_cert.public_key().raw);
        assert_eq!(intermediate.subject().as_raw(), new_cert.subject().as_raw());
        assert_eq!(subject_key_id(&intermediate), new.subject_key_id.clone());
        assert_eq!(authority_key_id(&intermediate), old.subject_key_id.clone());
        assert!(intermediate.is_ca());
        verifies(&intermediate_blocks[0], &old_der)?;
        assert!(verifies(&intermediate_blocks[0], &new_der).is_err());

        // Fresh serials everywhere.
        let serials = [
            old_cert.raw_serial(),
            new_cert.raw_serial(),
            resigned.raw_serial(),
            intermediate.raw_serial(),
        ];
        for (i, a) in serials.iter().enumerate() {
            for b in &serials[i + 1..] {
                assert_ne!(a, b);
            }
        }
        Ok(())
    }

    /// A CA made elsewhere without a Subject Key Identifier (`openssl req -x509 -addext
    /// subjectKeyIdentifier=none`, see tests/fixtures/README.md).
    fn ca_without_ski() -> Result<SigningCa> {
        SigningCa::from_pem(
            include_str!("../tests/fixtures/ca-without-ski.crt"),
            include_str!("../tests/fixtures/ca-without-ski.key"),
        )
    }

    #[test]
    fn a_ca_without_ski_stays_usable() -> TestResult {
        let ca = ca_without_ski()?;
        assert_eq!(ca.subject_key_id, None);
        let leaf = ca.issue(&request(false), now())?;
        let chain = pem_blocks(&leaf.cert_pem)?;
        let cert = parse_der(&chain[0])?;
        // No AKI naming a key identifier nobody has; issuer matched by CN instead.
        assert_eq!(authority_key_id(&cert), None);
        verifies(&chain[0], &first_pem_der(&ca.cert_pem)?)?;
        let margin = DEFAULT_REFRESH_MARGIN;
        assert_eq!(
            needs_regeneration(&leaf.cert_pem, &ca, &request(false), now(), margin),
            None
        );
        // A leaf of another CA is still told apart (by the issuer's CN).
        let other = new_ca()?.issue(&request(false), now())?;
        assert_eq!(
            needs_regeneration(&other.cert_pem, &ca, &request(false), now(), margin),
            Some(Reason::WrongIssuer)
        );
        // And it rotates with the usual overlap: its old leaves verify against the new bundle.
        let at = now() + DAY;
        let rotation = rotate(&ca, DEFAULT_CA_LIFETIME, at, ROTATION_MIN_REMAINING)?;
        let bundle = pem_blocks(&rotation.bundle_pem)?;
        let (anchors, rest) = bundle.split_at(1);
        assert!(chain_verifies(&chain, rest, anchors));
        let new_leaf =
            rotation
                .new_ca
                .issue_with_chain(&request(false), at, &rotation.intermediate_pem)?;
        let old_anchor = [first_pem_der(&ca.cert_pem)?];
        assert!(chain_verifies(
            &pem_blocks(&new_leaf.cert_pem)?,
            &[],
            &old_anchor
        ));
        Ok(())
    }

    #[test]
    fn the_rotation_margin_is_the_old_cas_trust_floor() -> TestResult {
        let old = SigningCa::generate(DEFAULT_CA_LIFETIME, now())?;
        let at = now() + 400 * DAY;
        for margin in [30 * DAY, 500 * DAY] {
            let rotation = rotate(&old, DEFAULT_CA_LIFETIME, at, margin)?;
            let bundle = pem_blocks(&rotation.bundle_pem)?;
            let trusted_until = parse_der(&bundle[1])?.validity().not_after.to_datetime();
            // Never shorter than the old CA itself, and at least `margin` from the rotation.
            assert!(trusted_until >= old.not_after, "{margin:?}");
            assert!(trusted_until >= at + margin, "{margin:?}");
            if at + margin > old.not_after {
                assert!(
                    trusted_until <= at + margin + Duration::from_secs(1),
                    "{margin:?}"
                );
            } else {
                assert_eq!(secs(trusted_until), secs(old.not_after), "{margin:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn old_ca_only_client_verifies_new_leaf_via_intermediate() -> TestResult {
        let Rotated {
            old, rotation, at, ..
        } = rotated()?;
        let leaf =
            rotation
                .new_ca
                .issue_with_chain(&request(false), at, &rotation.intermediate_pem)?;
        let chain = pem_blocks(&leaf.cert_pem)?;
        assert_eq!(chain.len(), 3, "leaf, new CA, intermediate");
        assert_eq!(chain[1], first_pem_der(&rotation.new_ca.cert_pem)?);
        assert_eq!(chain[2], pem_blocks(&rotation.intermediate_pem)?[0]);

        let old_anchor = [first_pem_der(&old.cert_pem)?];
        // leaf → intermediate (new key, signed by the old key) → old CA.
        verifies(&chain[0], &chain[2])?;
        verifies(&chain[2], &old_anchor[0])?;
        assert!(chain_verifies(&chain, &[], &old_anchor));
        // Without the intermediate there is no path.
        assert!(verifies(&chain[0], &old_anchor[0]).is_err());
        assert!(!chain_verifies(&chain[..2], &[], &old_anchor));
        // `issue` without a chain is leaf + CA; an empty chain changes nothing.
        let plain = rotation.new_ca.issue_with_chain(&request(false), at, "")?;
        assert_eq!(pem_blocks(&plain.cert_pem)?.len(), 2);
        Ok(())
    }

    #[test]
    fn new_bundle_client_verifies_new_and_old_leaves() -> TestResult {
        let Rotated {
            old,
            old_leaf,
            rotation,
            at,
        } = rotated()?;
        let bundle = pem_blocks(&rotation.bundle_pem)?;
        let (anchors, bundle_rest) = bundle.split_at(1);

        // New leaf → new CA directly (the intermediate does not get in the way).
        let new_leaf =
            rotation
                .new_ca
                .issue_with_chain(&request(false), at, &rotation.intermediate_pem)?;
        let new_chain = pem_blocks(&new_leaf.cert_pem)?;
        verifies(&new_chain[0], &anchors[0])?;
        assert!(chain_verifies(&new_chain, bundle_rest, anchors));

        // Old leaf (leaf + old CA) → old CA re-signed by the new key → new CA.
        let old_chain = pem_blocks(&old_leaf.cert_pem)?;
        verifies(&old_chain[0], &bundle[1])?;
        verifies(&bundle[1], &anchors[0])?;
        assert!(verifies(&old_chain[0], &anchors[0]).is_err());
        assert!(chain_verifies(&old_chain, bundle_rest, anchors));
        // The old self-signed CA alone is not enough for a client that trusts only the new CA.
        assert!(!chain_verifies(&old_chain, &[], anchors));

        // Both leaves also verify for a client that still trusts the old CA.
        let old_anchor = [first_pem_der(&old.cert_pem)?];
        assert!(chain_verifies(&old_chain, &[], &old_anchor));
        assert!(chain_verifies(&new_chain, &[], &old_anchor));

        // Leaves of the old CA are re-issued under the new one.
        assert_eq!(
            needs_regeneration(
                &old_leaf.cert_pem,
                &rotation.new_ca,
                &request(false),
                at,
                DEFAULT_REFRESH_MARGIN
            ),
            Some(Reason::WrongIssuer)
        );
        assert_eq!(
            needs_regeneration(
                &new_leaf.cert_pem,
                &rotation.new_ca,
                &request(false),
                at,
                DEFAULT_REFRESH_MARGIN
            ),
            None
        );
        Ok(())
    }

    #[test]
    fn rotated_ca_keeps_a_long_old_ca_lifetime_and_round_trips() -> TestResult {
        // Forced early rotation: the old CA still has 790 days, which the re-signed copy keeps.
        let old = new_ca()?;
        let rotation = rotate(&old, DEFAULT_CA_LIFETIME, now(), ROTATION_MIN_REMAINING)?;
        let bundle = pem_blocks(&rotation.bundle_pem)?;
        let resigned = parse_der(&bundle[1])?;
        assert_eq!(resigned.validity().not_after.to_datetime(), old.not_after);
        let loaded = SigningCa::from_pem(&rotation.new_ca.cert_pem, &rotation.new_ca.key_pem)?;
        assert_eq!(loaded.subject_key_id, rotation.new_ca.subject_key_id);
        // A rotated CA rotates again.
        let again = rotate(&loaded, DEFAULT_CA_LIFETIME, now(), ROTATION_MIN_REMAINING)?;
        let intermediate = pem_blocks(&again.intermediate_pem)?;
        verifies(&intermediate[0], &first_pem_der(&loaded.cert_pem)?)?;
        Ok(())
    }

    #[test]
    fn rotation_threshold() -> TestResult {
        let ca = new_ca()?;
        let min = ROTATION_MIN_REMAINING;
        assert!(!needs_rotation(&ca, now(), min));
        assert!(!needs_rotation(&ca, now() + 394 * DAY, min));
        assert!(needs_rotation(&ca, now() + 396 * DAY, min));
        // Exactly 395 days left: not yet; one second less: rotate.
        let boundary = ca.not_after - min;
        assert!(!needs_rotation(&ca, boundary, min));
        assert!(needs_rotation(&ca, boundary + Duration::from_secs(1), min));
        assert!(needs_rotation(&ca, ca.not_after + DAY, min));
        let short = SigningCa::generate(394 * DAY, now())?;
        assert!(needs_rotation(&short, now(), min));
        Ok(())
    }
}

//! Certificates as tests see them (feature `tls`): the facts of a PEM certificate, and a real
//! TLS handshake over loopback that says whether a client trusting a bundle accepts a server.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::*;

use crate::Error;

/// How long the loopback server of [`handshake`] may take to finish after the client's echo.
const SERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::Certificate(what.to_string())
}

/// The DER certificates (or keys) of a PEM text, in order.
pub fn pem_ders(pem: &str) -> Result<Vec<Vec<u8>>, Error> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|item| item.map(|p| p.contents).map_err(invalid))
        .collect()
}

/// Facts of the first certificate of a PEM text (a serving certificate's leaf).
#[derive(Debug)]
pub struct Leaf {
    /// DNS subject alternative names, sorted.
    pub sans: Vec<String>,
    pub common_name: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    pub server_auth: bool,
    pub client_auth: bool,
    pub authority_key_id: Vec<u8>,
    pub subject_key_id: Vec<u8>,
    /// Every extension: `(OID as dotted text, critical, value)`.
    pub extensions: Vec<(String, bool, Vec<u8>)>,
    /// Seconds since the epoch.
    pub not_after: i64,
    pub key_bits: usize,
    /// `RSA`, `EC` or `other`.
    pub key_algorithm: String,
    /// How many certificates the PEM text holds.
    pub chain_len: usize,
}

impl Leaf {
    /// `(critical, value)` of the extension `oid` (as arcs, e.g. `&[2, 5, 29, 17]`).
    pub fn extension(&self, oid: &[u64]) -> Option<(bool, &[u8])> {
        let dotted = oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        self.extensions
            .iter()
            .find(|(o, _, _)| *o == dotted)
            .map(|(_, critical, value)| (*critical, value.as_slice()))
    }
}

pub fn parse_leaf(pem: &str) -> Result<Leaf, Error> {
    let ders = pem_ders(pem)?;
    let first = ders.first().ok_or_else(|| invalid("no certificate"))?;
    let (_, cert) = X509Certificate::from_der(first).map_err(invalid)?;
    let mut sans: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    sans.sort();
    let eku = cert.extended_key_usage().ok().flatten();
    let (mut authority_key_id, mut subject_key_id) = (Vec::new(), Vec::new());
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                if let Some(id) = &aki.key_identifier {
                    authority_key_id = id.0.to_vec();
                }
            }
            ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = id.0.to_vec(),
            _ => {}
        }
    }
    let (key_algorithm, key_bits) = match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => ("RSA", rsa.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => ("EC", ec.key_size()),
        Ok(_) => ("other", 0),
        Err(e) => return Err(invalid(format!("public key: {e}"))),
    };
    Ok(Leaf {
        sans,
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
        client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
        authority_key_id,
        subject_key_id,
        extensions: cert
            .extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect(),
        not_after: cert.validity().not_after.timestamp(),
        key_bits,
        key_algorithm: key_algorithm.to_string(),
        chain_len: ders.len(),
    })
}

/// A real TLS handshake over loopback: a server presenting `tls_crt`/`tls_key` (PKCS#8), a
/// client that trusts only `bundle_pem` and verifies `server_name`. Ok when the client accepted
/// the server and both sides exchanged a byte; Err with the client's verdict otherwise.
pub async fn handshake(
    tls_crt: &str,
    tls_key: &str,
    bundle_pem: &str,
    server_name: &str,
) -> Result<(), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = pem_ders(tls_crt)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key_der = pem_ders(tls_key)?
        .into_iter()
        .next()
        .ok_or_else(|| invalid("no key"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(invalid)?;
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_ders(bundle_pem)? {
        roots.add(CertificateDer::from(der)).map_err(invalid)?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let io = |context: &str| {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding a loopback port"))?;
    let addr = listener.local_addr().map_err(io("the loopback port"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_string()).map_err(invalid)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(io("connecting over loopback"))?;
    let result = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(byte)
    }
    .await;
    match result {
        Ok(byte) if &byte == b"x" => {
            match tokio::time::timeout(SERVER_TIMEOUT, server_task).await {
                Ok(Ok(Ok(()))) => Ok(()),
                other => Err(invalid(format!("the server side failed: {other:?}"))),
            }
        }
        Ok(_) => Err(invalid("echo mismatch")),
        Err(e) => {
            server_task.abort();
            Err(Error::Handshake(e.to_string()))
        }
    }
}

/// The Subject Key Identifier of the first certificate of `pem`.
pub fn subject_key_id(pem: &str) -> Result<Vec<u8>, Error> {
    Ok(parse_leaf(pem)?.subject_key_id)
}

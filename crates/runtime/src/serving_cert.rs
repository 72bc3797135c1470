//! The metrics server's TLS certificate: files from a directory (a mounted Secret, e.g. the one
//! service-ca-operator writes for the metrics Service), reloaded when they change; a self-signed
//! certificate until they exist or when no directory is given (controller-runtime's default).
//!
//! The files are looked at again at most every [`RELOAD_INTERVAL`] on a handshake, so a Secret the
//! kubelet updates in place (rotation, or an optional Secret that appears after the Pod started)
//! is served without a restart. A pair that fails to load keeps the last good one and is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are checked for a change, at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the certificate and key are: `dir/cert_name` and `dir/key_name` (PEM).
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub dir: PathBuf,
    pub cert_name: String,
    pub key_name: String,
}

impl CertFiles {
    fn cert(&self) -> PathBuf {
        self.dir.join(&self.cert_name)
    }

    fn key(&self) -> PathBuf {
        self.dir.join(&self.key_name)
    }

    /// Modification times of both files, `None` while either is missing.
    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((modified(self.cert())?, modified(self.key())?))
    }
}

/// The certificate a TLS server presents; see the module docs.
#[derive(Debug)]
pub struct ServingCert {
    provider: Arc<CryptoProvider>,
    files: Option<CertFiles>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The files' modification times when `current` was loaded from them.
    loaded: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl ServingCert {
    /// Self-signed for `names` (DNS names, e.g. the Service's), then the files in `files` once
    /// they exist.
    pub fn new(files: Option<CertFiles>, names: &[String]) -> Result<Arc<Self>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut state = State {
            current: self_signed(&provider, names)?,
            loaded: None,
            checked: Instant::now(),
        };
        if let Some(files) = &files
            && let Some(stamp) = files.stamp()
        {
            match load(&provider, files) {
                Ok(key) => {
                    state.current = key;
                    state.loaded = Some(stamp);
                }
                // Served self-signed until a good pair appears; a later change is retried.
                Err(e) => tracing::warn!(error = %e, "metrics certificate: not loaded"),
            }
        }
        if files.is_some() && state.loaded.is_none() {
            tracing::info!("metrics certificate: self-signed until the certificate files exist");
        }
        Ok(Arc::new(ServingCert {
            provider,
            files,
            state: Mutex::new(state),
        }))
    }

    /// A rustls server configuration presenting this certificate (HTTP/1.1, no client auth).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Whether the certificate served comes from the files (else it is self-signed).
    pub fn from_files(&self) -> bool {
        self.state.lock().loaded.is_some()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock();
        if let Some(files) = &self.files
            && state.checked.elapsed() >= RELOAD_INTERVAL
        {
            state.checked = Instant::now();
            let stamp = files.stamp();
            if stamp.is_some() && stamp != state.loaded {
                match load(&self.provider, files) {
                    Ok(key) => {
                        tracing::info!(dir = %files.dir.display(), "metrics certificate: loaded");
                        state.current = key;
                        state.loaded = stamp;
                    }
                    Err(e) => {
                        // Not retried until the files change again: no error on every handshake.
                        tracing::warn!(error = %e, "metrics certificate: keeping the previous one");
                        state.loaded = stamp;
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn self_signed(provider: &CryptoProvider, names: &[String]) -> Result<Arc<CertifiedKey>, Error> {
    let mut names = names.to_vec();
    if names.is_empty() {
        names.push("localhost".to_string());
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names)?.self_signed(&key)?;
    certified(
        provider,
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        Path::new("self-signed"),
    )
}

fn load(provider: &CryptoProvider, files: &CertFiles) -> Result<Arc<CertifiedKey>, Error> {
    let read = |path: PathBuf| std::fs::read(&path).map_err(|source| Error::Read { path, source });
    certified(
        provider,
        &read(files.cert())?,
        &read(files.key())?,
        &files.dir,
    )
}

fn certified(
    provider: &CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
    origin: &Path,
) -> Result<Arc<CertifiedKey>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |message: String| Error::Invalid {
        path: origin.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("no certificate in the PEM file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid(format!("key: {e}")))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(format!("key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| invalid(format!("the key does not belong to the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn self_signed_until_the_files_exist_then_theirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = CertFiles {
            dir: dir.path().to_path_buf(),
            cert_name: "tls.crt".into(),
            key_name: "tls.key".into(),
        };
        let cert = ServingCert::new(Some(files), &["svc.ns.svc".into()]).expect("cert");
        assert!(!cert.from_files());
        let first = cert.current();
        let (crt, key) = pair("svc.ns.svc");
        std::fs::write(dir.path().join("tls.crt"), &crt).expect("write");
        std::fs::write(dir.path().join("tls.key"), &key).expect("write");
        // Not looked at again before the interval.
        assert!(Arc::ptr_eq(&first, &cert.current()));
        cert.state.lock().checked = Instant::now() - RELOAD_INTERVAL;
        let loaded = cert.current();
        assert!(cert.from_files());
        assert!(!Arc::ptr_eq(&first, &loaded));
        assert_eq!(loaded.cert[0].as_ref(), {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(crt.as_bytes())
                .expect("der")
                .as_ref()
                .to_vec()
        });
    }

    #[test]
    fn a_broken_pair_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (crt, key) = pair("a");
        std::fs::write(dir.path().join("tls.crt"), &crt).expect("write");
        std::fs::write(dir.path().join("tls.key"), &key).expect("write");
        let files = CertFiles {
            dir: dir.path().to_path_buf(),
            cert_name: "tls.crt".into(),
            key_name: "tls.key".into(),
        };
        let cert = ServingCert::new(Some(files), &[]).expect("cert");
        assert!(cert.from_files());
        let good = cert.current();
        // Another pair's key: rejected.
        let (_, other_key) = pair("b");
        std::fs::write(dir.path().join("tls.key"), other_key).expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("tls.key"))
            .expect("open");
        file.set_modified(SystemTime::now() + Duration::from_secs(60))
            .expect("mtime");
        cert.state.lock().checked = Instant::now() - RELOAD_INTERVAL;
        assert!(Arc::ptr_eq(&good, &cert.current()));
    }
}

//! The doors to the cluster's storage and its admin identity, each tried from the side of
//! someone who must not get through and, so that a test can fail, from the side of someone who
//! must:
//! - etcd's client and peer ports speak TLS only and let in only clients with a certificate of
//!   etcd's own CA: not a client without one, not the API server's most powerful identity;
//! - a local user other than the cluster's owner can read no Secret through etcd, nor the keys
//!   and files that would let them;
//! - the admin kubeconfig is a cluster-admin through RBAC, not a member of `system:masters`.

use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use operon_cluster::{CLUSTER_ADMINS_GROUP, ControlPlane, MASTERS_GROUP, wait};
use rustls::AlertDescription;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The value of etcd's flag `name` (`--name=value`), as the running process was given it.
fn etcd_flag(cp: &ControlPlane, name: &str) -> Result<String> {
    let (_, pid) = cp
        .pids()
        .into_iter()
        .find(|(n, _)| n == "etcd")
        .context("no etcd process")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let prefix = format!("{name}=");
    cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_string))
        .with_context(|| format!("etcd was started without {name}"))
}

/// The port of a URL such as `https://127.0.0.1:2379`.
fn port(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {url}"))
}

/// A client certificate and key, PEM.
struct Identity {
    cert_pem: String,
    key_pem: String,
}

impl Identity {
    fn from_files(cert: &Path, key: &Path) -> Result<Identity> {
        Ok(Identity {
            cert_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
        })
    }

    /// The client certificate of a kubeconfig written by the control plane.
    fn from_kubeconfig(path: &Path) -> Result<Identity> {
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let user = &config["users"][0]["user"];
        let field = |name: &str| -> Result<String> {
            let b64 = user[name].as_str().with_context(|| format!("no {name}"))?;
            Ok(String::from_utf8(B64.decode(b64)?)?)
        };
        Ok(Identity {
            cert_pem: field("client-certificate-data")?,
            key_pem: field("client-key-data")?,
        })
    }
}

/// What became of an HTTP request sent to a TLS port.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// An HTTP answer (everything the server sent).
    Answered(String),
    /// The server ended the TLS session with this alert.
    Alert(AlertDescription),
    /// No answer for another reason.
    Failed(String),
}

/// Sends `request` over TLS to `127.0.0.1:port`, trusting `ca_pem` and presenting `identity`.
async fn over_tls(
    port: u16,
    ca_pem: &str,
    identity: Option<&Identity>,
    request: &str,
) -> Result<Outcome> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    let exchange = async {
        let server = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let mut tls = connector.connect(server, tcp).await?;
        // In TLS 1.3 the server judges the client's certificate after the client's handshake
        // is done: its alert may come before the request is out (and the write then fails on
        // the closed connection), so the answer is read even when the write failed.
        let written = tls.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => {
                    return match written {
                        Err(write) if answer.is_empty() => Err(write),
                        _ => Ok(answer),
                    };
                }
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A server that closes without close_notify after its answer.
                Err(e) if !answer.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(answer);
                }
                Err(e) => {
                    let refused = e.get_ref().is_some_and(|e| e.is::<rustls::Error>());
                    return Err(match written {
                        Err(write) if !refused => write,
                        _ => e,
                    });
                }
            }
        }
    };
    Ok(match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(answer)) => Outcome::Answered(String::from_utf8_lossy(&answer).into_owned()),
        Ok(Err(e)) => match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(alert)) => Outcome::Alert(*alert),
            _ => Outcome::Failed(e.to_string()),
        },
        Err(_) => Outcome::Failed(format!("no answer within {TIMEOUT:?}")),
    })
}

/// Sends `request` in plain text to `127.0.0.1:port`; everything the server sent back before
/// it closed the connection (a reset, when the server left some of the request unread, ends it
/// the same way).
async fn plain(port: u16, request: &str) -> Result<String> {
    let mut tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, tcp.read(&mut buf))
            .await
            .context("the server neither answered nor closed")?
        {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn post(path: &str, body: &serde_json::Value) -> String {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// The v3 JSON gateway's range request for `key`.
fn range(key: &str) -> serde_json::Value {
    json!({ "key": B64.encode(key) })
}

/// What a plain-text HTTP request to etcd's TLS ports gets: nothing. etcd's TLS listener reads
/// it as a malformed TLS record and closes the connection before any HTTP handler sees it.
const PLAIN_HTTP_REFUSAL: &str = "";

#[tokio::test]
async fn etcd_ports_let_in_only_certificates_of_etcds_own_ca() -> Result<()> {
    let cp = ControlPlane::builder().minimal().start().await?;
    let etcd = cp.etcd_client().clone();
    let client_port = port(&etcd.endpoint)?;
    let etcd_ca = std::fs::read_to_string(&etcd.ca_file)?;
    let apiserver = Identity::from_files(&etcd.cert_file, &etcd.key_file)?;
    // The super-admin's certificate, of the cluster CA: the most powerful identity the API
    // server knows.
    let super_admin = Identity::from_kubeconfig(cp.super_admin_kubeconfig_path())?;
    let read = post("/v3/kv/range", &range("/registry/namespaces/default"));

    // The client port. With the API server's etcd client certificate the data is there …
    let stored = cp
        .etcd_request("/v3/kv/range", &range("/registry/namespaces/default"))
        .await?;
    ensure!(stored["count"] == "1", "{stored}");
    match over_tls(client_port, &etcd_ca, Some(&apiserver), &read).await? {
        Outcome::Answered(a) if a.starts_with("HTTP/1.1 200") && a.contains("\"kvs\"") => {}
        other => bail!("the API server's certificate read nothing: {other:?}"),
    }
    // … without a certificate the handshake ends with `certificate_required` …
    assert_eq!(
        over_tls(client_port, &etcd_ca, None, &read).await?,
        Outcome::Alert(AlertDescription::CertificateRequired),
        "etcd's client port let a client without a certificate in"
    );
    // … a certificate of the cluster's CA (system:masters!) is no certificate of etcd's CA …
    assert_eq!(
        over_tls(client_port, &etcd_ca, Some(&super_admin), &read).await?,
        Outcome::Alert(AlertDescription::UnknownCA),
        "etcd's client port let a certificate of the cluster CA in"
    );
    // … and plain HTTP is no way around TLS.
    assert_eq!(
        plain(client_port, &read).await?,
        PLAIN_HTTP_REFUSAL,
        "etcd's client port answered plain HTTP"
    );
    ensure!(
        etcd_flag(&cp, "--listen-client-urls")?.starts_with("https://"),
        "etcd listens for clients without TLS"
    );

    // The peer port: the same, with etcd's peer certificate as the one that gets in.
    let peer_url = etcd_flag(&cp, "--listen-peer-urls")?;
    ensure!(peer_url.starts_with("https://"), "{peer_url}");
    let peer_port = port(&peer_url)?;
    let peer = Identity::from_files(
        Path::new(&etcd_flag(&cp, "--peer-cert-file")?),
        Path::new(&etcd_flag(&cp, "--peer-key-file")?),
    )?;
    match over_tls(peer_port, &etcd_ca, Some(&peer), &get("/members")).await? {
        Outcome::Answered(a) if a.starts_with("HTTP/1.1 200") && a.contains("envtest") => {}
        other => bail!("etcd's peer certificate is refused by its peer port: {other:?}"),
    }
    assert_eq!(
        over_tls(peer_port, &etcd_ca, None, &get("/members")).await?,
        Outcome::Alert(AlertDescription::CertificateRequired),
        "etcd's peer port let a client without a certificate in"
    );
    assert_eq!(
        over_tls(peer_port, &etcd_ca, Some(&super_admin), &get("/members")).await?,
        Outcome::Alert(AlertDescription::UnknownCA),
        "etcd's peer port let a certificate of the cluster CA in"
    );
    assert_eq!(
        plain(peer_port, &get("/members")).await?,
        PLAIN_HTTP_REFUSAL,
        "etcd's peer port answered plain HTTP"
    );

    // The metrics port answers health in plain HTTP, and nothing else of the data API.
    let metrics_port = port(&etcd_flag(&cp, "--listen-metrics-urls")?)?;
    let health = plain(metrics_port, &get("/health")).await?;
    ensure!(
        health.starts_with("HTTP/1.1 200") && health.contains("\"health\":\"true\""),
        "{health}"
    );
    let refused = plain(metrics_port, &read).await?;
    ensure!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    Ok(())
}

/// A system user made for one test and removed when it ends, however it ends.
struct LocalUser {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl LocalUser {
    fn create() -> Result<LocalUser> {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let name = format!("operon-etcd-probe-{:08x}", random as u32);
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .output()
            .context("running useradd")?;
        ensure!(out.status.success(), "useradd {name}: {}", text(&out));
        // From here on the user exists: a failure below must remove it.
        let mut user = LocalUser {
            name,
            uid: nix::unistd::Uid::from_raw(u32::MAX),
            gid: nix::unistd::Gid::from_raw(u32::MAX),
        };
        let found = nix::unistd::User::from_name(&user.name)?
            .with_context(|| format!("{} was not created", user.name))?;
        (user.uid, user.gid) = (found.uid, found.gid);
        Ok(user)
    }

    /// Runs `program args…` as this user.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = Command::new("runuser")
            .args(["-u", &self.name, "--", program])
            .args(args)
            .output()
            .context("running runuser")?;
        Ok(out)
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        // Only if userdel left the group behind (USERGROUPS_ENAB off).
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value stored under the key a gateway range answer `answer` (JSON text) holds, if any.
fn stored_value(answer: &[u8]) -> Result<Option<Vec<u8>>> {
    let answer: serde_json::Value = serde_json::from_slice(answer)?;
    answer["kvs"][0]["value"]
        .as_str()
        .map(|v| B64.decode(v))
        .transpose()
        .map_err(Into::into)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_local_user_cannot_read_a_secret_through_etcd() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this test creates a local user: run it as root (as CI does)"
    );
    let cp = ControlPlane::builder().minimal().start().await?;
    let etcd = cp.etcd_client().clone();
    let client_port = port(&etcd.endpoint)?;
    let metrics_port = port(&etcd_flag(&cp, "--listen-metrics-urls")?)?;

    // A Secret, through the API.
    let marker = format!(
        "operon-secret-{:016x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    );
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "etcd-probe" },
        "stringData": { "token": marker },
    }))?;
    Api::<Secret>::namespaced(cp.client().await?, "default")
        .create(&PostParams::default(), &secret)
        .await?;
    let key = "/registry/secrets/default/etcd-probe";
    let body = range(key).to_string();

    // With the API server's etcd client certificate it is there, in the clear.
    let stored = cp.etcd_request("/v3/kv/range", &range(key)).await?;
    let value = stored_value(stored.to_string().as_bytes())?.context("no Secret in etcd")?;
    ensure!(contains(&value, &marker), "the Secret's value isn't stored");

    let user = LocalUser::create()?;
    let curl = |args: &[&str]| -> Result<Output> {
        let mut all = vec!["--silent", "--show-error", "--max-time", "10"];
        all.extend_from_slice(args);
        user.run("curl", &all)
    };
    let https = format!("https://127.0.0.1:{client_port}/v3/kv/range");

    // The same request as this user, with copies of the certificate and key the user may read,
    // gets the Secret: what follows fails for want of them, not for being this user or curl.
    {
        let copies = tempfile::Builder::new()
            .prefix("operon-etcd-probe-")
            .tempdir()?;
        let copy = |from: &Path, name: &str| -> Result<PathBuf> {
            let to = copies.path().join(name);
            std::fs::copy(from, &to)?;
            nix::unistd::chown(&to, Some(user.uid), Some(user.gid))?;
            Ok(to)
        };
        let (ca, cert, key) = (
            copy(&etcd.ca_file, "ca.crt")?,
            copy(&etcd.cert_file, "client.crt")?,
            copy(&etcd.key_file, "client.key")?,
        );
        nix::unistd::chown(copies.path(), Some(user.uid), Some(user.gid))?;
        let path = |p: &Path| p.display().to_string();
        let out = curl(&[
            "--cacert",
            &path(&ca),
            "--cert",
            &path(&cert),
            "--key",
            &path(&key),
            "--data",
            &body,
            &https,
        ])?;
        ensure!(out.status.success(), "{}", text(&out));
        let value = stored_value(&out.stdout)?.with_context(|| text(&out))?;
        ensure!(contains(&value, &marker), "{}", text(&out));
    }

    // Without them: TLS, as anyone may try it (no server verification either). TLS 1.2 ends in
    // the handshake, with etcd's handshake_failure alert …
    let out = curl(&["--insecure", "--tls-max", "1.2", "--data", &body, &https])?;
    ensure!(
        out.status.code() == Some(35)
            && String::from_utf8_lossy(&out.stderr).contains("alert handshake failure")
            && out.stdout.is_empty(),
        "a local user without a client certificate got past etcd's TLS 1.2: {}",
        text(&out)
    );
    // … TLS 1.3 right after it, when the client sends its request: curl reports etcd's
    // certificate_required alert (56) or, when etcd has already ended the connection, a failed
    // send (55); the Rust test above sees the alert itself …
    let out = curl(&["--insecure", "--data", &body, &https])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.stdout.is_empty()
            && match out.status.code() {
                Some(56) => stderr.contains("alert certificate required"),
                Some(55) => true,
                _ => false,
            },
        "a local user without a client certificate got past etcd's TLS 1.3: {}",
        text(&out)
    );
    // … plain HTTP on the client port (closed without a byte: curl's "empty reply", or a
    // reset when etcd left some of the request unread) …
    let out = curl(&[
        "--data",
        &body,
        &format!("http://127.0.0.1:{client_port}/v3/kv/range"),
    ])?;
    ensure!(
        out.stdout.is_empty()
            && match out.status.code() {
                Some(52) => true,
                Some(56) => String::from_utf8_lossy(&out.stderr).contains("reset by peer"),
                _ => false,
            },
        "plain HTTP to etcd's client port: {}",
        text(&out)
    );
    // … and the metrics port, which answers health but has no data API.
    let out = curl(&[
        "--write-out",
        "%{http_code}",
        "--data",
        &body,
        &format!("http://127.0.0.1:{metrics_port}/v3/kv/range"),
    ])?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).ends_with("404") && !contains(&out.stdout, "kvs"),
        "etcd's metrics port: {}",
        text(&out)
    );

    // Nor can the user read the keys, the kubeconfigs or etcd's data files.
    let data_dir = PathBuf::from(etcd_flag(&cp, "--data-dir")?);
    for file in [
        etcd.key_file.clone(),
        PathBuf::from(etcd_flag(&cp, "--key-file")?),
        PathBuf::from(etcd_flag(&cp, "--peer-key-file")?),
        cp.kubeconfig_path().to_path_buf(),
        cp.super_admin_kubeconfig_path().to_path_buf(),
        data_dir.join("member/snap/db"),
    ] {
        ensure!(file.is_file(), "{} is not there", file.display());
        let out = user.run("cat", &[&file.display().to_string()])?;
        ensure!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("Permission denied")
                && out.stdout.is_empty(),
            "{} read {}: {}",
            user.name,
            file.display(),
            text(&out)
        );
    }
    Ok(())
}

async fn client_of(kubeconfig: &Path) -> Result<Client> {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn groups_of(client: &Client) -> Result<(String, Vec<String>)> {
    let review: SelfSubjectReview = serde_json::from_value(json!({}))?;
    let user = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status
        .and_then(|s| s.user_info)
        .context("no user info")?;
    Ok((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    ))
}

async fn may_do_anything(client: &Client) -> Result<bool> {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": { "resourceAttributes": { "verb": "*", "group": "*", "resource": "*" } }
    }))?;
    Ok(Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?
        .status
        .is_some_and(|s| s.allowed))
}

#[tokio::test]
async fn the_admin_kubeconfig_is_a_cluster_admin_through_rbac_not_system_masters() -> Result<()> {
    let cp = ControlPlane::builder().minimal().start().await?;
    let admin = cp.client().await?;

    let (name, groups) = groups_of(&admin).await?;
    ensure!(
        groups.iter().any(|g| g == CLUSTER_ADMINS_GROUP)
            && !groups.iter().any(|g| g == MASTERS_GROUP),
        "the admin kubeconfig is {name} in {groups:?}"
    );
    // Still a cluster-admin: it may do anything, e.g. create a ClusterRole.
    ensure!(
        may_do_anything(&admin).await?,
        "the admin may not do everything"
    );
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": "operon-doors-test" },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }],
    }))?;
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    roles.create(&PostParams::default(), &role).await?;
    roles
        .delete("operon-doors-test", &DeleteParams::default())
        .await?;

    // The super-admin, for recovery, is in system:masters and readable by the owner alone.
    let super_admin_path = cp.super_admin_kubeconfig_path();
    ensure!(
        super_admin_path.file_name() == Some(operon_cluster::SUPER_ADMIN_KUBECONFIG.as_ref())
            && super_admin_path.parent() == Some(cp.dir()),
        "{}",
        super_admin_path.display()
    );
    let mode = std::fs::metadata(super_admin_path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "super-admin.conf has mode {mode:o}");
    let super_admin = client_of(super_admin_path).await?;
    let (_, groups) = groups_of(&super_admin).await?;
    ensure!(groups.iter().any(|g| g == MASTERS_GROUP), "{groups:?}");

    // The admin's rights are the binding's: deleted, they are gone (system:masters would keep
    // them), which is what lets a cluster's owner restrict or revoke them.
    let bindings: Api<ClusterRoleBinding> = Api::all(super_admin.clone());
    let binding = bindings.get(CLUSTER_ADMINS_GROUP).await?;
    ensure!(binding.role_ref.name == "cluster-admin", "{binding:?}");
    bindings
        .delete(CLUSTER_ADMINS_GROUP, &DeleteParams::default())
        .await?;
    wait::until(
        "the admin's rights gone with the binding",
        TIMEOUT * 3,
        || {
            let admin = admin.clone();
            async move {
                match may_do_anything(&admin).await {
                    Ok(false) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await?;
    match roles.create(&PostParams::default(), &role).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("without the binding the admin got {other:?}"),
    }
    Ok(())
}

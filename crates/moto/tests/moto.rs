//! moto's server as the AWS IAM emulator: real IAM query-API calls, an outage (pause/resume on
//! the same endpoint), and no process outliving its owner. Needs `cargo xtask moto install`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::wait;
use operon_moto::Moto;

/// SigV4 shape without a valid signature: moto reads the region and access key from it and does
/// not verify signatures.
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0";

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
        // A zombie still answers kill(0); it no longer runs.
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true)
}

/// `host:port` of an `http://host:port` endpoint.
fn authority(endpoint: &str) -> Result<&str> {
    endpoint
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .with_context(|| format!("endpoint {endpoint:?} is not http://host:port"))
}

/// An IAM query-API call (`POST /`, form-encoded): `(status, body)`.
async fn iam(endpoint: &str, params: &str) -> std::io::Result<(u16, String)> {
    let authority = authority(endpoint).map_err(std::io::Error::other)?;
    let body = format!("{params}&Version=2010-05-08");
    let response = operon_cluster::plain_http::request(
        authority,
        "POST",
        "/",
        &[
            ("Authorization", AUTHORIZATION),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &body,
        Duration::from_secs(10),
    )
    .await?;
    Ok((response.status, response.text()))
}

/// Every `<UserName>` in an IAM XML response.
fn user_names(xml: &str) -> Vec<String> {
    xml.split("<UserName>")
        .skip(1)
        .filter_map(|s| {
            s.split_once("</UserName>")
                .map(|(name, _)| name.to_string())
        })
        .collect()
}

async fn list_users(endpoint: &str) -> Result<Vec<String>> {
    let (status, body) = iam(endpoint, "Action=ListUsers").await?;
    ensure!(status == 200, "ListUsers answered {status}: {body}");
    ensure!(
        body.contains("<ListUsersResponse") && body.contains("<IsTruncated>false</IsTruncated>"),
        "not a ListUsers response: {body}"
    );
    Ok(user_names(&body))
}

async fn create_user(endpoint: &str, name: &str) -> Result<()> {
    let (status, body) = iam(endpoint, &format!("Action=CreateUser&UserName={name}")).await?;
    ensure!(status == 200, "CreateUser {name} answered {status}: {body}");
    ensure!(
        body.contains("<CreateUserResult>")
            && body.contains(&format!("<Arn>arn:aws:iam::123456789012:user/{name}</Arn>")),
        "not a CreateUser response for {name}: {body}"
    );
    Ok(())
}

#[tokio::test]
async fn iam_calls_outage_on_the_same_endpoint_and_no_leftovers() -> Result<()> {
    let t0 = Instant::now();
    let moto = Moto::start().await?;
    eprintln!(
        "moto {} answered HTTP {:.2}s after spawning ({:.2}s in Moto::start) at {}",
        moto.server().display(),
        moto.startup_time().as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        moto.endpoint()
    );
    let endpoint = moto.endpoint();
    ensure!(
        endpoint == format!("http://127.0.0.1:{}", moto.port()),
        "{endpoint}"
    );

    // Real IAM semantics: state, and a conflict on a duplicate name.
    ensure!(list_users(&endpoint).await?.is_empty());
    create_user(&endpoint, "u1").await?;
    assert_eq!(list_users(&endpoint).await?, ["u1"]);
    let (status, body) = iam(&endpoint, "Action=CreateUser&UserName=u1").await?;
    ensure!(
        status == 409 && body.contains("EntityAlreadyExists"),
        "a second CreateUser u1 answered {status}: {body}"
    );

    // reset empties it without a restart.
    let pid = moto.pid().context("moto has no pid")?;
    moto.reset().await?;
    ensure!(list_users(&endpoint).await?.is_empty(), "reset kept users");
    ensure!(moto.pid() == Some(pid), "reset restarted moto");
    create_user(&endpoint, "u1").await?;

    // Outage: the endpoint refuses connections.
    moto.pause();
    ensure!(!alive(pid), "moto ({pid}) still runs after pause");
    ensure!(moto.pid().is_none() && !moto.is_running());
    match iam(&endpoint, "Action=ListUsers").await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => bail!("expected connection refused while paused, got {other:?}"),
    }
    moto.pause(); // idempotent

    // Back on the same endpoint, empty (moto keeps state in memory only).
    moto.resume().await?;
    ensure!(moto.endpoint() == endpoint, "endpoint changed on resume");
    let resumed = moto.pid().context("no pid after resume")?;
    ensure!(resumed != pid && alive(resumed));
    ensure!(
        list_users(&endpoint).await?.is_empty(),
        "state survived a restart"
    );
    create_user(&endpoint, "u2").await?;
    assert_eq!(list_users(&endpoint).await?, ["u2"]);
    moto.resume().await?; // running already: nothing happens
    ensure!(
        moto.pid() == Some(resumed),
        "resume restarted a running moto"
    );

    moto.restart().await?;
    let restarted = moto.pid().context("no pid after restart")?;
    ensure!(restarted != resumed && !alive(resumed));
    ensure!(list_users(&endpoint).await?.is_empty());

    // The log collects every run's requests.
    let log = moto.log().to_path_buf();
    let dir = log.parent().map(PathBuf::from).context("log has no dir")?;
    let text = std::fs::read_to_string(&log)?;
    ensure!(
        text.matches("\"POST / HTTP/1.1\" 200").count() >= 6,
        "moto log {} lacks the requests:\n{text}",
        log.display()
    );

    drop(moto);
    ensure!(!alive(restarted), "moto ({restarted}) outlived its owner");
    ensure!(!dir.exists(), "run directory {} left behind", dir.display());
    match iam(&endpoint, "Action=ListUsers").await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => bail!("expected connection refused after drop, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_crash_reaper_recognises_moto() -> Result<()> {
    let moto = Moto::start().await?;
    let pid = moto.pid().context("no pid")?;
    let dir = moto.log().parent().context("log has no dir")?;
    // What the next run does for a run whose owner died: kill the recorded pids that still run
    // the recorded binary (moto_server's interpreter, not the script).
    let killed = operon_cluster::process::kill_recorded(dir);
    ensure!(killed == 1, "the reaper killed {killed} processes");
    wait::until("moto killed", Duration::from_secs(10), || async {
        if alive(pid) || moto.is_running() {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    })
    .await?;
    // A crashed moto can be started again.
    moto.start_again().await?;
    ensure!(list_users(&moto.endpoint()).await?.is_empty());
    Ok(())
}

const HOLDER_ENV: &str = "OPERON_MOTO_HOLDER_PID";

/// Not a test of its own: the child process of the test below. It starts moto, writes its pid
/// and endpoint to a file and waits to be killed.
#[tokio::test]
#[ignore = "run by moto_dies_with_a_killed_owner"]
async fn moto_holder() -> Result<()> {
    let Some(out) = std::env::var_os(HOLDER_ENV) else {
        return Ok(());
    };
    let moto = Moto::start().await?;
    let pid = moto.pid().context("no pid")?;
    let tmp = PathBuf::from(&out).with_extension("tmp");
    std::fs::write(&tmp, format!("{pid} {}", moto.endpoint()))?;
    std::fs::rename(&tmp, &out)?;
    // Parked until SIGKILLed by the parent test; bounded so that nothing can hang forever.
    tokio::time::sleep(Duration::from_secs(300)).await;
    drop(moto);
    Ok(())
}

#[tokio::test]
async fn moto_dies_with_a_killed_owner() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let pid_file = scratch.path().join("pid");
    let mut holder = Command::new(std::env::current_exe()?)
        .args(["--exact", "moto_holder", "--ignored", "--nocapture"])
        .env(HOLDER_ENV, &pid_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let (pid, endpoint) = wait::until("holder started moto", Duration::from_secs(90), || async {
        let text = std::fs::read_to_string(&pid_file).map_err(|e| e.to_string())?;
        let (pid, endpoint) = text.split_once(' ').ok_or("no endpoint")?;
        Ok((
            pid.parse::<u32>().map_err(|e| e.to_string())?,
            endpoint.to_string(),
        ))
    })
    .await?;
    ensure!(alive(pid));
    ensure!(list_users(&endpoint).await?.is_empty());

    // SIGKILL: no destructor runs in the holder; only the parent-death signal can stop moto.
    kill(Pid::from_raw(holder.id() as i32), Signal::SIGKILL).context("killing the holder")?;
    holder.wait()?;
    wait::until("moto gone", Duration::from_secs(20), || async {
        if alive(pid) {
            Err(format!("moto ({pid}) still alive"))
        } else {
            Ok(())
        }
    })
    .await?;
    operon_cluster::process::reap_stale_runs();
    Ok(())
}

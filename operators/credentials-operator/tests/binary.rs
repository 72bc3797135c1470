//! The credentials-operator binary, configured the AWS SDK's way: no `--iam-endpoint`, only
//! `AWS_ENDPOINT_URL_IAM` and `AWS_REGION` in its environment; its logs in a file are plain text.

mod common;

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, ensure};
use common::Fixture;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_follows_the_sdks_environment() -> Result<()> {
    let f = Fixture::new("cred-binary").await?;
    let kubeconfig = f
        .env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf())
        .or_else(|| std::env::var_os("KUBECONFIG").map(Into::into))
        .context("no kubeconfig")?;
    let log = std::env::temp_dir().join(format!("{}-credentials-operator.log", f.ns));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_credentials-operator"))
        .args([
            "run",
            "--namespace",
            &f.ns,
            "--root-secret",
            &format!("{}/aws-creds", f.ns),
            "--cluster-id",
            "binary",
            "--leader-elect=false",
            "--admin-bind-address",
            "127.0.0.1:0",
            "--metrics-bind-address=0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("AWS_ENDPOINT_URL_IAM", f.moto.endpoint())
        .env("AWS_REGION", "eu-west-1")
        .env_remove("OPERON_IAM_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    let _child = Killed(child);
    eprintln!("credentials-operator log: {}", log.display());

    f.create(&f.sample("from-env", "from-env-creds", None)?)
        .await?;
    let cr = f.wait_provisioned("from-env").await?;
    let user = cr.minted_user().unwrap_or_default().to_owned();
    ensure!(user.starts_with("binary-from-env-"), "{user}");
    ensure!(
        f.iam_users().await? == [user],
        "the user exists in the emulator"
    );
    // Logging to a file, not a terminal: plain text, no colour codes.
    let text = std::fs::read_to_string(&log)?;
    ensure!(text.contains(" INFO "), "no log lines in {}", log.display());
    ensure!(
        !text.contains('\x1b'),
        "ANSI escape codes in a log written to a file ({})",
        log.display()
    );
    Ok(())
}

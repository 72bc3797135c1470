//! The talk's walkthrough (slides 56–73) with `operon`: init, create api, create controller,
//! the user's edit (tests/fixtures/pod-operator2.patch, the talk's spec and `newPodForCR`), the
//! generated project's own checks (rustfmt, clippy, its tests), manifests, then the generated
//! Makefile against a local cluster with a real node: `make install` and `make run` (a
//! PodRequest gets its Pod, which comes back when deleted and goes with the request),
//! `make docker-build bundle bundle-build`, `make deploy` (pushed, rolled out, serving the
//! request) and `make undeploy` with a PodRequest left (finalized by the operator, the CRD
//! gone). Plus the refusals: bad names, edited files, and a new crate joining an existing
//! workspace.
//!
//! The generated project builds in `<target>/e2e`, which stays between runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use operon_cluster::wait;

const TIMEOUT: Duration = Duration::from_secs(90);
const PATCH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pod-operator2.patch"
);

/// Where generated projects build: shared by runs, apart from the workspace's own target.
fn project_target() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("e2e")
}

/// A fresh directory for one test's projects, outside any Cargo workspace (under this
/// workspace's target/, `operon new` would rightly make the project one of its members).
/// The same path on every run with one target directory: a project's build artifacts are named after its
/// path, so a fixed path overwrites the last run's instead of adding to them.
fn workdir(name: &str) -> Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let mut checkout = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_TARGET_TMPDIR").hash(&mut checkout);
    let dir = std::env::temp_dir().join(format!(
        "operon-e2e-{name}-{:08x}",
        checkout.finish() as u32
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A command in `dir` without the variables Cargo set for this test (they would make the
/// project's build scripts run again), building into [`project_target`].
fn command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", project_target());
    cmd
}

fn operon(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = command(env!("CARGO_BIN_EXE_operon"), dir);
    cmd.args(args);
    cmd
}

/// `operon` without the `operon manifests` that new and add run (it compiles the project).
fn quick(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = operon(dir, args);
    cmd.env("OPERON_SKIP_MANIFESTS", "true");
    cmd
}

fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = command(
        std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        dir,
    );
    cmd.args(args);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and fails with its output unless it succeeds; returns its output.
fn succeed(what: &str, cmd: &mut Command) -> Result<String> {
    let started = std::time::Instant::now();
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    eprintln!("e2e: {what}: {:.1} s", started.elapsed().as_secs_f64());
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    Ok(text(&out))
}

/// Runs `cmd`, which must fail with a message containing every one of `expected`.
fn refuse(what: &str, cmd: &mut Command, expected: &[&str]) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    let message = text(&out);
    ensure!(!out.status.success(), "{what} succeeded:\n{message}");
    for e in expected {
        ensure!(message.contains(e), "{what}: no {e:?} in:\n{message}");
    }
    Ok(())
}

/// The generated project's own checks: rustfmt, clippy with warnings denied, its tests;
/// returns the tests' output.
fn checks(project: &Path) -> Result<String> {
    succeed(
        "cargo fmt --check",
        &mut cargo(project, &["fmt", "--check"]),
    )?;
    succeed(
        "cargo clippy -D warnings",
        &mut cargo(
            project,
            &["clippy", "--all-targets", "--", "-D", "warnings"],
        ),
    )?;
    succeed(
        "cargo test (generated tests)",
        &mut cargo(project, &["test"]),
    )
}

/// The PodRequest API, dynamically (the test does not link the generated crate).
fn pod_requests(client: kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("pod.example.com", "v1alpha1", "PodRequest");
    Api::namespaced_with(client, ns, &ApiResource::from_gvk(&gvk))
}

/// `make run` or `operon run` in its own process group, stopped with SIGTERM (as Ctrl-C would).
struct Running(std::process::Child);

impl Running {
    /// SIGTERM to the group, then waits until every process of it has exited.
    fn stop(mut self) -> Result<()> {
        // The whole group (make, operon run, the operator, its control plane), as Ctrl-C does.
        let group = nix::unistd::Pid::from_raw(-i32::try_from(self.0.id())?);
        nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            // Reaped, make no longer counts as a member.
            let _ = self.0.try_wait()?;
            if nix::sys::signal::kill(group, None) == Err(nix::errno::Errno::ESRCH) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the run did not stop within {TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(id) = i32::try_from(self.0.id()) {
            let group = nix::unistd::Pid::from_raw(-id);
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_talks_walkthrough_with_operon() -> Result<()> {
    let work = workdir("talk")?;
    // 1. operator-sdk new pod-operator
    succeed(
        "operon init",
        &mut operon(&work, &["init", "pod-operator2"]),
    )?;
    let project = work.join("pod-operator2");
    // 2. operator-sdk add api
    let add_api = [
        "create",
        "api",
        "--group",
        "pod.example.com",
        "--version",
        "v1alpha1",
        "--kind",
        "PodRequest",
    ];
    succeed("operon create api", &mut operon(&project, &add_api))?;
    // 3. operator-sdk add controller
    let add_controller = [
        "create",
        "controller",
        "--kind",
        "PodRequest",
        "--owns",
        "Pod",
    ];
    succeed(
        "operon create controller",
        &mut operon(&project, &add_controller),
    )?;

    // Again: nothing changes.
    let again = succeed("operon create api, again", &mut operon(&project, &add_api))?;
    ensure!(
        !again.contains("created") && !again.contains("updated") && again.contains("unchanged"),
        "a second create api changed files:\n{again}"
    );

    // 4. edit code: the talk's spec (slide 68) and newPodForCR (slide 69).
    succeed(
        "git apply the user's edit",
        command("git", &project).args(["apply", PATCH]),
    )?;
    let controller_file = project.join("src/controller/pod_request.rs");
    let edited = std::fs::read_to_string(&controller_file)?;
    refuse(
        "operon create controller over the edited controller",
        &mut operon(&project, &add_controller),
        &[
            "refusing to overwrite",
            "src/controller/pod_request.rs",
            "Nothing was changed",
        ],
    )?;
    ensure!(
        std::fs::read_to_string(&controller_file)? == edited,
        "the edited controller was modified"
    );

    // The edit changed the types: regenerate config/ (RBAC derived from what is owned).
    succeed("operon manifests", &mut operon(&project, &["manifests"]))?;
    let role = std::fs::read_to_string(project.join("config/rbac/role.yaml"))?;
    for expected in ["pods", "create", "podrequests/status", "events.k8s.io"] {
        ensure!(
            role.contains(expected),
            "no {expected} in config/rbac/role.yaml:\n{role}"
        );
    }
    let crd =
        std::fs::read_to_string(project.join("config/crd/bases/pod.example.com_podrequests.yaml"))?;
    ensure!(
        crd.contains("command") && crd.contains("image"),
        "the CRD lacks the talk's spec:\n{crd}"
    );

    // The generated code, as edited, passes the project's own checks.
    checks(&project)?;

    // The cluster, as a user's kubeconfig names it: a control plane with a real node.
    let env = operon_envtest::shared_with_node().await?;
    let client = env.client().await?;
    let kubeconfig = match env.control_plane() {
        Some(cp) => cp.kubeconfig_path().to_path_buf(),
        None => std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .context("no kubeconfig for the existing cluster")?,
    };
    let make = |args: &[&str]| {
        let mut cmd = command("make", &project);
        cmd.args(args)
            .env("OPERON", env!("CARGO_BIN_EXE_operon"))
            .env("KUBECONFIG", &kubeconfig);
        cmd
    };

    // The Makefile: `make` alone lists its targets.
    let help = succeed("make", &mut make(&[]))?;
    for target in [
        "help",
        "build",
        "run",
        "install",
        "uninstall",
        "deploy",
        "undeploy",
        "docker-build",
        "docker-push",
        "manifests",
        "bundle",
        "bundle-build",
        "test",
        "fmt",
        "lint",
    ] {
        ensure!(
            help.contains(&format!("  {target} ")),
            "make help lists no {target}:\n{help}"
        );
    }

    // 5–7 (slides 70–73), out of the cluster: `make install` applies the CRD, `make run`
    // builds the operator and runs it here against the kubeconfig's cluster.
    let installed = succeed("make install", &mut make(&["install"]))?;
    ensure!(
        installed.contains("podrequests.pod.example.com"),
        "{installed}"
    );
    let log_path = work.join("make-run.log");
    let mut child = make(&[
        "run",
        "RUN_ARGS=--admin-bind-address=127.0.0.1:0 --metrics-bind-address=127.0.0.1:0",
    ]);
    // Its own process group: SIGTERM reaches make, operon run and the operator, as Ctrl-C
    // does in a terminal.
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log_path)?))
        .spawn()
        .context("starting make run")?;
    eprintln!("e2e: make run log: {}", log_path.display());
    let stdout = child.stdout.take().context("make run's stdout")?;
    let running = Running(child);
    let (started, running_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("make run: {line}");
            if line.contains("pod-operator2 running") {
                let _ = started.send(());
            }
        }
    });
    running_line
        .recv_timeout(Duration::from_secs(600))
        .context("make run did not start the operator (see its log)")?;
    let ns = env.namespace("talk").await?;
    let sample =
        std::fs::read_to_string(project.join("config/samples/pod_v1alpha1_podrequest.yaml"))?;
    let request: DynamicObject = serde_saphyr::from_str(&sample)?;
    let requests = pod_requests(client.clone(), &ns);
    requests.create(&PostParams::default(), &request).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // Slide 63: create Pod from a custom resource.
    let pod = wait::until("the Pod of the PodRequest", TIMEOUT, || async {
        let pod = pods
            .get_opt("busybox")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Pod yet")?;
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .cloned();
        match owner {
            Some(o) if o.kind == "PodRequest" && o.name == "busybox" => Ok(pod),
            other => Err(format!(
                "Pod without the PodRequest as controller: {other:?}"
            )),
        }
    })
    .await?;
    ensure!(
        pod.labels().get("app").map(String::as_str) == Some("busybox"),
        "label app=busybox missing"
    );
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("no container")?;
    ensure!(
        container.image.as_deref() == Some("busybox"),
        "image {:?}",
        container.image
    );

    // Slide 64: ensure the Pod exists for each custom resource.
    let first_uid = pod.uid().context("Pod without uid")?;
    pods.delete("busybox", &DeleteParams::default().grace_period(0))
        .await?;
    wait::until("the Pod recreated", TIMEOUT, || async {
        match pods.get_opt("busybox").await.map_err(|e| e.to_string())? {
            Some(p) if p.uid().as_deref() != Some(first_uid.as_str()) => Ok(()),
            _ => Err("not recreated yet".to_string()),
        }
    })
    .await?;
    wait::until("PodRequest Ready", TIMEOUT, || async {
        let r = requests.get("busybox").await.map_err(|e| e.to_string())?;
        let conditions = r.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready = conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            Ok(())
        } else {
            Err(format!("conditions {conditions:?}"))
        }
    })
    .await?;

    // A child the API server rejects (a container name the CRD's schema lets through, a Pod's
    // doesn't): the user sees it on the PodRequest, not only in the operator's log.
    let mut rejected = request.clone();
    rejected.metadata.name = Some("rejected".into());
    rejected.data["spec"]["name"] = serde_json::json!("Not_A_DNS_Label");
    requests.create(&PostParams::default(), &rejected).await?;
    let message = wait::until("PodRequest rejected: Ready=False", TIMEOUT, || async {
        let r = requests.get("rejected").await.map_err(|e| e.to_string())?;
        let conditions = r.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions
            .iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_owned))
            .ok_or(format!("conditions {conditions:?}"))
    })
    .await?;
    ensure!(
        message.contains("Not_A_DNS_Label") && message.contains("Invalid value"),
        "the Ready condition doesn't carry the API server's message: {message}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "a Warning Event about the rejected PodRequest",
        TIMEOUT,
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("ReconcileError")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("rejected")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("Not_A_DNS_Label"))
                })
                .map(|_| ())
                .ok_or(format!("{} Events, none about it", list.items.len()))
        },
    )
    .await?;
    requests
        .delete("rejected", &DeleteParams::default())
        .await?;

    // Slide 65: clean up the Pod when the custom resource is deleted.
    requests.delete("busybox", &DeleteParams::default()).await?;
    wait::until("PodRequest gone (finalizer released)", TIMEOUT, || async {
        match requests
            .get_opt("busybox")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(r) => Err(format!("still there, finalizers {:?}", r.finalizers())),
        }
    })
    .await?;
    wait::until("the Pod garbage-collected", TIMEOUT, || async {
        match pods.get_opt("busybox").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) if p.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("Pod still there".to_string()),
        }
    })
    .await?;
    running.stop()?;
    // The operator's last words: the API requests it made, by verb and resource.
    let log = std::fs::read_to_string(&log_path)?;
    ensure!(
        log.contains("stopped"),
        "the operator did not stop cleanly:\n{log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains("requests={")) {
        eprintln!("e2e: the operator's requests: {line}");
    }

    // Slide 70: build (static binary, and the image where buildah is installed). The release
    // profile without optimization: this test checks the workflow, not the optimizer, and a
    // cold optimized build of the project's dependencies took most of its 9 minutes.
    let built = succeed(
        "make docker-build",
        make(&["docker-build"])
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256"),
    )?;
    ensure!(
        built.contains("image: localhost/pod-operator2:v0.1.0 in "),
        "make docker-build said:\n{built}"
    );
    succeed("make bundle", &mut make(&["bundle"]))?;
    ensure!(
        project
            .join("bundle/manifests/pod-operator2.clusterserviceversion.yaml")
            .is_file(),
        "no ClusterServiceVersion in bundle/"
    );
    let bundle_image = succeed("make bundle-build", &mut make(&["bundle-build"]))?;
    ensure!(
        bundle_image.contains("image: localhost/pod-operator2-bundle:v0.1.0 in "),
        "{bundle_image}"
    );

    // Slide 71: deploy! The image `make docker-build` made, pushed to the cluster's registry,
    // config/default applied: the operator runs in the cluster and serves the talk's request
    // for real. `make deploy` returns once the Deployment has rolled out.
    let deployed = succeed("make deploy", &mut make(&["deploy"]))?;
    ensure!(
        deployed.contains("pushed localhost/pod-operator2:v0.1.0")
            && deployed.contains("deployment pod-operator2-system/pod-operator2-controller-manager successfully rolled out"),
        "{deployed}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "pod-operator2-system");
    let deployment = deployments.get("pod-operator2-controller-manager").await?;
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    ensure!(
        available >= 2,
        "deploy returned with {available} replicas available"
    );
    let image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    // Run by the digest of what was pushed, so that a rebuild rolls out and a moved tag is not
    // run.
    let pinned = image
        .as_deref()
        .and_then(|i| i.strip_prefix("localhost/pod-operator2:v0.1.0@"))
        .and_then(operon_image::manifest_digest);
    ensure!(
        pinned.is_some() && deployed.contains(image.as_deref().unwrap_or_default()),
        "deployed image {image:?}, deploy said:\n{deployed}"
    );
    let ns = env.namespace("in-cluster").await?;
    let requests = pod_requests(client.clone(), &ns);
    requests.create(&PostParams::default(), &request).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait::until("the talk's greeting from the Pod", TIMEOUT, || async {
        let log = pods
            .logs("busybox", &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        if log.contains("Hello DevConf.CZ 2020!") {
            Ok(())
        } else {
            Err(format!("log so far: {log:?}"))
        }
    })
    .await?;

    // `make undeploy` with the PodRequest still there: the running operator finalizes it
    // first, then everything goes, the CRD included (not left Terminating).
    let undeployed = succeed("make undeploy", &mut make(&["undeploy"]))?;
    ensure!(
        undeployed.contains("1 custom resource(s) finalized"),
        "{undeployed}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ensure!(
        crds.get_opt("podrequests.pod.example.com").await?.is_none(),
        "the CRD is still there after make undeploy"
    );
    wait::until("the Deployment gone", TIMEOUT, || async {
        match deployments
            .get_opt("pod-operator2-controller-manager")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(d) if d.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await?;
    // The operator's cleanup ran: the Pod goes with its request.
    wait::until("the in-cluster Pod garbage-collected", TIMEOUT, || async {
        match pods.get_opt("busybox").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) if p.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("Pod still there".to_string()),
        }
    })
    .await?;

    // Without a cluster: `operon run --local` starts a control plane of its own (kwok Nodes),
    // installs the CRD there and runs the operator against it.
    let local_log = work.join("operon-run-local.log");
    let mut local = operon(
        &project,
        &[
            "run",
            "--local",
            "--",
            "--health-probe-bind-address=127.0.0.1:0",
            "--metrics-bind-address=0",
        ],
    );
    std::os::unix::process::CommandExt::process_group(&mut local, 0);
    let mut local = local
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&local_log)?))
        .spawn()
        .context("starting operon run --local")?;
    eprintln!("e2e: operon run --local log: {}", local_log.display());
    let stdout = local.stdout.take().context("operon run --local's stdout")?;
    let local = Running(local);
    let (found, kubeconfig_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("operon run --local: {line}");
            if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=") {
                let _ = found.send(PathBuf::from(path));
            }
        }
    });
    let local_kubeconfig = kubeconfig_line
        .recv_timeout(Duration::from_secs(300))
        .context("operon run --local printed no KUBECONFIG (see its log)")?;
    let loaded = operon_runtime::kubeconfig::load(Some(local_kubeconfig.as_os_str()), None).await?;
    let local_client = kube::Client::try_from(loaded.config)?;
    let local_requests = pod_requests(local_client.clone(), "default");
    let sample =
        std::fs::read_to_string(project.join("config/samples/pod_v1alpha1_podrequest.yaml"))?;
    let request: DynamicObject = serde_saphyr::from_str(&sample)?;
    // The CRD is installed by `operon run` as it starts.
    wait::until(
        "a PodRequest created on the local control plane",
        TIMEOUT,
        || async {
            local_requests
                .create(&PostParams::default(), &request)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    let local_pods: Api<Pod> = Api::namespaced(local_client, "default");
    wait::until(
        "the local operator's Pod for the request",
        TIMEOUT,
        || async {
            let pod = local_pods
                .get_opt("busybox")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no Pod yet")?;
            pod.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "PodRequest")
                .then_some(())
                .ok_or_else(|| "the Pod has no PodRequest as its controller".to_string())
        },
    )
    .await?;
    local.stop()?;

    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[test]
fn bad_names_are_refused_with_a_clear_message_and_change_nothing() -> Result<()> {
    let work = workdir("names")?;
    refuse(
        "new Pod_Operator",
        &mut quick(&work, &["new", "Pod_Operator"]),
        &["invalid operator name"],
    )?;
    succeed(
        "operon new",
        &mut quick(&work, &["new", "shop-operator", "--domain", "shop.example"]),
    )?;
    let project = work.join("shop-operator");
    let api = |group: &str, version: &str, kind: &str| {
        quick(
            &project,
            &[
                "add",
                "api",
                "--group",
                group,
                "--version",
                version,
                "--kind",
                kind,
            ],
        )
    };
    let bad: [(&str, [&str; 3], &[&str]); 6] = [
        (
            "lowercase kind",
            ["widgets", "v1", "widget"],
            &["CamelCase"],
        ),
        (
            "kind with a dash",
            ["widgets", "v1", "Wid-get"],
            &["CamelCase"],
        ),
        (
            "group with capitals",
            ["Widgets.Example.com", "v1", "Widget"],
            &["DNS names"],
        ),
        (
            "reserved group",
            ["apps.k8s.io", "v1", "Widget"],
            &["reserved"],
        ),
        (
            "version 1",
            ["widgets", "1", "Widget"],
            &["invalid API version", "v1alpha1"],
        ),
        (
            "version v1.0",
            ["widgets", "v1.0", "Widget"],
            &["invalid API version"],
        ),
    ];
    for (what, [group, version, kind], expected) in bad {
        refuse(what, &mut api(group, version, kind), expected)?;
    }
    refuse(
        "controller without its API",
        &mut quick(&project, &["add", "controller", "--kind", "Widget"]),
        &["no API of kind", "operon create api"],
    )?;
    let apis: Vec<_> = std::fs::read_dir(project.join("src/api"))?.collect::<Result<_, _>>()?;
    ensure!(apis.len() == 1, "refused commands wrote files: {apis:?}");

    // A bare group gets the domain; a cluster-scoped kind; an unknown owned kind.
    let added = succeed(
        "add api",
        &mut quick(
            &project,
            &[
                "add",
                "api",
                "--group",
                "widgets",
                "--version",
                "v1beta1",
                "--kind",
                "Widget",
                "--cluster",
            ],
        ),
    )?;
    ensure!(
        added.contains("config/samples/widgets_v1beta1_widget.yaml"),
        "{added}"
    );
    let toml = std::fs::read_to_string(project.join("operon.toml"))?;
    ensure!(
        toml.contains("widgets.shop.example") && toml.contains("\"cluster\""),
        "{toml}"
    );
    refuse(
        "the same kind in another version",
        &mut quick(
            &project,
            &[
                "add",
                "api",
                "--group",
                "widgets",
                "--version",
                "v2",
                "--kind",
                "Widget",
            ],
        ),
        &["already has Widget"],
    )?;
    refuse(
        "an unknown owned kind",
        &mut quick(
            &project,
            &["add", "controller", "--kind", "Widget", "--owns", "Gizmo"],
        ),
        &["--owns Gizmo", "Deployment", "Widget"],
    )?;
    ensure!(
        !project.join("src/controller/widget.rs").exists(),
        "a refused controller was written"
    );
    refuse(
        "add outside a project",
        &mut quick(
            &work,
            &[
                "add",
                "api",
                "--group",
                "a.b",
                "--version",
                "v1",
                "--kind",
                "A",
            ],
        ),
        &["operon init"],
    )?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[test]
fn a_new_operator_joins_the_enclosing_workspace() -> Result<()> {
    let work = workdir("workspace")?;
    std::fs::write(
        work.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = [\"tools\"]\n",
    )?;
    std::fs::create_dir_all(work.join("operators"))?;
    succeed(
        "operon new in a workspace",
        &mut quick(&work.join("operators"), &["new", "gadget-operator"]),
    )?;
    let manifest = std::fs::read_to_string(work.join("Cargo.toml"))?;
    ensure!(
        manifest.contains("\"operators/gadget-operator\""),
        "not a member:\n{manifest}"
    );
    let member = std::fs::read_to_string(work.join("operators/gadget-operator/Cargo.toml"))?;
    ensure!(
        !member.contains("[workspace]"),
        "a member must not be its own workspace:\n{member}"
    );
    ensure!(
        member.contains("crates/runtime"),
        "no operon-runtime dependency:\n{member}"
    );
    // Again: the member is listed once, nothing changes.
    succeed(
        "operon new again",
        &mut quick(&work.join("operators"), &["new", "gadget-operator"]),
    )?;
    let again = std::fs::read_to_string(work.join("Cargo.toml"))?;
    ensure!(
        again == manifest,
        "the workspace manifest changed:\n{again}"
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

#[test]
fn every_shape_of_generated_code_is_clean_and_its_tests_pass() -> Result<()> {
    let work = workdir("shapes")?;
    succeed(
        "operon new",
        &mut quick(&work, &["new", "shop-operator", "--domain", "shop.example"]),
    )?;
    let project = work.join("shop-operator");
    let steps: [&[&str]; 5] = [
        // Cluster-scoped, with a bare group (the domain is appended).
        &[
            "add",
            "api",
            "--group",
            "widgets",
            "--version",
            "v1",
            "--kind",
            "Widget",
            "--cluster",
        ],
        &[
            "add",
            "api",
            "--group",
            "gadgets",
            "--version",
            "v1beta1",
            "--kind",
            "Gadget",
        ],
        &[
            "add",
            "api",
            "--group",
            "gadgets",
            "--version",
            "v1beta1",
            "--kind",
            "GadgetPolicy",
        ],
        // A controller that owns nothing, and one owning built-in kinds and a project kind.
        &["add", "controller", "--kind", "Widget"],
        &[
            "add",
            "controller",
            "--kind",
            "Gadget",
            "--owns",
            "ConfigMap,Secret,Deployment,GadgetPolicy",
        ],
    ];
    for step in steps {
        succeed(
            &format!("operon {}", step.join(" ")),
            &mut quick(&project, step),
        )?;
    }
    succeed("operon manifests", &mut operon(&project, &["manifests"]))?;
    let tests = checks(&project)?;
    for test in [
        "widget_gets_ready_and_is_cleaned_up_on_deletion ... ok",
        "gadget_gets_ready_and_is_cleaned_up_on_deletion ... ok",
    ] {
        ensure!(tests.contains(test), "{test:?} did not run:\n{tests}");
    }
    succeed("operon manifests", &mut quick(&project, &["manifests"]))?;
    let role = std::fs::read_to_string(project.join("config/rbac/role.yaml"))?;
    for expected in [
        "gadgetpolicies",
        "deployments",
        "configmaps",
        "secrets",
        "widgets/status",
    ] {
        ensure!(
            role.contains(expected),
            "no {expected} in config/rbac/role.yaml:\n{role}"
        );
    }
    let samples = std::fs::read_to_string(project.join("config/samples/kustomization.yaml"))?;
    ensure!(
        samples.contains("widgets_v1_widget.yaml")
            && samples.contains("gadgets_v1beta1_gadgetpolicy.yaml"),
        "{samples}"
    );
    // The generated config test fails when config/ is out of date, and passes once regenerated.
    let role_file = project.join("config/rbac/role.yaml");
    std::fs::write(&role_file, format!("{role}# edited by hand\n"))?;
    refuse(
        "cargo test --test config, config/ edited",
        &mut cargo(&project, &["test", "--test", "config"]),
        &["config/ is out of date", "rbac/role.yaml"],
    )?;
    succeed("operon manifests", &mut operon(&project, &["manifests"]))?;
    succeed(
        "cargo test --test config",
        &mut cargo(&project, &["test", "--test", "config"]),
    )?;
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

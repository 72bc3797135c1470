//! The repository's Makefile answers the targets operator-sdk and kubebuilder users type, each
//! with the command it promises. `make -n` prints what a target would run without running it.

use std::path::Path;
use std::process::{Command, Output};

fn make(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new("make")
        .arg("--no-print-directory")
        .args(args)
        .current_dir(root)
        // The cluster's kubectl is found by the Makefile; a fixed one keeps the output stable.
        .env("KUBECTL", "kubectl")
        .env_remove("MAKEFLAGS")
        .output()
        .expect("make runs (the `make` Debian package is a prerequisite)")
}

fn dry_run(target: &str) -> String {
    let out = make(&["-n", target]);
    assert!(
        out.status.success(),
        "make -n {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const TARGETS: &[(&str, &str)] = &[
    ("build", "cargo build --workspace --bins"),
    ("fmt", "cargo fmt --all"),
    ("manifests", "cargo xtask manifests"),
    ("bundle", "cargo xtask manifests"),
    ("lint", "cargo xtask lint"),
    ("test", "cargo xtask test"),
    ("run", "cargo xtask up"),
    ("cluster-up", "cargo xtask cluster up"),
    ("cluster-down", "cargo xtask cluster down"),
    ("deploy", "cargo xtask deploy"),
    (
        "docker-build",
        "cargo xtask image --profile release pod-operator",
    ),
    ("install", "kubectl apply --server-side -k config/$op/crd"),
    (
        "uninstall",
        "kubectl delete --ignore-not-found -k config/$op/crd",
    ),
];

#[test]
fn every_target_runs_the_command_it_promises() {
    for (target, command) in TARGETS {
        let script = dry_run(target);
        assert!(
            script.contains(command),
            "make {target} should run `{command}`, runs:\n{script}"
        );
    }
}

#[test]
fn help_is_the_default_and_lists_every_target() {
    let out = make(&[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (target, _) in TARGETS
        .iter()
        .chain(&[("undeploy", ""), ("docker-push", "")])
    {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(target)),
            "`make help` lacks {target}:\n{help}"
        );
    }
}

#[test]
fn the_crds_install_targets_name_exist() {
    let script = dry_run("install");
    let operators = script
        .split("for op in ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("install loops over the operators");
    for op in operators.split_whitespace() {
        let crd = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(op)
            .join("crd/kustomization.yaml");
        assert!(crd.is_file(), "{} is missing", crd.display());
    }
}

#[test]
fn undeploy_deletes_the_custom_resources_before_the_operators() {
    let script = dry_run("undeploy");
    let lines: Vec<&str> = script.lines().collect();
    let crs = lines
        .iter()
        .position(|l| l.contains("podrequests.pod.jewzaam.org") && l.contains("--wait"))
        .unwrap_or_else(|| panic!("no waited delete of the custom resources:\n{script}"));
    let deployment = lines
        .iter()
        .position(|l| l.contains("delete") && l.contains("-k config/default"))
        .unwrap_or_else(|| panic!("no delete of config/default:\n{script}"));
    assert!(crs < deployment, "custom resources go first:\n{script}");
}

#[test]
fn docker_push_without_a_registry_says_what_to_set() {
    let out = make(&["docker-push"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("set REGISTRY"), "{stderr}");
    let script = dry_run_with(&["-n", "docker-push", "REGISTRY=registry.example"]);
    assert!(
        script.contains("docker://registry.example/operon/$op:v$version"),
        "{script}"
    );
}

fn dry_run_with(args: &[&str]) -> String {
    let out = make(args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

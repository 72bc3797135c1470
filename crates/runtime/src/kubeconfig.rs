//! Kubeconfig loading as kubectl does it, shared by the operators' `run`, the `operon` CLI and
//! `audit`: `--kubeconfig` (else `$KUBECONFIG`) is a file or a list of files (`a:b`) merged in
//! order, the first file winning per cluster, user and context name and for `current-context`
//! (kube's [`Kubeconfig::merge`]); without one, `~/.kube/config`, then the in-cluster service
//! account. `--context` picks a context of the merged configuration instead of its
//! `current-context`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("merging kubeconfig {path}: {source}")]
    Merge {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("none of the kubeconfig files {0} exists")]
    NoFile(String),
    #[error("context {context:?} is not in kubeconfig {files} (its contexts: {available})")]
    NoContext {
        context: String,
        files: String,
        available: String,
    },
    #[error(
        "kubeconfig {files} has no current-context: pass --context (its contexts: {available})"
    )]
    NoCurrentContext { files: String, available: String },
    #[error("loading context {context:?} of kubeconfig {files}: {source}")]
    Load {
        context: String,
        files: String,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "--context {0:?} needs a kubeconfig, and there is none (--kubeconfig, $KUBECONFIG, ~/.kube/config)"
    )]
    ContextWithoutKubeconfig(String),
    #[error("no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a cluster: {0}")]
    Infer(#[from] kube::config::InferConfigError),
}

/// A client configuration and where it came from, for messages.
#[derive(Clone)]
pub struct Loaded {
    pub config: kube::Config,
    /// The kubeconfig files, merged in this order (empty: in-cluster).
    pub files: Vec<PathBuf>,
    /// The context used (`None`: in-cluster).
    pub context: Option<String>,
}

impl Loaded {
    /// `context "x" of kubeconfig a:b`, or `the in-cluster service account`.
    pub fn source(&self) -> String {
        match &self.context {
            Some(context) => format!("context {context:?} of kubeconfig {}", join(&self.files)),
            None => "the in-cluster service account".to_string(),
        }
    }
}

/// The files of a kubeconfig list (`a:b`, as in `$KUBECONFIG`); empty entries are skipped. A
/// path that exists as it is stays one file even if it contains the separator.
pub fn files(list: &OsStr) -> Vec<PathBuf> {
    if Path::new(list).is_file() {
        return vec![PathBuf::from(list)];
    }
    std::env::split_paths(list)
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// Reads and merges `files` in order (the first file wins per name).
pub fn read(files: &[PathBuf]) -> Result<Kubeconfig, Error> {
    let mut merged: Option<Kubeconfig> = None;
    for path in files {
        let next = Kubeconfig::read_from(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        merged = Some(match merged {
            Some(m) => m.merge(next).map_err(|source| Error::Merge {
                path: path.clone(),
                source,
            })?,
            None => next,
        });
    }
    merged.ok_or_else(|| Error::NoFile(join(files)))
}

/// The client configuration of `kubeconfig` (a file or a list; `None`: `$KUBECONFIG`, then
/// `~/.kube/config`, then in-cluster) and `context` (`None`: the merged `current-context`).
pub async fn load(kubeconfig: Option<&OsStr>, context: Option<&str>) -> Result<Loaded, Error> {
    let list: Option<OsString> = kubeconfig
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("KUBECONFIG"))
        .filter(|l| !l.is_empty());
    let files = match list {
        Some(list) => files(&list),
        None => home_config().into_iter().collect(),
    };
    if files.is_empty() {
        if let Some(context) = context {
            return Err(Error::ContextWithoutKubeconfig(context.to_string()));
        }
        let config = kube::Config::infer().await?;
        return Ok(Loaded {
            config,
            files,
            context: None,
        });
    }
    // As kubectl: the files of a list that don't exist are skipped; a single file must exist.
    let listed = files;
    let files: Vec<PathBuf> = if listed.len() > 1 {
        listed.iter().filter(|f| f.exists()).cloned().collect()
    } else {
        listed.clone()
    };
    if files.is_empty() {
        return Err(Error::NoFile(join(&listed)));
    }
    let merged = read(&files)?;
    let available = || {
        let names: Vec<&str> = merged.contexts.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let name = match context
        .map(str::to_string)
        .or(merged.current_context.clone())
    {
        Some(name) => name,
        None => {
            return Err(Error::NoCurrentContext {
                files: join(&files),
                available: available(),
            });
        }
    };
    if !merged.contexts.iter().any(|c| c.name == name) {
        return Err(Error::NoContext {
            context: name,
            files: join(&files),
            available: available(),
        });
    }
    let options = KubeConfigOptions {
        context: Some(name.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|source| Error::Load {
            context: name.clone(),
            files: join(&files),
            source,
        })?;
    Ok(Loaded {
        config,
        files,
        context: Some(name),
    })
}

fn home_config() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    let path = PathBuf::from(home).join(".kube").join("config");
    path.is_file().then_some(path)
}

fn join(files: &[PathBuf]) -> String {
    std::env::join_paths(files)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| {
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(current: Option<&str>, contexts: &[(&str, &str)]) -> String {
        let mut text = String::from("apiVersion: v1\nkind: Config\n");
        if let Some(current) = current {
            text.push_str(&format!("current-context: {current}\n"));
        }
        text.push_str("clusters:\n");
        for (name, server) in contexts {
            text.push_str(&format!(
                "- name: {name}\n  cluster: {{server: '{server}'}}\n"
            ));
        }
        text.push_str("users:\n");
        for (name, _) in contexts {
            text.push_str(&format!("- name: {name}\n  user: {{token: t-{name}}}\n"));
        }
        text.push_str("contexts:\n");
        for (name, _) in contexts {
            text.push_str(&format!(
                "- name: {name}\n  context: {{cluster: {name}, user: {name}}}\n"
            ));
        }
        text
    }

    fn two_files() -> (tempfile::TempDir, OsString) {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        // The first file's current-context and its "shared" context win over the second's.
        std::fs::write(
            &a,
            kubeconfig(
                Some("bad"),
                &[("bad", "https://127.0.0.1:1"), ("shared", "https://a:1")],
            ),
        )
        .expect("write");
        std::fs::write(
            &b,
            kubeconfig(
                Some("good"),
                &[
                    ("good", "https://127.0.0.2:6443"),
                    ("shared", "https://b:1"),
                ],
            ),
        )
        .expect("write");
        let list = std::env::join_paths([&a, &b]).expect("join");
        (dir, list)
    }

    #[tokio::test]
    async fn merges_a_list_first_file_winning() {
        let (_dir, list) = two_files();
        let current = load(Some(&list), None).await.expect("load");
        assert_eq!(current.context.as_deref(), Some("bad"));
        assert_eq!(
            current.config.cluster_url.to_string(),
            "https://127.0.0.1:1/"
        );
        let good = load(Some(&list), Some("good")).await.expect("load");
        assert_eq!(
            good.config.cluster_url.to_string(),
            "https://127.0.0.2:6443/"
        );
        assert_eq!(good.files.len(), 2);
        let shared = load(Some(&list), Some("shared")).await.expect("load");
        assert_eq!(shared.config.cluster_url.to_string(), "https://a:1/");
    }

    #[tokio::test]
    async fn a_missing_context_is_an_error_naming_it_and_the_files() {
        let (dir, list) = two_files();
        let e = load(Some(&list), Some("nope"))
            .await
            .err()
            .expect("no such context");
        let text = e.to_string();
        assert!(text.contains("\"nope\""), "{text}");
        assert!(
            text.contains(&dir.path().join("b").display().to_string()),
            "{text}"
        );
        assert!(text.contains("bad, shared, good"), "{text}");
    }

    #[tokio::test]
    async fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let e = load(Some(missing.as_os_str()), None)
            .await
            .err()
            .expect("missing file");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_list_skips_its_missing_files_as_kubectl_does() {
        let (dir, list) = two_files();
        let missing = dir.path().join("missing");
        let mut with_missing = vec![missing.clone()];
        with_missing.extend(std::env::split_paths(&list));
        let with_missing = std::env::join_paths(with_missing).expect("join");
        let loaded = load(Some(&with_missing), Some("good")).await.expect("load");
        assert_eq!(loaded.files.len(), 2, "{:?}", loaded.files);
        let none =
            std::env::join_paths([&missing, &dir.path().join("also-missing")]).expect("join");
        let e = load(Some(&none), None).await.err().expect("no file exists");
        assert!(e.to_string().contains("also-missing"), "{e}");
    }
}

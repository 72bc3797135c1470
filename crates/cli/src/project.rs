//! `operon.toml`: what the project is made of (like kubebuilder's `PROJECT` file). The CLI
//! reads it to know the project's APIs and controllers; people may read it, and edit it with
//! care.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::Scope;

pub const FILE: &str = "operon.toml";

/// One custom resource of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub scope: Scope,
}

/// One controller of the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub kind: String,
    pub owns: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding operon.toml and the crate's Cargo.toml.
    pub root: PathBuf,
    pub name: String,
    pub domain: String,
    pub apis: Vec<Api>,
    pub controllers: Vec<Controller>,
}

fn string(table: &Table, key: &str, file: &Path) -> Result<String> {
    table
        .get(key)
        .and_then(Item::as_str)
        .map(str::to_string)
        .with_context(|| format!("{}: `{key}` is missing or not a string", file.display()))
}

impl Project {
    /// The project whose operon.toml is in `dir` or the nearest directory above it.
    pub fn find(dir: &Path) -> Result<Project> {
        let start = std::path::absolute(dir)?;
        let mut here = Some(start.as_path());
        while let Some(d) = here {
            if d.join(FILE).is_file() {
                return Project::load(d);
            }
            here = d.parent();
        }
        bail!(
            "no {FILE} in {} or above: run this in a project made by `operon init`",
            start.display()
        )
    }

    pub fn load(root: &Path) -> Result<Project> {
        let file = root.join(FILE);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let doc: DocumentMut = text
            .parse()
            .with_context(|| format!("parsing {}", file.display()))?;
        let tables = |key: &str| -> Vec<Table> {
            doc.get(key)
                .and_then(Item::as_array_of_tables)
                .map(|a| a.iter().cloned().collect())
                .unwrap_or_default()
        };
        let apis = tables("api")
            .iter()
            .map(|t| {
                let scope = match string(t, "scope", &file)?.as_str() {
                    "namespaced" => Scope::Namespaced,
                    "cluster" => Scope::Cluster,
                    other => bail!(
                        "{}: scope {other:?} is neither \"namespaced\" nor \"cluster\"",
                        file.display()
                    ),
                };
                Ok(Api {
                    group: string(t, "group", &file)?,
                    version: string(t, "version", &file)?,
                    kind: string(t, "kind", &file)?,
                    plural: string(t, "plural", &file)?,
                    scope,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let controllers = tables("controller")
            .iter()
            .map(|t| {
                let owns = t
                    .get("owns")
                    .and_then(Item::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Controller {
                    kind: string(t, "kind", &file)?,
                    owns,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let root_table = doc.as_table();
        Ok(Project {
            root: root.to_path_buf(),
            name: string(root_table, "name", &file)?,
            domain: string(root_table, "domain", &file)?,
            apis,
            controllers,
        })
    }

    /// The crate's Rust identifier.
    pub fn crate_ident(&self) -> String {
        crate::names::crate_ident(&self.name)
    }

    pub fn api(&self, kind: &str) -> Option<&Api> {
        self.apis.iter().find(|a| a.kind == kind)
    }

    /// The file's text for this project.
    pub fn render(&self) -> String {
        let mut doc = DocumentMut::new();
        doc.decor_mut().set_prefix(
            "# The project's APIs and controllers, read by the `operon` CLI (`operon create …` \
             updates it).\n",
        );
        doc["name"] = value(&self.name);
        doc["domain"] = value(&self.domain);
        let mut apis = ArrayOfTables::new();
        for api in &self.apis {
            let mut t = Table::new();
            t["group"] = value(&api.group);
            t["version"] = value(&api.version);
            t["kind"] = value(&api.kind);
            t["plural"] = value(&api.plural);
            t["scope"] = value(match api.scope {
                Scope::Namespaced => "namespaced",
                Scope::Cluster => "cluster",
            });
            apis.push(t);
        }
        if !apis.is_empty() {
            doc["api"] = Item::ArrayOfTables(apis);
        }
        let mut controllers = ArrayOfTables::new();
        for c in &self.controllers {
            let mut t = Table::new();
            t["kind"] = value(&c.kind);
            t["owns"] = value(c.owns.iter().collect::<Array>());
            controllers.push(t);
        }
        if !controllers.is_empty() {
            doc["controller"] = Item::ArrayOfTables(controllers);
        }
        doc.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = Project {
            root: dir.path().to_path_buf(),
            name: "pod-operator2".into(),
            domain: "example.com".into(),
            apis: vec![Api {
                group: "pod.example.com".into(),
                version: "v1alpha1".into(),
                kind: "PodRequest".into(),
                plural: "podrequests".into(),
                scope: Scope::Namespaced,
            }],
            controllers: vec![Controller {
                kind: "PodRequest".into(),
                owns: vec!["Pod".into(), "Secret".into()],
            }],
        };
        std::fs::write(dir.path().join(FILE), project.render()).expect("write");
        let loaded = Project::find(&dir.path().join("src/api")).expect("find from below");
        assert_eq!(loaded.apis, project.apis);
        assert_eq!(loaded.controllers, project.controllers);
        assert_eq!(loaded.name, "pod-operator2");
    }

    #[test]
    fn says_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Project::find(dir.path())
            .expect_err("no project")
            .to_string();
        assert!(e.contains("operon init"), "{e}");
    }
}

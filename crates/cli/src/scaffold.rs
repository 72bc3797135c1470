//! `operon init`, `operon create api`, `operon create controller`, `operon delete api`: the files
//! of a project.
//!
//! Every command first plans all its changes, checks them, then writes. Running one again is
//! safe: a file identical to what it would write is left alone, a file that differs (edited
//! since) is never overwritten (the command stops before writing anything and names it), and
//! lines are added to shared files (`src/api/mod.rs`, …) only where their `operon:scaffold`
//! marker is and only if absent.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::Scope;
use crate::kinds::{self, Owned};
use crate::names;
use crate::project::{self, Api, Controller, Project};
use crate::templates::{self, Source, Vars};

/// A line to add above a marker comment in an existing file.
struct Insert {
    path: PathBuf,
    marker: &'static str,
    line: String,
}

/// The changes of one command, relative to the project root.
#[derive(Default)]
struct Plan {
    files: Vec<(PathBuf, String)>,
    inserts: Vec<Insert>,
}

impl Plan {
    fn file(&mut self, path: impl Into<PathBuf>, text: String) {
        self.files.push((path.into(), text));
    }

    fn insert(&mut self, path: &str, marker: &'static str, line: String) {
        self.inserts.push(Insert {
            path: path.into(),
            marker,
            line,
        });
    }

    /// Checks everything, then writes; prints what changed. `project_file` (operon.toml) is
    /// the CLI's own and is always rewritten.
    fn apply(self, root: &Path, project_file: Option<String>) -> Result<()> {
        let mut conflicts = Vec::new();
        for (path, text) in &self.files {
            let full = root.join(path);
            if let Ok(current) = std::fs::read_to_string(&full)
                && current != *text
            {
                conflicts.push(path.display().to_string());
            }
        }
        if !conflicts.is_empty() {
            bail!(
                "refusing to overwrite files that differ from what operon would write (edited \
                 since?): {}. Nothing was changed. Move them away to have them generated again, \
                 or make the change by hand.",
                conflicts.join(", ")
            );
        }
        // New content of every file that gets lines, computed before anything is written.
        let mut edited: Vec<(PathBuf, String)> = Vec::new();
        for insert in &self.inserts {
            let full = root.join(&insert.path);
            let current = match edited.iter().find(|(p, _)| *p == full) {
                Some((_, text)) => text.clone(),
                None => std::fs::read_to_string(&full)
                    .with_context(|| format!("reading {}", insert.path.display()))?,
            };
            let updated = add_line(&current, insert.marker, &insert.line).with_context(|| {
                format!(
                    "{}: the line `// {}` is missing, so operon can't add `{}` there; put \
                     the marker back (where the line belongs) and run the command again",
                    insert.path.display(),
                    insert.marker,
                    insert.line.trim()
                )
            })?;
            match edited.iter_mut().find(|(p, _)| *p == full) {
                Some((_, text)) => *text = updated,
                None => edited.push((full, updated)),
            }
        }

        for (path, text) in self.files {
            let full = root.join(&path);
            if full.exists() {
                println!("unchanged {}", path.display());
                continue;
            }
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&full, text).with_context(|| format!("writing {}", full.display()))?;
            println!("created   {}", path.display());
        }
        for (full, text) in edited {
            let text = if full.extension().is_some_and(|e| e == "rs") {
                templates::rustfmt(&text)?
            } else {
                text
            };
            let shown = full
                .strip_prefix(root)
                .unwrap_or(&full)
                .display()
                .to_string();
            if std::fs::read_to_string(&full).ok().as_deref() == Some(text.as_str()) {
                println!("unchanged {shown}");
            } else {
                std::fs::write(&full, text).with_context(|| format!("writing {shown}"))?;
                println!("updated   {shown}");
            }
        }
        if let Some(text) = project_file {
            let full = root.join(project::FILE);
            if std::fs::read_to_string(&full).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&full, text)?;
                println!("updated   {}", project::FILE);
            }
        }
        Ok(())
    }
}

/// `text` with `line` added above the line holding `// <marker>` (indented like it), unless a
/// line equal to it (trimmed) is already there. `None` when the marker is missing.
fn add_line(text: &str, marker: &str, line: &str) -> Option<String> {
    // Present already, maybe as rustfmt split it over lines.
    let squeeze = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .replace(",)", ")")
            .replace(",]", "]")
    };
    if squeeze(text).contains(&squeeze(line)) {
        return Some(text.to_string());
    }
    let needle = format!("// {marker}");
    let mut out = String::new();
    let mut found = false;
    for l in text.split_inclusive('\n') {
        if !found && l.trim_start().starts_with(&needle) {
            let indent = &l[..l.len() - l.trim_start().len()];
            out.push_str(indent);
            out.push_str(line.trim());
            out.push('\n');
            found = true;
        }
        out.push_str(l);
    }
    found.then_some(out)
}

/// `text` without the line(s) that hold `line` (as [`add_line`] adds it, maybe split over
/// lines by rustfmt); `None` when it is not there.
fn remove_line(text: &str, line: &str) -> Option<String> {
    let squeeze = |s: &str| {
        s.split_whitespace()
            .collect::<String>()
            .replace(",)", ")")
            .replace(",]", "]")
    };
    let wanted = squeeze(line);
    let wanted = wanted.trim_end_matches(',');
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for start in 0..lines.len() {
        // Blank lines around it stay.
        if lines[start].trim().is_empty() {
            continue;
        }
        let mut joined = String::new();
        for end in start..lines.len() {
            joined.push_str(lines[end]);
            let squeezed = squeeze(&joined);
            let squeezed = squeezed.trim_end_matches(',');
            if squeezed == wanted {
                let mut out: String = lines[..start].concat();
                out.push_str(&lines[end + 1..].concat());
                return Some(out);
            }
            if squeezed.len() >= wanted.len() || !wanted.starts_with(squeezed) {
                break;
            }
        }
    }
    None
}

/// `operon delete api`: removes what `create api` (and `create controller` for the kind)
/// added, after checking that none of the files it wrote was edited since.
pub fn delete_api(project: &Project, kind: &str, manifests: bool) -> Result<()> {
    let Some(api) = project.api(kind).cloned() else {
        let known: Vec<&str> = project.apis.iter().map(|a| a.kind.as_str()).collect();
        if let Some(near) = names::near_miss(kind, known.iter().copied()) {
            bail!("the project has no API of kind {kind:?}; did you mean {near}?");
        }
        bail!(
            "the project has no API of kind {kind:?} (it has: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    if let Some(owner) = project
        .controllers
        .iter()
        .find(|c| c.kind != kind && c.owns.iter().any(|o| o == kind))
    {
        bail!(
            "the {} controller owns {kind}s (src/controller/{}.rs): delete it or remove {kind} \
             from what it owns first. Nothing was changed.",
            owner.kind,
            names::snake(&owner.kind)
        );
    }
    let mut plans = vec![api_plan(&api)?];
    if let Some(controller) = project.controllers.iter().find(|c| c.kind == kind) {
        let owned = controller
            .owns
            .iter()
            .map(|o| kinds::resolve(o, &project.apis))
            .collect::<Result<Vec<_>>>()?;
        plans.push(controller_plan(project, &api, &owned)?);
    }
    let root = &project.root;
    // Every file to remove must be exactly what operon wrote; a missing one is gone already.
    let mut edited = Vec::new();
    let mut files = Vec::new();
    for (path, text) in plans.iter().flat_map(|p| &p.files) {
        match std::fs::read_to_string(root.join(path)) {
            Ok(current) if current == *text => files.push(path.clone()),
            Ok(_) => edited.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    if !edited.is_empty() {
        bail!(
            "refusing to delete files that differ from what operon wrote (edited since?): {}. \
             Nothing was changed. Remove them yourself (or restore them), then run `operon delete \
             api --kind {kind}` again for the rest.",
            edited.join(", ")
        );
    }
    // The lines added to shared files, computed before anything is written.
    let mut changed: Vec<(PathBuf, String)> = Vec::new();
    for insert in plans.iter().flat_map(|p| &p.inserts) {
        let current = match changed.iter().find(|(p, _)| *p == insert.path) {
            Some((_, text)) => text.clone(),
            None => std::fs::read_to_string(root.join(&insert.path))
                .with_context(|| format!("reading {}", insert.path.display()))?,
        };
        let Some(updated) = remove_line(&current, &insert.line) else {
            continue;
        };
        match changed.iter_mut().find(|(p, _)| *p == insert.path) {
            Some((_, text)) => *text = updated,
            None => changed.push((insert.path.clone(), updated)),
        }
    }
    let mut updated = project.clone();
    updated.apis.retain(|a| a.kind != kind);
    updated.controllers.retain(|c| c.kind != kind);

    for path in files {
        std::fs::remove_file(root.join(&path))
            .with_context(|| format!("removing {}", path.display()))?;
        println!("removed   {}", path.display());
    }
    for (path, text) in changed {
        std::fs::write(root.join(&path), templates::rustfmt(&text)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("updated   {}", path.display());
    }
    std::fs::write(root.join(project::FILE), updated.render())?;
    println!("updated   {}", project::FILE);
    if manifests {
        // Removes the kind's CRD and rules from config/ (generated files no longer produced).
        generate_manifests(&updated)?;
    } else {
        println!("\nNext: `operon manifests` removes its CRD and RBAC rules from config/");
    }
    Ok(())
}

/// A rendered Rust file, formatted.
fn rust(template: &str, vars: &Vars) -> Result<String> {
    templates::rustfmt(&templates::render(template, vars)?)
}

/// The nearest directory at or above `dir` whose Cargo.toml has a `[workspace]` table.
fn enclosing_workspace(dir: &Path) -> Result<Option<PathBuf>> {
    let mut here = Some(dir);
    while let Some(d) = here {
        let manifest = d.join("Cargo.toml");
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)?;
            let doc: toml_edit::DocumentMut = text
                .parse()
                .with_context(|| format!("parsing {}", manifest.display()))?;
            if doc.get("workspace").is_some() {
                return Ok(Some(d.to_path_buf()));
            }
        }
        here = d.parent();
    }
    Ok(None)
}

/// Adds `member` (relative to the workspace root) to the workspace's members, unless listed
/// or matched by a `dir/*` pattern.
fn add_member(workspace: &Path, member: &str) -> Result<bool> {
    let manifest = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let members = doc["workspace"]
        .as_table_mut()
        .context("[workspace] is not a table")?
        .entry("members")
        .or_insert(toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .with_context(|| format!("{}: workspace.members is not an array", manifest.display()))?;
    let parent = Path::new(member)
        .parent()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let listed = members
        .iter()
        .filter_map(|m| m.as_str())
        .any(|m| m == member || m.strip_suffix("/*").is_some_and(|dir| dir == parent));
    if listed {
        return Ok(false);
    }
    members.push(member);
    std::fs::write(&manifest, doc.to_string())?;
    Ok(true)
}

/// Which Operon crates a new project depends on.
fn source(explicit: Option<&Path>, workspace: Option<&Path>) -> Result<Source> {
    if let Some(ws) = workspace
        && templates::is_operon_checkout(ws)
    {
        return Ok(Source::Workspace);
    }
    if let Some(dir) = explicit {
        let dir = std::path::absolute(dir)?;
        if !templates::is_operon_checkout(&dir) {
            bail!(
                "--operon-source {}: not an Operon checkout (no crates/runtime and crates/envtest)",
                dir.display()
            );
        }
        return Ok(Source::Checkout(std::fs::canonicalize(&dir)?));
    }
    // The checkout this binary was built from, while it is still there.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if templates::is_operon_checkout(&built_from) {
        return Ok(Source::Checkout(std::fs::canonicalize(&built_from)?));
    }
    Ok(Source::Git(templates::GIT_REPOSITORY.to_string()))
}

/// `operon init <name>`.
pub fn new_project(
    dir: &Path,
    name: &str,
    domain: &str,
    operon_source: Option<&Path>,
    manifests: bool,
) -> Result<()> {
    names::check_operator_name(name)?;
    names::check_domain(domain)?;
    let dir = std::path::absolute(dir)?;
    let root = dir.join(name);
    if root.join(project::FILE).is_file() {
        let existing = Project::load(&root)?;
        if existing.name != name || existing.domain != domain {
            bail!(
                "{} is already the project {} (domain {}): choose another name or directory",
                root.display(),
                existing.name,
                existing.domain
            );
        }
    } else if root.exists() && std::fs::read_dir(&root)?.next().is_some() {
        bail!(
            "{} exists and is not an operon project: choose another name or directory",
            root.display()
        );
    }
    let workspace = enclosing_workspace(&dir)?;
    let source = source(operon_source, workspace.as_deref())?;
    let standalone = workspace.is_none();
    let crate_ident = names::crate_ident(name);
    let vars = Vars::from([("name", name.to_string()), ("crate", crate_ident)]);

    let mut plan = Plan::default();
    plan.file(
        "Cargo.toml",
        templates::cargo_toml(name, &source, standalone)?,
    );
    plan.file("src/lib.rs", rust(templates::LIB, &vars)?);
    plan.file("src/main.rs", rust(templates::MAIN, &vars)?);
    plan.file("src/deploy.rs", rust(templates::DEPLOY, &vars)?);
    plan.file("src/api/mod.rs", rust(templates::API_MOD, &vars)?);
    plan.file(
        "src/controller/mod.rs",
        rust(templates::CONTROLLER_MOD, &vars)?,
    );
    plan.file("tests/config.rs", rust(templates::CONFIG_TEST, &vars)?);
    plan.file(
        "Containerfile",
        templates::render(templates::CONTAINERFILE, &vars)?,
    );
    plan.file("README.md", templates::render(templates::README, &vars)?);
    plan.file("Makefile", templates::render(templates::MAKEFILE, &vars)?);
    if standalone {
        plan.file(".gitignore", templates::GITIGNORE.to_string());
    }
    let project = Project {
        root: root.clone(),
        name: name.to_string(),
        domain: domain.to_string(),
        apis: Vec::new(),
        controllers: Vec::new(),
    };
    let project_file = if root.join(project::FILE).is_file() {
        None
    } else {
        Some(project.render())
    };
    plan.apply(&root, project_file)?;

    // The versions Operon is tested with: a standalone project starts from its lock file.
    if let (true, Source::Checkout(checkout)) = (standalone, &source) {
        let lock = checkout.join("Cargo.lock");
        if lock.is_file() && !root.join("Cargo.lock").exists() {
            std::fs::copy(&lock, root.join("Cargo.lock"))?;
            println!("created   Cargo.lock (Operon's, so versions match what it is tested with)");
        }
    }
    if let Some(ws) = &workspace {
        let member = root
            .strip_prefix(ws)
            .context("the project is not under its workspace")?
            .to_string_lossy()
            .to_string();
        if add_member(ws, &member)? {
            println!(
                "updated   {} (workspace member {member})",
                ws.join("Cargo.toml").display()
            );
        }
    }
    if manifests {
        generate_manifests(&Project::load(&root)?)?;
    }
    println!(
        "\nNext: cd {} && operon create api --group <group> --version v1alpha1 --kind <Kind>",
        root.display()
    );
    Ok(())
}

/// config/ for the new code (`operon manifests`): compiles the project.
fn generate_manifests(project: &Project) -> Result<()> {
    println!("\nGenerating config/ (operon manifests; the first build of a project takes minutes)");
    crate::build::manifests(project)
}

/// `operon create api`.
pub fn add_api(
    project: &Project,
    group: &str,
    version: &str,
    kind: &str,
    scope: Scope,
    manifests: bool,
) -> Result<()> {
    names::check_kind(kind)?;
    names::check_version(version)?;
    let group = names::full_group(group, &project.domain)?;
    let plural = names::resource_plural(kind);
    let api = Api {
        group: group.clone(),
        version: version.to_string(),
        kind: kind.to_string(),
        plural: plural.clone(),
        scope,
    };
    let mut updated = project.clone();
    match project.api(kind) {
        Some(existing) if *existing == api => {}
        Some(existing) => bail!(
            "the project already has {kind} ({}/{}, {:?}); one kind is served in one group and \
             version here: remove it first with `operon delete api --kind {kind}`, or pick \
             another kind",
            existing.group,
            existing.version,
            existing.scope,
        ),
        None => {
            if let Some(clash) = project
                .apis
                .iter()
                .find(|a| a.group == group && a.plural == plural)
            {
                bail!(
                    "{plural}.{group} is already the resource of kind {}",
                    clash.kind
                );
            }
            updated.apis.push(api.clone());
        }
    }
    let plan = api_plan(&api)?;
    let snake = names::snake(kind);
    let sample_file = sample_file(&api);
    plan.apply(&project.root, Some(updated.render()))?;
    if manifests {
        generate_manifests(&updated)?;
    }
    println!(
        "\nNext: edit the spec in src/api/{snake}.rs and config/samples/{sample_file}, \
         `operon create controller --kind {kind}`, and `operon manifests` after each change of the \
         types"
    );
    Ok(())
}

/// `config/samples/<file>` of `api`'s sample.
fn sample_file(api: &Api) -> String {
    let group_head = api.group.split('.').next().unwrap_or(&api.group);
    format!(
        "{group_head}_{}_{}.yaml",
        api.version,
        api.kind.to_ascii_lowercase()
    )
}

/// What `create api` writes for `api`.
fn api_plan(api: &Api) -> Result<Plan> {
    let (group, version, kind) = (&api.group, &api.version, &api.kind);
    let snake = names::snake(kind);
    let sample_file = sample_file(api);
    let namespaced = match api.scope {
        Scope::Namespaced => "\n    namespaced,".to_string(),
        Scope::Cluster => String::new(),
    };
    let vars = Vars::from([
        ("group", group.clone()),
        ("version", version.to_string()),
        ("Kind", kind.to_string()),
        ("kind_lower", kind.to_ascii_lowercase()),
        ("plural", api.plural.clone()),
        ("namespaced", namespaced),
    ]);
    let mut plan = Plan::default();
    plan.file(format!("src/api/{snake}.rs"), rust(templates::API, &vars)?);
    plan.file(
        format!("config/samples/{sample_file}"),
        templates::render(templates::SAMPLE, &vars)?,
    );
    plan.insert(
        "src/api/mod.rs",
        "operon:scaffold:api-modules",
        format!("pub mod {snake};"),
    );
    plan.insert(
        "src/api/mod.rs",
        "operon:scaffold:crds",
        format!("{snake}::crd(),"),
    );
    plan.insert(
        "src/api/mod.rs",
        "operon:scaffold:user-resources",
        format!("{snake}::user_resource(),"),
    );
    plan.insert(
        "src/deploy.rs",
        "operon:scaffold:samples",
        format!("(\"{sample_file}\", include_str!(\"../config/samples/{sample_file}\")),"),
    );
    Ok(plan)
}

/// Field name in `Wanted` for owned `kind`: `pods`, `config_maps`, …
fn field(kind: &str) -> String {
    names::plural(&names::snake(kind))
}

/// `operon create controller`.
pub fn add_controller(
    project: &Project,
    kind: &str,
    owns: &[String],
    manifests: bool,
) -> Result<()> {
    let Some(api) = project.api(kind).cloned() else {
        let known: Vec<&str> = project.apis.iter().map(|a| a.kind.as_str()).collect();
        if let Some(near) = names::near_miss(kind, known.iter().copied()) {
            bail!("the project has no API of kind {kind:?}; did you mean {near}?");
        }
        bail!(
            "the project has no API of kind {kind:?} (it has: {}): add it first with `operon \
             create api --group <group> --version <version> --kind {kind}`",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let mut owned: Vec<Owned> = Vec::new();
    for o in owns.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        if o == kind {
            bail!("--owns {o}: a {kind} can't own objects of its own kind here");
        }
        let resolved = kinds::resolve(o, &project.apis)?;
        if !owned.contains(&resolved) {
            owned.push(resolved);
        }
    }
    let controller = Controller {
        kind: kind.to_string(),
        owns: owned.iter().map(|o| o.kind.clone()).collect(),
    };
    let mut updated = project.clone();
    match project.controllers.iter().find(|c| c.kind == kind) {
        Some(existing) if *existing == controller => {}
        Some(existing) => bail!(
            "the {kind} controller exists and owns [{}]; to own [{}], change \
             src/controller/{}.rs by hand (its `Wanted`, children and `rules`), and {}",
            existing.owns.join(", "),
            controller.owns.join(", "),
            names::snake(kind),
            project::FILE
        ),
        None => updated.controllers.push(controller),
    }

    let plan = controller_plan(project, &api, &owned)?;
    let snake = names::snake(kind);
    plan.apply(&project.root, Some(updated.render()))?;
    if manifests {
        generate_manifests(&updated)?;
    }
    println!(
        "\nNext: fill in `desired` in src/controller/{snake}.rs, then `cargo test` and \
         `operon run --local`"
    );
    Ok(())
}

/// What `create controller` writes for the controller of `api` owning `owned`.
fn controller_plan(project: &Project, api: &Api, owned: &[Owned]) -> Result<Plan> {
    let kind = api.kind.as_str();
    let snake = names::snake(kind);
    let mut imports = String::new();
    let mut wanted_fields = String::new();
    let mut owned_rules = String::new();
    let mut owned_kinds = Vec::new();
    let mut children_fields = String::new();
    let mut children_new = String::new();
    let mut children_init = String::new();
    let mut owns_streams = String::new();
    let mut children_reconcile = String::new();
    for o in owned {
        let f = field(&o.kind);
        imports.push_str(&format!("use {};\n", o.path));
        let api_version = if o.group.is_empty() {
            o.version.clone()
        } else {
            format!("{}/{}", o.group, o.version)
        };
        wanted_fields.push_str(&format!(
            "\n    /// The {}s ({api_version}) this {kind} wants.\n    pub {f}: Vec<{}>,",
            o.kind, o.kind
        ));
        owned_rules.push_str(&format!(
            "\n        Rule::new(\"{}\", &[\"{}\"], &[\"list\", \"watch\", \"create\", \"patch\", \"delete\"]),",
            o.group, o.plural
        ));
        owned_kinds.push(format!("(\"{}\", \"{}\")", o.kind, o.version));
        children_fields.push_str(&format!("\n    {f}: Children<{}>,", o.kind));
        children_new.push_str(&format!(
            "\n    let ({f}, {f}_watch) = Children::<{}>::new(manager);",
            o.kind
        ));
        children_init.push_str(&format!("\n        {f},"));
        owns_streams.push_str(&format!("\n    .owns({f}_watch)"));
        children_reconcile.push_str(&format!(
            "\n                outcome.merge(ctx.{f}.reconcile(self, wanted.{f}).await?);"
        ));
    }
    let children_reconcile = if owned.is_empty() {
        "let Wanted {} = wanted;\n                let outcome = Outcome::default();".to_string()
    } else {
        format!("let mut outcome = Outcome::default();{children_reconcile}")
    };
    let api_body = match api.scope {
        Scope::Namespaced => format!(
            "        let namespace = {snake}.namespace().unwrap_or_default();\n        Api::namespaced(self.client.clone(), &namespace)"
        ),
        Scope::Cluster => {
            format!("        let _ = {snake};\n        Api::all(self.client.clone())")
        }
    };
    let test_api = match api.scope {
        Scope::Namespaced => format!(
            "    let ns = env.namespace(\"{}\").await?;\n    let resources: Api<{kind}> = Api::namespaced(env.client().await?, &ns);",
            kind.to_ascii_lowercase()
        ),
        Scope::Cluster => {
            format!("    let resources: Api<{kind}> = Api::all(env.client().await?);")
        }
    };
    let sample_file = sample_file(api);
    let owned_doc = if owned.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = owned.iter().map(|o| o.plural.clone()).collect();
        format!(" ({})", list.join(", "))
    };
    let vars = Vars::from([
        ("name", project.name.clone()),
        ("crate", project.crate_ident()),
        ("group", api.group.clone()),
        ("Kind", kind.to_string()),
        ("kind_lower", kind.to_ascii_lowercase()),
        ("kind_snake", snake.clone()),
        ("plural", api.plural.clone()),
        ("owned_imports", imports),
        (
            "owned_uses",
            if owned.is_empty() {
                "self, Outcome"
            } else {
                "self, Children, Outcome"
            }
            .to_string(),
        ),
        ("owned_doc", owned_doc),
        (
            "wanted_fields",
            if owned.is_empty() {
                String::new()
            } else {
                format!("{wanted_fields}\n")
            },
        ),
        ("owned_rules", owned_rules),
        ("owned_kinds", owned_kinds.join(", ")),
        ("children_fields", children_fields),
        ("children_new", children_new),
        ("children_init", children_init),
        ("owns_streams", owns_streams),
        ("children_reconcile", children_reconcile),
        ("api_body", api_body),
        ("test_api", test_api),
        ("sample_file", sample_file),
    ]);
    let mut plan = Plan::default();
    plan.file(
        format!("src/controller/{snake}.rs"),
        rust(templates::CONTROLLER, &vars)?,
    );
    plan.file(
        format!("tests/{snake}_controller.rs"),
        rust(templates::CONTROLLER_TEST, &vars)?,
    );
    let module = "src/controller/mod.rs";
    plan.insert(
        module,
        "operon:scaffold:controller-modules",
        format!("pub mod {snake};"),
    );
    plan.insert(
        module,
        "operon:scaffold:rules",
        format!("{snake}::rules(),"),
    );
    plan.insert(
        module,
        "operon:scaffold:owned-kinds",
        format!("{snake}::owned_kinds(),"),
    );
    plan.insert(
        module,
        "operon:scaffold:controllers",
        format!("{snake}::register(manager, settings);"),
    );
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_above_their_marker_once() {
        let text = "fn f() {\n    vec![\n        // operon:scaffold:x (note)\n    ]\n}\n";
        let once = add_line(text, "operon:scaffold:x", "a(),").expect("marker");
        assert_eq!(
            once,
            "fn f() {\n    vec![\n        a(),\n        // operon:scaffold:x (note)\n    ]\n}\n"
        );
        assert_eq!(
            add_line(&once, "operon:scaffold:x", "a(),").as_deref(),
            Some(once.as_str())
        );
        assert!(add_line("fn f() {}\n", "operon:scaffold:x", "a(),").is_none());
        // rustfmt splits long lines and adds a trailing comma: still the same line.
        let split =
            "&[\n    (\n        \"a\",\n        b(\"c\"),\n    ),\n    // operon:scaffold:x\n];\n";
        let unchanged = add_line(split, "operon:scaffold:x", "(\"a\", b(\"c\")),");
        assert_eq!(unchanged.as_deref(), Some(split));
    }

    #[test]
    fn lines_are_removed_as_they_were_added() {
        let text = "use a;\n\n// operon:scaffold:x\n";
        let added = add_line(text, "operon:scaffold:x", "pub mod b;").expect("marker");
        assert_eq!(remove_line(&added, "pub mod b;").as_deref(), Some(text));
        let split =
            "&[\n    (\n        \"a\",\n        b(\"c\"),\n    ),\n    // operon:scaffold:x\n];\n";
        assert_eq!(
            remove_line(split, "(\"a\", b(\"c\")),").as_deref(),
            Some("&[\n    // operon:scaffold:x\n];\n")
        );
        assert_eq!(remove_line("pub mod bb;\n", "pub mod b;"), None);
    }

    #[test]
    fn field_names() {
        assert_eq!(field("Pod"), "pods");
        assert_eq!(field("ConfigMap"), "config_maps");
        assert_eq!(field("NetworkPolicy"), "network_policies");
        assert_eq!(field("Ingress"), "ingresses");
    }
}

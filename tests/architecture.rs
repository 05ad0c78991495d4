#![cfg(not(target_arch = "wasm32"))]
//! The workspace's architecture, checked: which crate may depend on which (runtime <- scene
//! graph <- LINA <- probe <- apps; the second judge beside the probe, on the scene graph
//! alone), that nothing running during sampling can reach either judge, that the two judges
//! share no code, and that no module of a crate imports one that imports it back.
//!
//! Read from the manifests and sources themselves, so that a new dependency or import that
//! breaks a rule fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Each crate of the workspace: its folder and the workspace crates it may depend on.
const LAYERS: &[(&str, &str, &[&str])] = &[
    ("lina-runtime", ".", &[]),
    ("lina-csg", "crates/csg", &["lina-runtime"]),
    ("lina", "crates/lina", &["lina-runtime", "lina-csg"]),
    (
        "lina-probe",
        "crates/probe",
        &["lina-runtime", "lina-csg", "lina"],
    ),
    // The second judge: the scene graph's types and nothing else of ours (and through them
    // the runtime), so that it shares no code with the probe's checker.
    ("lina-judge", "crates/judge", &["lina-runtime", "lina-csg"]),
    (
        "lina-web",
        "crates/web",
        &["lina-runtime", "lina-csg", "lina", "lina-probe"],
    ),
    (
        "lina-cli",
        "crates/cli",
        &[
            "lina-runtime",
            "lina-csg",
            "lina",
            "lina-probe",
            "lina-judge",
        ],
    ),
];

/// The workspace crates a manifest's non-dev dependency tables name.
fn workspace_dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let names: BTreeSet<&str> = LAYERS.iter().map(|(name, _, _)| *name).collect();
    let mut in_dependencies = false;
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            // `[dependencies]` and `[target.'cfg(..)'.dependencies]`, not dev- or build-.
            let table = line.trim_matches(|c| c == '[' || c == ']');
            in_dependencies = table == "dependencies"
                || (table.ends_with(".dependencies") && table != "workspace.dependencies");
            continue;
        }
        if !in_dependencies {
            continue;
        }
        let key = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or_default()
            .trim();
        if names.contains(key) {
            found.insert(key.to_string());
        }
    }
    found
}

#[test]
fn each_crate_depends_only_on_the_layers_below_it() {
    for (name, folder, allowed) in LAYERS {
        let manifest = Path::new(ROOT).join(folder).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(
            text.contains(&format!("name = \"{name}\"")),
            "{} is not the manifest of {name}",
            manifest.display()
        );
        for dep in workspace_dependencies(&manifest) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} depends on {dep}; it may depend only on {allowed:?}"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file of a crate folder's `src/`.
fn sources(folder: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join(folder).join("src"), &mut files);
    assert!(!files.is_empty(), "{folder}/src has no sources");
    files
}

#[test]
fn no_judge_steers_what_runs_while_sampling() {
    // The runtime, the scene graph and LINA's interventions run during sampling: none of them
    // may name either judge (the probe's checker, segmenter or palette; the second judge),
    // even through a path. And the second judge names nothing of the probe.
    let rules: [(&str, &[&str]); 4] = [
        (".", &["lina_probe", "lina_judge"]),
        ("crates/csg", &["lina_probe", "lina_judge"]),
        ("crates/lina", &["lina_probe", "lina_judge"]),
        ("crates/judge", &["lina_probe"]),
    ];
    for (folder, forbidden) in rules {
        for file in sources(folder) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for name in forbidden {
                    assert!(
                        !code.contains(name),
                        "{}:{}: names {name}: {line}",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }
    // And the runtime knows nothing of LINA or its scene graph.
    for file in sources(".") {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(
                !code.contains("lina_csg") && !code.contains("lina::"),
                "{}:{}: the runtime names a layer above it: {line}",
                file.display(),
                n + 1
            );
        }
    }
}

/// The module a source file is, by its path under `src/` (`models/unet.rs` -> `models::unet`,
/// `schedulers/mod.rs` -> `schedulers`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod" && p != "lib" && p != "main")
        .collect();
    parts.join("::")
}

/// The crate-local modules a file of module `module` imports: `crate::a::b` names module
/// `a::b` where that is a module, else `a`; `super::` and `self::` paths are read from
/// `module` (in `a::b`, `super::c` is `a::c`), and a braced group (`use super::{c::X, d}`)
/// names each of its paths.
fn imports(text: &str, modules: &BTreeSet<String>, module: &str) -> BTreeSet<String> {
    // Code only: a doc comment that links to another module imports nothing.
    let text: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    let mut found = BTreeSet::new();
    for (base, prefix) in [("", "crate::"), (parent, "super::"), (module, "self::")] {
        for (i, _) in text.match_indices(prefix) {
            // `crate::` inside a longer name (`my_crate::`) is not this crate.
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            for path in paths(rest) {
                let mut segments: Vec<&str> = base.split("::").filter(|s| !s.is_empty()).collect();
                segments.extend(path.split("::").filter(|s| !s.is_empty()));
                // The longest prefix that is a module.
                for len in (1..=segments.len()).rev() {
                    let candidate = segments[..len].join("::");
                    if modules.contains(&candidate) {
                        found.insert(candidate);
                        break;
                    }
                }
            }
        }
    }
    found
}

/// The paths at the start of `rest`, what follows a `crate::`: one (`a::b::Thing`), or each
/// of a braced group's (`{a::Thing, b::{c, d}}` gives `a::Thing`, `b::c` and `b::d`).
fn paths(rest: &str) -> Vec<String> {
    let head: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let after = &rest[head.len()..];
    if !after.starts_with('{') {
        return vec![head];
    }
    // The group's text, up to its closing brace.
    let mut depth = 0;
    let mut end = after.len();
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &after[1..end];
    // Split at the group's own commas, not those of nested groups.
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .flat_map(paths)
        .map(|p| format!("{head}{p}"))
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut mutual = Vec::new();
    for (name, folder, _) in LAYERS {
        let src = Path::new(ROOT).join(folder).join("src");
        let files = sources(folder);
        let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let module = module_of(&src, file);
            let text = std::fs::read_to_string(file).unwrap();
            // Unit tests may reach anywhere in their crate.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let text = text.split("#[cfg(all(test").next().unwrap_or_default();
            let mut uses = imports(text, &modules, &module);
            uses.retain(|m| *m != module && !m.starts_with(&format!("{module}::")));
            graph.entry(module).or_default().extend(uses);
        }
        for (a, uses) in &graph {
            for b in uses {
                // A parent module and its children are one unit (`schedulers` and
                // `schedulers::ddim`); only modules apart from each other count.
                if a.starts_with(&format!("{b}::")) {
                    continue;
                }
                if a < b && graph.get(b).is_some_and(|back| back.contains(a)) {
                    mutual.push(format!("{name}: `{a}` and `{b}` import each other"));
                }
            }
        }
    }
    assert!(mutual.is_empty(), "{}", mutual.join("\n"));
}

#[test]
fn the_checks_above_can_fail() {
    // The import reader finds a mutual pair where there is one.
    let modules: BTreeSet<String> = ["a", "b", "b::c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        imports(
            "use crate::b::c::Thing; crate::a::f(); // see crate::b",
            &modules,
            "d"
        ),
        ["a", "b::c"].iter().map(|s| s.to_string()).collect()
    );
    // A sibling through `super::` (from `b::e`, `super::c` is `b::c`), each path of a braced
    // group, and no other crate's `crate::`.
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let modules = set(&["a", "b", "b::c", "b::d", "b::e"]);
    assert_eq!(
        imports("use super::c::Thing; my_crate::a::f();", &modules, "b::e"),
        set(&["b::c"])
    );
    assert_eq!(
        imports("use super::{c::X, d::{Y, Z}};", &modules, "b::e"),
        set(&["b::c", "b::d"])
    );
    assert_eq!(
        imports("use crate::{a::X, b::d};", &modules, "b::e"),
        set(&["a", "b::d"])
    );
    // The manifest reader sees a dependency on the probe in a target table.
    let dir = std::env::temp_dir().join(format!("lina-architecture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("Cargo.toml");
    std::fs::write(
        &manifest,
        "[package]\nname = \"x\"\n\n[target.'cfg(unix)'.dependencies]\nlina-probe.workspace = true\n\n[dev-dependencies]\nlina-web = { path = \"..\" }\n",
    )
    .unwrap();
    assert_eq!(
        workspace_dependencies(&manifest),
        ["lina-probe".to_string()].into_iter().collect()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

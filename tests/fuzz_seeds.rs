//! The fuzz targets' committed seeds (`fuzz/corpus/TARGET/`), replayed through the targets'
//! own checks (`fuzz/src/lib.rs`, compiled here as a module) in every test run. The seeds hold
//! the inputs that once broke a parser and every malformed kind the targets know, so this is
//! the regression half of fuzzing; the coverage-guided half, which needs an instrumented build
//! of its own, is `scripts/fuzz.sh` (docs/hardening.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
mod checks;

/// A target's check: it panics on input that breaks a promise.
type Check = fn(&[u8]);

/// Each target's name, as its corpus folder and its `fuzz/fuzz_targets/` file are named.
const TARGETS: &[(&str, Check)] = &[
    ("weights", checks::weights),
    ("config", checks::config),
    ("tokenizer", checks::tokenizer),
    ("csg_json", checks::csg_json),
    ("prompt", checks::prompt),
    ("lora", checks::lora),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_target_has_a_replay_and_seeds() {
    let mut known: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    known.sort();
    let targets: Vec<String> = names_in(&root().join("fuzz/fuzz_targets"))
        .into_iter()
        .map(|file| file.trim_end_matches(".rs").to_string())
        .collect();
    assert_eq!(targets, known, "fuzz/fuzz_targets/ and this test's TARGETS");
    assert_eq!(names_in(&root().join("fuzz/corpus")), known, "fuzz/corpus/");
}

#[test]
fn every_seed_passes_its_targets_checks() {
    // A seed that breaks a check is reported by name, and the rest still run.
    let mut failures = Vec::new();
    let mut seeds = 0;
    for (target, check) in TARGETS {
        let dir = root().join("fuzz/corpus").join(target);
        let names = names_in(&dir);
        assert!(!names.is_empty(), "{}: no seeds", dir.display());
        for name in names {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            seeds += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{target}/{name}: {message}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Shared helpers for the CLI tests: fixture paths, copying trees, running
//! the built `touchline` binary.
#![allow(dead_code, clippy::unwrap_used)]

pub mod server;
pub mod webhook;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tests/data/<rel>` at the repository root.
pub fn data(rel: &str) -> PathBuf {
    repo_root().join("tests/data").join(rel)
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A `touchline` command.
pub fn touchline() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("touchline").unwrap()
}

/// Whether this run is in CI (where every external tool must be present).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Looks a program up on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Returns the program's path; outside CI, `None` with a printed reason when
/// it is missing; in CI, a missing tool fails the test.
pub fn require_tool(program: &str, install_hint: &str) -> Option<PathBuf> {
    match which(program) {
        Some(p) => Some(p),
        None if in_ci() => panic!("`{program}` is required in CI: {install_hint}"),
        None => {
            eprintln!(
                "SKIPPED: `{program}` is not installed ({install_hint}); `.ci/run` installs it"
            );
            None
        }
    }
}

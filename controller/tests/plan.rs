//! `touchline plan` on the corpus `tests/data/plan/<case>/`: the base is
//! `tests/data/base/` committed, the head is that tree with the case's files
//! laid over it (and the paths listed in `remove` removed) committed on
//! top. `expect.md`, `expect.json` and `code` hold the exact Markdown, JSON
//! and exit status (commit ids in the JSON are not compared: there are
//! none). `TOUCHLINE_BLESS=1` rewrites them from the current output
//! (review the diff before committing).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use touchline_testkit::{Repo, bin};

const CONTROL: [&str; 4] = ["remove", "expect.md", "expect.json", "code"];

fn overlay(from: &Path, rel: &Path, into: &Path) {
    for e in std::fs::read_dir(from.join(rel)).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if rel.as_os_str().is_empty() && CONTROL.contains(&name.to_str().unwrap()) {
            continue;
        }
        let child = rel.join(&name);
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(into.join(&child)).unwrap();
            overlay(from, &child, into);
        } else {
            std::fs::copy(e.path(), into.join(&child)).unwrap();
        }
    }
}

/// A checkout whose manifests live in `fleet/` (a folder of a larger
/// repository, as CI jobs see it): base committed, then the case.
fn repo_for(case: &Path, dir: &Path) -> std::path::PathBuf {
    let fleet = dir.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    touchline_testkit::copy_tree(&touchline_testkit::data("base"), &fleet);
    std::fs::write(dir.join("README.md"), "the project\n").unwrap();
    let repo = Repo::init(dir);
    repo.commit("base");
    overlay(case, Path::new(""), &fleet);
    if let Ok(list) = std::fs::read_to_string(case.join("remove")) {
        for rel in list.lines().filter(|l| !l.trim().is_empty()) {
            std::fs::remove_file(fleet.join(rel.trim())).unwrap();
        }
    }
    repo.commit("head");
    fleet
}

fn plan(fleet: &Path, format: &str) -> (i32, String, String) {
    let out = Command::new(bin("touchline"))
        .args(["plan"])
        .arg(fleet)
        .args(["--base", "HEAD~1", "--head", "HEAD", "--format", format])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plan_corpus_prints_the_exact_markdown_json_and_exit_status() {
    let bless = std::env::var_os("TOUCHLINE_BLESS").is_some();
    let root = touchline_testkit::data("plan");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let fleet = repo_for(case, tmp.path());
        let (code, md, md_err) = plan(&fleet, "markdown");
        let (code_json, json, _) = plan(&fleet, "json");
        assert_eq!(code, code_json, "{name}: same status for both formats");
        let got_code = format!("{code}\n");
        // Exit 2 prints the diagnostics and the reason on stderr.
        let md = if code == 2 {
            format!("{md}--- stderr\n{md_err}")
        } else {
            md
        };
        if bless {
            std::fs::write(case.join("expect.md"), &md).unwrap();
            std::fs::write(case.join("expect.json"), &json).unwrap();
            std::fs::write(case.join("code"), &got_code).unwrap();
            continue;
        }
        for (file, got) in [
            ("expect.md", &md),
            ("expect.json", &json),
            ("code", &got_code),
        ] {
            let want = std::fs::read_to_string(case.join(file)).unwrap_or_default();
            if &want != got {
                failures.push(format!("{name}/{file}:\n--- want\n{want}\n--- got\n{got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_bad_revision_or_a_directory_outside_git_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = repo_for(&touchline_testkit::data("plan/no-change"), tmp.path());
    let out = Command::new(bin("touchline"))
        .args(["plan"])
        .arg(&fleet)
        .args(["--base", "no-such-branch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot resolve revision `no-such-branch`"),
        "{err}"
    );
    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(bin("touchline"))
        .args(["plan"])
        .arg(outside.path())
        .args(["--base", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in a git checkout"));
}

//! The corpus of broken manifests under `tests/data/bad/`: each case is the
//! valid fixture `tests/data/base/` with some files replaced (the case
//! directory's files), removed (listed in `remove`) or generated (listed in
//! `generate` as `<path> <bytes>`). `expect` holds the exact diagnostics
//! `touchline validate` must print, in order. `TOUCHLINE_BLESS=1` rewrites
//! `expect` from the current output (review the diff before committing).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;

const CONTROL_FILES: [&str; 3] = ["expect", "remove", "generate"];

fn overlay(case: &Path, rel: &Path, into: &Path) {
    for entry in std::fs::read_dir(case.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let rel_child = rel.join(&name);
        if rel.as_os_str().is_empty() && CONTROL_FILES.contains(&name.to_str().unwrap()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(into.join(&rel_child)).unwrap();
            overlay(case, &rel_child, into);
        } else {
            std::fs::copy(entry.path(), into.join(&rel_child)).unwrap();
        }
    }
}

/// Builds the case's manifests tree in `dir`.
pub fn build_case(case: &Path, dir: &Path) {
    touchline_testkit::copy_tree(&touchline_testkit::data("base"), dir);
    overlay(case, Path::new(""), dir);
    if let Ok(list) = std::fs::read_to_string(case.join("remove")) {
        for rel in list.lines().filter(|l| !l.trim().is_empty()) {
            std::fs::remove_file(dir.join(rel.trim())).unwrap();
        }
    }
    if let Ok(list) = std::fs::read_to_string(case.join("generate")) {
        for line in list.lines().filter(|l| !l.trim().is_empty()) {
            let (rel, size) = line.split_once(' ').unwrap();
            let size: usize = size.trim().parse().unwrap();
            let mut f = std::fs::File::create(dir.join(rel)).unwrap();
            let line = format!("# {}\n", "x".repeat(77));
            let mut written = 0;
            while written < size {
                f.write_all(line.as_bytes()).unwrap();
                written += line.len();
            }
        }
    }
}

#[test]
fn base_fixture_is_valid() {
    let out = common::touchline()
        .arg("validate")
        .arg(touchline_testkit::data("base"))
        .assert()
        .success();
    let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert_eq!(stdout, "0 errors, 0 warnings in 8 files\n");
}

#[test]
fn every_bad_case_reports_exactly_its_problems() {
    let bless = std::env::var_os("TOUCHLINE_BLESS").is_some();
    let root = touchline_testkit::data("bad");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 25,
        "the corpus must hold at least 25 cases, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        build_case(case, tmp.path());
        let out = common::touchline()
            .arg("validate")
            .arg(tmp.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let mut lines: Vec<&str> = stdout.lines().collect();
        let summary = lines.pop().unwrap_or_default().to_owned();
        let errors = lines.iter().filter(|l| l.contains(": error: ")).count();
        let warnings = lines.iter().filter(|l| l.contains(": warning: ")).count();
        assert_eq!(
            errors + warnings,
            lines.len(),
            "{name}: unexpected output {stdout}"
        );
        assert!(
            summary.starts_with(&format!(
                "{errors} error{}, {warnings} warning{} in ",
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" }
            )),
            "{name}: summary `{summary}`"
        );
        let want_code = if errors > 0 { 1 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(want_code),
            "{name}: exit status; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = lines.join("\n") + "\n";
        let expect_path = case.join("expect");
        if bless {
            std::fs::write(&expect_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expect_path).unwrap_or_default();
        if got != want {
            failures.push(format!("--- {name}\nwant:\n{want}got:\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_problem_never_stops_the_others_from_being_reported() {
    let tmp = tempfile::tempdir().unwrap();
    build_case(&touchline_testkit::data("bad/several-problems"), tmp.path());
    // Also break another file: both files' problems are reported in one run.
    std::fs::write(
        tmp.path().join("groups/pilot.yaml"),
        "id: pilot\npriority: [\n",
    )
    .unwrap();
    let out = common::touchline()
        .arg("validate")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("groups/pilot.yaml:"), "{stdout}");
    assert!(stdout.contains("sites/alpha.yaml:"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

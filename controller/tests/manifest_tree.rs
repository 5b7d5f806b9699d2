//! The shape of a manifests tree that someone with push access may get
//! wrong or abuse: a symlinked or submodule folder is said and never
//! followed, and a file name with a newline cannot forge a diagnostic.
#![allow(clippy::unwrap_used)]

mod common;

use touchline_controller::git::Follower;
use touchline_controller::source;
use touchline_testkit::{Repo, data, git};

fn validate(dir: &std::path::Path) -> String {
    let out = common::touchline()
        .arg("validate")
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_symlinked_folder_is_not_followed_and_control_characters_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    touchline_testkit::copy_tree(&data("base"), &m);
    std::fs::rename(m.join("sites"), tmp.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), m.join("sites")).unwrap();
    // A name that, printed raw, would start a line of its own.
    std::fs::write(m.join("groups/evil\nforged: error: x.yaml"), "id: evil\n").unwrap();
    let out = validate(&m);
    assert!(
        out.contains("sites:1:1: warning: ignored: symbolic links are not followed\n"),
        "{out}"
    );
    assert!(
        out.contains("groups/evil\\nforged: error: x.yaml:1:1: warning: ignored: the name holds a control character\n"),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("forged")),
        "a forged line: {out}"
    );
}

#[test]
fn in_git_a_symlinked_folder_and_a_submodule_are_said_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    touchline_testkit::copy_tree(&data("base"), &dir);
    std::fs::remove_dir_all(dir.join("sites")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("sites")).unwrap();
    std::fs::remove_dir_all(dir.join("groups")).unwrap();
    let repo = Repo::init(&dir);
    let head = repo.commit("fleet");
    // A submodule entry where `groups/` should be.
    git(
        &dir,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},groups"),
        ],
    );
    git(&dir, &["commit", "-q", "-m", "submodule"]);
    let f = Follower::open(&tmp.path().join("data"), dir.to_str().unwrap(), "main").unwrap();
    let tip = f.fetch().unwrap();
    let set = f.source_set(tip).unwrap();
    let skipped: Vec<(String, &str)> = set
        .skipped
        .iter()
        .map(|s| (s.path.to_string(), s.reason))
        .collect();
    assert!(
        skipped.contains(&("sites".into(), source::SKIP_SYMLINK)),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&("groups".into(), source::SKIP_SUBMODULE)),
        "{skipped:?}"
    );
    assert!(set.files.iter().all(|f| !f.path.starts_with("sites/")));
}

//! The `touchline` CLI, tested through the built binary.
#![allow(clippy::unwrap_used)]

mod common;

use touchline_testkit::Repo;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::touchline;
use touchline_schemas::{Bundle, Sha256};

fn fleet() -> std::path::PathBuf {
    touchline_testkit::repo_root().join("fleet-manifests")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `touchline verify --key <key> <bundle> <sig>`.
fn verify(key: &Path, bundle: &Path, sig: &Path) -> std::process::Output {
    touchline()
        .args(["verify", "--key"])
        .arg(key)
        .arg(bundle)
        .arg(sig)
        .output()
        .unwrap()
}

#[test]
fn the_example_fleet_is_valid() {
    let out = touchline().arg("validate").arg(fleet()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), "0 errors, 0 warnings in 25 files\n");
}

#[test]
fn validate_json_output_and_exit_2_when_it_cannot_run() {
    let out = touchline()
        .args(["validate", "--format", "json"])
        .arg(fleet())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["files"], 25);

    let out = touchline()
        .args(["validate", "/nonexistent/manifests"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`/nonexistent/manifests` is not a directory"),
        "{}",
        stderr(&out)
    );

    let out = touchline()
        .arg("validate")
        .arg(fleet().join("fleet.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn render_is_byte_identical_across_runs_and_canonical() {
    let run = || {
        let out = touchline()
            .args(["render", "--site", "cesson-handball"])
            .arg(fleet())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let a = run();
    let b = run();
    assert_eq!(a, b);
    let bundle = Bundle::from_slice(&a).unwrap();
    assert_eq!(
        bundle.to_canonical_json(),
        a,
        "output is the canonical encoding"
    );
    assert_eq!(bundle.site.as_str(), "cesson-handball");
    assert_eq!(
        bundle.software.as_ref().unwrap().version.to_string(),
        "2.1.3"
    );
    assert_eq!(
        bundle.config["club"]["name"],
        "Cesson Rennes Métropole Handball"
    );
    assert!(
        bundle
            .files
            .iter()
            .any(|f| f.path.as_str() == "Entraînement/Handball/contre-attaque.mp4")
    );
    assert!(bundle.expires_at > bundle.issued_at);
}

#[test]
fn serial_and_commit_come_from_git() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("m");
    touchline_testkit::copy_tree(&fleet(), &repo);
    let r = Repo::init(&repo);
    r.commit("one");
    let head = r.file("README.md", "x").commit("two");
    let out = touchline()
        .args(["render", "--site", "vannes-rugby"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let b = Bundle::from_slice(&out.stdout).unwrap();
    assert_eq!(b.serial, 2);
    assert_eq!(b.commit.as_deref(), Some(head.as_str()));
    // Explicit flags win.
    let out = touchline()
        .args([
            "render",
            "--site",
            "vannes-rugby",
            "--serial",
            "41",
            "--issued-at",
            "2026-01-02T03:04:05Z",
        ])
        .arg(&repo)
        .output()
        .unwrap();
    let b = Bundle::from_slice(&out.stdout).unwrap();
    assert_eq!(b.serial, 41);
    assert_eq!(b.issued_at.to_string(), "2026-01-02T03:04:05Z");
    assert_eq!(b.expires_at.to_string(), "2026-01-09T03:04:05Z");
}

#[test]
fn render_all_signs_every_site_and_verify_accepts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    touchline()
        .args(["keygen", "--out"])
        .arg(&key)
        .assert()
        .success();
    let out_dir = tmp.path().join("out");
    let out = touchline()
        .args(["render", "--all", "--out"])
        .arg(&out_dir)
        .arg("--key")
        .arg(&key)
        .arg(fleet())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rendered 12 sites"),
        "{}",
        stderr(&out)
    );
    let mut sites = 0;
    for entry in std::fs::read_dir(&out_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            sites += 1;
            let sig = p.with_extension("json.sig");
            let v = verify(&key.with_extension("pub"), &p, &sig);
            assert!(v.status.success(), "{}", stderr(&v));
            assert!(
                stdout(&v).starts_with("OK: bundle for site "),
                "{}",
                stdout(&v)
            );
        }
    }
    assert_eq!(sites, 12);
    // Same bytes as `render --site`.
    let one = touchline()
        .args(["render", "--site", "massy-rugby"])
        .arg(fleet())
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read(out_dir.join("massy-rugby.json")).unwrap(),
        one.stdout
    );
}

#[test]
fn verify_rejects_tampering_other_keys_and_other_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    let other = tmp.path().join("other");
    touchline()
        .args(["keygen", "--out"])
        .arg(&key)
        .assert()
        .success();
    touchline()
        .args(["keygen", "--out"])
        .arg(&other)
        .assert()
        .success();
    let out_dir = tmp.path().join("out");
    touchline()
        .args(["render", "--all", "--out"])
        .arg(&out_dir)
        .arg("--key")
        .arg(&key)
        .arg(fleet())
        .assert()
        .success();
    let bundle = out_dir.join("brest-basket.json");
    let sig = out_dir.join("brest-basket.json.sig");

    let v = verify(&other.with_extension("pub"), &bundle, &sig);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("signed by untrusted key SHA256:"),
        "{}",
        stderr(&v)
    );

    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[10] ^= 1;
    let tampered = tmp.path().join("tampered.json");
    std::fs::write(&tampered, &bytes).unwrap();
    let v = verify(&key.with_extension("pub"), &tampered, &sig);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("does not match the bundle bytes"),
        "{}",
        stderr(&v)
    );

    let v = touchline()
        .args(["verify", "--site", "vannes-rugby", "--key"])
        .arg(key.with_extension("pub"))
        .arg(&bundle)
        .arg(&sig)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stderr(&v).contains("bundle is for site `brest-basket`, not `vannes-rugby`"),
        "{}",
        stderr(&v)
    );
}

#[test]
fn render_refuses_invalid_manifests_and_unknown_sites() {
    let tmp = tempfile::tempdir().unwrap();
    touchline_testkit::copy_tree(&fleet(), tmp.path());
    let out = touchline()
        .args(["render", "--site", "nope"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no site `nope` in the manifests"),
        "{}",
        stderr(&out)
    );

    std::fs::write(tmp.path().join("groups/all.yaml"), "id: all\nprioriti: 3\n").unwrap();
    let out = touchline()
        .args(["render", "--site", "vannes-rugby"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("groups/all.yaml:2:1: error: unknown field `prioriti`"),
        "{err}"
    );
    assert!(err.contains("are invalid (1 errors)"), "{err}");
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("signing");
    let out = touchline()
        .args(["keygen", "--comment", "ctl@test", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    assert_eq!(stdout(&out), public);
    assert!(
        public.starts_with("ssh-ed25519 AAAA") && public.trim_end().ends_with("ctl@test"),
        "{public}"
    );
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    );
    // No silent overwrite.
    let again = touchline()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists; pass --force"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(key.with_extension("pub")).unwrap(),
        public
    );
}

#[test]
fn render_refuses_a_bad_key_before_doing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    std::fs::write(&key, "not a key").unwrap();
    let out_dir = tmp.path().join("out");
    let out = touchline()
        .args(["render", "--all", "--out"])
        .arg(&out_dir)
        .arg("--key")
        .arg(&key)
        .arg(fleet())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("failed to load key file"),
        "{}",
        stderr(&out)
    );
    assert!(!out_dir.exists());
}

#[test]
fn explain_names_the_line_behind_each_value() {
    let out = touchline()
        .args(["explain", "--site", "cesson-handball"])
        .arg(fleet())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("version 2.1.3  set by groups/beta-testers.yaml:"),
        "{text}"
    );
    assert!(text.contains("overrides 2.1.2 from fleet.yaml:"), "{text}");
    assert!(
        text.contains("group beta-testers (priority 100): listed at groups/beta-testers.yaml:"),
        "{text}"
    );
    assert!(
        text.contains("/display/volume = 60  set by groups/handball.yaml:"),
        "{text}"
    );
    assert!(text.contains("+ training-handball-contre-attaque  Entraînement/Handball/contre-attaque.mp4  added by groups/handball.yaml:"), "{text}");

    let out = touchline()
        .args(["explain", "--format", "json", "--site", "ivry-handball"])
        .arg(fleet())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["videos"]["warmup-stretching-2019"]["removed_by"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("groups/ile-de-france.yaml")
    );
}

#[test]
fn generated_example_content_matches_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let out = touchline()
        .args(["content", "generate-example", "--out"])
        .arg(tmp.path())
        .arg(fleet())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(tmp.path().join("Sponsors/Bretagne/breizh-cola-15s.mp4")).unwrap();
    let catalog = std::fs::read_to_string(fleet().join("videos/catalog.yaml")).unwrap();
    let hash = Sha256::digest(&bytes).to_hex();
    assert!(
        catalog.contains(&format!("sha256: {hash}\n    size: {}\n", bytes.len())),
        "catalog does not name {hash}"
    );

    // A catalog that disagrees with the bytes is reported with its line.
    let m = tmp.path().join("m");
    touchline_testkit::copy_tree(&fleet(), &m);
    std::fs::write(
        m.join("videos/catalog.yaml"),
        catalog.replacen(&hash, &"0".repeat(64), 1),
    )
    .unwrap();
    let out = touchline()
        .args(["content", "generate-example", "--out"])
        .arg(tmp.path().join("o2"))
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("videos/catalog.yaml:"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("1 of 22 generated files do not match"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "validate", "render", "explain", "keygen", "verify", "content",
    ] {
        let out = touchline().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd}");
        assert!(stdout(&out).contains("Usage: touchline"), "{cmd}");
    }
}

//! `touchline backup` while the controller runs and `touchline restore`:
//! the restored controller serves byte-identical bundles and content, takes
//! the same site tokens, and has every report but those sent after the
//! backup. Damaged backups are refused and restore nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use touchline_testkit::{ControllerFiles, OPERATOR, RunningController};

use common::touchline;

const SITES: [&str; 2] = ["angers-football", "brest-basket"];
/// An admin operator's token.
const BOSS: &str = "admin-token-for-the-backup-test-0123456789";

fn report(seq: u64, at: &str) -> Value {
    json!({"seq": seq, "at": at, "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1},
           "metrics": {"cpu_percent": 12.5, "temperature_c": 61.0, "disk_used_bytes": 10, "disk_total_bytes": 100}})
}

fn post_report(c: &RunningController, site: &str, token: &str, seq: u64, at: &str) {
    let batch = json!({"format": 1, "site": site, "reports": [report(seq, at)]});
    let r = c
        .http
        .post(format!("{}/v1/sites/{site}/reports", c.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Each site's bundle, signature and first content file, fetched with its token.
fn served(c: &RunningController, tokens: &[String]) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    SITES
        .iter()
        .zip(tokens)
        .map(|(site, tok)| {
            let get = |p: &str| {
                let r = c.get(p, Some(tok));
                assert_eq!(r.status(), StatusCode::OK, "{p}");
                r.bytes().unwrap().to_vec()
            };
            let body = get(&format!("/v1/sites/{site}/bundle"));
            let sig = get(&format!("/v1/sites/{site}/bundle.sig"));
            let b = touchline_schemas::Bundle::from_slice(&body).unwrap();
            let content = get(&format!("/v1/content/{}", b.files[0].sha256));
            (body, sig, content)
        })
        .collect()
}

/// `touchline restore <backup> --data <data> --key <key> [extra…]`.
fn restore(
    backup: &Path,
    data: &Path,
    key: &Path,
    extra: &[&std::ffi::OsStr],
) -> std::process::Output {
    touchline()
        .arg("restore")
        .arg(backup)
        .arg("--data")
        .arg(data)
        .arg("--key")
        .arg(key)
        .args(extra)
        .output()
        .unwrap()
}

fn history_len(c: &RunningController, site: &str) -> usize {
    let r = c.get(
        &format!("/api/sites/{site}/history?from=2000-01-01T00:00:00Z"),
        Some(OPERATOR),
    );
    let v: Value = r.json().unwrap();
    v["points"].as_array().unwrap().len()
}

#[test]
fn a_restored_controller_serves_the_same_bundles_to_the_same_tokens() {
    let files = ControllerFiles::example();
    files.add_example_content();
    files.config(&format!(
        "[[operators]]\nname = \"boss\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        touchline_testkit::controller::token_sha256(BOSS)
    ));
    let c = files.start();
    // A backup holds the signing key: not even an admin takes it remotely.
    let r = c.get("/api/backup", Some(BOSS));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().unwrap().contains("a backup holds the signing key"));
    assert_eq!(
        c.get("/api/backup", Some(OPERATOR)).status(),
        StatusCode::FORBIDDEN
    );
    let tokens: Vec<String> = SITES.iter().map(|s| files.site_token(s, false)).collect();
    post_report(&c, SITES[0], &tokens[0], 1, "2026-12-01T10:00:00Z");
    let before = served(&c, &tokens);

    let backup = files.path("backup.tar");
    let out = touchline()
        .args(["backup", "--data"])
        .arg(files.data())
        .arg("--out")
        .arg(&backup)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("content files"), "{said}");
    assert!(said.contains("the signing key and the config"), "{said}");
    assert_eq!(
        backup.metadata().unwrap().permissions().mode() & 0o777,
        0o600,
        "the backup holds the signing key"
    );
    // After the backup: this report is the only thing lost.
    post_report(&c, SITES[0], &tokens[0], 2, "2026-12-01T10:05:00Z");
    assert_eq!(history_len(&c, SITES[0]), 2);
    drop(c);

    // Restore onto a fresh machine: new data directory, key and config paths.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let key = fresh.path().join("etc/controller.key");
    let config = fresh.path().join("etc/controller.toml");
    let out = restore(
        &backup,
        &data,
        &key,
        &["--config".as_ref(), config.as_os_str()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        std::fs::read(files.key()).unwrap()
    );
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(files.path("controller.toml")).unwrap()
    );

    assert!(
        !data.join("restore-incomplete").exists(),
        "a finished restore leaves no marker"
    );
    // A restore cut short (its marker still there: the store, key and
    // config may not match) keeps the controller from starting.
    std::fs::write(
        data.join("restore-incomplete"),
        backup.display().to_string(),
    )
    .unwrap();
    let cut = std::process::Command::new(touchline_testkit::bin("touchline"))
        .arg("serve")
        .arg("--repo")
        .arg(files.repo_dir())
        .arg("--data")
        .arg(&data)
        .arg("--key")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(cut.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cut.stderr).contains("did not finish"),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    // Running the restore again finishes it.
    let again = restore(
        &backup,
        &data,
        &key,
        &["--config".as_ref(), config.as_os_str(), "--force".as_ref()],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(!data.join("restore-incomplete").exists());

    let mut cmd = std::process::Command::new(touchline_testkit::bin("touchline"));
    cmd.arg("serve")
        .arg("--repo")
        .arg(files.repo_dir())
        .arg("--data")
        .arg(&data)
        .arg("--key")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    let mut process = touchline_testkit::Killed(cmd.spawn().unwrap());
    let url = process.listening_url();
    let restored = RunningController {
        url,
        http: reqwest::blocking::Client::new(),
        process,
    };
    assert_eq!(
        served(&restored, &tokens),
        before,
        "byte-identical bundles, signatures and content, to the same tokens"
    );
    assert_eq!(
        history_len(&restored, SITES[0]),
        1,
        "the report sent after the backup is the one lost"
    );

    // Restoring over it again is refused (it would replace the store).
    drop(restored);
    let again = restore(&backup, &data, &key, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists: restore into an empty place"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A tar file with `entries` (name, bytes).
fn tar_of(path: &Path, entries: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        // Raw, as a hostile tool would write it (the builder refuses `..`).
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

#[test]
fn damaged_or_foreign_backups_are_refused_and_restore_nothing() {
    let files = ControllerFiles::example();
    files.add_example_content();
    // A data directory without a store is refused (a mistyped --data).
    let out = touchline()
        .args(["backup", "--data"])
        .arg(files.path("nowhere"))
        .arg("--out")
        .arg(files.path("none.tar"))
        .arg("--key")
        .arg(files.key())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no controller store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!files.path("nowhere").exists() && !files.path("none.tar").exists());
    files.site_token("angers-football", false);
    // Offline: the store is not locked, so the key is given.
    let good = files.path("good.tar");
    let out = touchline()
        .args(["backup", "--data"])
        .arg(files.data())
        .arg("--out")
        .arg(&good)
        .arg("--key")
        .arg(files.key())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A content file altered inside the backup (same length).
    let mut bytes = std::fs::read(&good).unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(&good).unwrap());
    let offset = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().starts_with("content/"))
        .unwrap()
        .raw_file_position();
    bytes[usize::try_from(offset).unwrap()] ^= 0xff;
    let altered = files.path("altered.tar");
    std::fs::write(&altered, &bytes).unwrap();
    // A truncated one.
    let cut = files.path("cut.tar");
    std::fs::write(&cut, &std::fs::read(&good).unwrap()[..20_000]).unwrap();
    let manifest = serde_json::to_vec(&json!({"format": "touchline-backup 1", "created_at": "2026-12-01T00:00:00Z", "version": "0", "store_rows": 0, "content_files": 0, "content_bytes": 0, "has_config": false})).unwrap();
    let escape = files.path("escape.tar");
    tar_of(
        &escape,
        &[
            ("touchline-backup.json", &manifest),
            ("../../etc/cron.d/x", b"* * * * * root id\n"),
        ],
    );
    let foreign = files.path("foreign.tar");
    tar_of(&foreign, &[("etc/passwd", b"root:x:0:0\n")]);
    let future = files.path("future.tar");
    let m2 = String::from_utf8(manifest.clone())
        .unwrap()
        .replace("touchline-backup 1", "touchline-backup 9");
    tar_of(&future, &[("touchline-backup.json", m2.as_bytes())]);

    for (file, want) in [
        (
            &altered,
            "does not hash to its name (the backup is damaged)",
        ),
        (&cut, "is not a usable Touchline backup"),
        (&escape, "unexpected entry `../../etc/cron.d/x`"),
        (
            &foreign,
            "it starts with `etc/passwd`, not touchline-backup.json",
        ),
        (
            &future,
            "format `touchline-backup 9`; this controller reads `touchline-backup 1`",
        ),
    ] {
        let fresh = tempfile::tempdir().unwrap();
        let data = fresh.path().join("data");
        let out = restore(file, &data, &fresh.path().join("key"), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", file.display());
        assert!(
            err.contains(want),
            "{}: wanted `{want}` in {err}",
            file.display()
        );
        assert!(!fresh.path().join("key").exists());
        assert!(!data.join("status.redb").exists());
        let left: Vec<_> = std::fs::read_dir(&data)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: left {left:?}", file.display());
        assert!(!Path::new("/etc/cron.d/x").exists());
    }
}

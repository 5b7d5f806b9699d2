//! Convergence: a box follows its site's commits, adopts what it already
//! holds, leaves the club's files alone; `diagnose` says what to do.

use super::*;

#[test]
fn once_converges_follows_commits_and_leaves_the_clubs_files_alone() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let cfg = w.agent_config("box", "angers-football", Some(&c.url), "");
    let root = w.path("box");
    let videos = root.join("videos");
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));

    let check = |b: &Bundle| {
        let on_disk = tree(&videos);
        let want: BTreeMap<String, String> = b
            .files
            .iter()
            .map(|f| (f.path.to_string(), f.sha256.to_hex()))
            .collect();
        let managed: BTreeMap<String, String> = on_disk
            .iter()
            .filter(|(k, _)| !k.starts_with("club/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(managed, want, "videos on disk match the bundle by hash");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("app/configuration.json")).unwrap())
                .unwrap();
        for (k, v) in &b.config {
            assert_eq!(&config[k], v, "configuration.json key {k}");
        }
        config
    };
    let tok = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("token = \"")
                .map(|t| t.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let first = bundle_of(&c, "angers-football", &tok);
    check(&first);

    // The club's own video and its own configuration key.
    std::fs::create_dir_all(videos.join("club")).unwrap();
    std::fs::write(videos.join("club/tournoi.mp4"), b"our tournament").unwrap();
    let conf_path = root.join("app/configuration.json");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["local_playlist"] = serde_json::json!(["club/tournoi.mp4"]);
    std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();

    // A no-op pass hashes nothing and rewrites no video.
    let stamps = |d: &Path| -> BTreeMap<String, (u64, i64)> {
        tree(d)
            .keys()
            .map(|k| {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(d.join(k)).unwrap();
                (k.clone(), (m.ino(), m.mtime_nsec()))
            })
            .collect()
    };
    let before = stamps(&videos);
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stamps(&videos),
        before,
        "no video rewritten by a no-op pass"
    );

    // Commit: the football group drops one video, adds another, and
    // changes a configuration value.
    let group = w.repo().join("groups/football.yaml");
    let text = std::fs::read_to_string(&group)
        .unwrap()
        .replace("- training-football-pressing", "- training-rugby-melee")
        .replace("period_minutes: 45", "period_minutes: 40");
    std::fs::write(&group, text).unwrap();
    git(
        &w.repo(),
        &["commit", "-qam", "football: new drill, shorter periods"],
    );
    w.sync(&c);
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = bundle_of(&c, "angers-football", &tok);
    assert!(second.serial > first.serial);
    let config = check(&second);
    assert_eq!(config["scoreboard"]["period_minutes"], 40);
    assert!(
        !tree(&videos).keys().any(|k| k.contains("pressing")),
        "the removed video is gone"
    );
    assert!(tree(&videos).keys().any(|k| k.contains("melee")));
    assert_eq!(
        std::fs::read(videos.join("club/tournoi.mp4")).unwrap(),
        b"our tournament",
        "the club's file is untouched"
    );
    assert_eq!(
        config["local_playlist"],
        serde_json::json!(["club/tournoi.mp4"]),
        "the club's configuration key is kept"
    );

    // A managed video deleted and another edited locally come back.
    let victim = second.files[0].path.to_string();
    std::fs::remove_file(videos.join(&victim)).unwrap();
    let edited = second.files[1].path.to_string();
    std::fs::write(videos.join(&edited), b"scribbled over").unwrap();
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    check(&second);

    // status says converged; the controller has the box's report.
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["converged"], true, "{st}");
    assert_eq!(st["applied_serial"], second.serial);
    assert_eq!(st["queued_reports"], 0);

    // Controller gone: once exits 1 with the reason; nothing changes.
    let before = tree(&root.join("videos"));
    drop(c);
    let out = agent(&["once"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("controller unreachable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&root.join("videos")), before);
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["offline_since"].is_string(), "{st}");
    assert_eq!(st["queued_reports"], 1, "the report waits on disk");
}

#[test]
fn a_file_already_on_the_box_with_the_right_content_is_adopted_not_fetched() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // Placed by hand before the agent (the old SSH way).
    let videos = tmp.path().join("videos/Sponsors");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::write(videos.join("old.mp4"), b"already here").unwrap();
    let ino = std::fs::metadata(videos.join("old.mp4")).unwrap().ino();
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"already here"),
        ("Sponsors/new.mp4", b"new"),
    ];
    let dir = tmp.path().join("usb");
    signer.write(&dir, &sample_bundle("cesson-handball", 1, files, &[]));
    // The stick carries only the new file: the old one needs no source.
    with_content(&dir, &files[1..]);
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(videos.join("old.mp4")).unwrap().ino(),
        ino,
        "not replaced"
    );
    assert_eq!(std::fs::read(videos.join("new.mp4")).unwrap(), b"new");
    // Adopted: the agent manages it now (a later bundle without it removes it).
    signer.write(&dir, &sample_bundle("cesson-handball", 2, &files[1..], &[]));
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!videos.join("old.mp4").exists());
    assert!(videos.join("new.mp4").exists());
}

#[test]
fn diagnose_says_ok_or_what_to_do() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let cfg = w.agent_config("box", "ivry-handball", Some(&c.url), "");
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for check in [
        "OK   config",
        "OK   clock",
        "OK   dns",
        "OK   tcp",
        "OK   http",
        "OK   token: accepted",
        "OK   trusted key",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("token = ") {
                "token = \"wrong\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, bad).unwrap();
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL token: refused: mint one with `touchline site token"),
        "{text}"
    );
}

/// Both binaries log the same way: `TOUCHLINE_LOG_FORMAT=json` gives JSON
/// lines, `RUST_LOG` filters, and every line of a pass carries its span
/// with the site and the serial.
#[test]
fn a_pass_logs_json_lines_inside_a_span_with_the_site_and_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"the reel")];
    let usb = tmp.path().join("usb");
    signer.write(&usb, &sample_bundle("cesson-handball", 3, files, &[]));
    with_content(&usb, files);
    let out = Command::new(bin("touchline-agent"))
        .args(["apply-dir", usb.to_str().unwrap(), "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "debug")
        .env("TOUCHLINE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let planned = lines
        .iter()
        .find(|l| l["fields"]["message"] == "planned")
        .unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert_eq!(planned["span"]["name"], "pass");
    assert_eq!(planned["span"]["site"], "cesson-handball");
    assert_eq!(planned["span"]["serial"], 3);
    assert_eq!(planned["fields"]["place"], 1);
    // RUST_LOG filters: at `warn`, nothing of a quiet pass is printed.
    let quiet = Command::new(bin("touchline-agent"))
        .args(["apply-dir", usb.to_str().unwrap(), "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("TOUCHLINE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("\"planned\""),
        "{}",
        stderr(&quiet)
    );
}

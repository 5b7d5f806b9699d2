//! Crashes: `kill -9` at any point of a download or an apply, and restart
//! converges; an interrupted download resumes from its checkpoint.

use super::*;

#[test]
fn an_interrupted_download_resumes_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "read_timeout = \"3s\"");
    // 80 MB, cut at 70 MB: the error itself takes a checkpoint.
    let content: Vec<u8> = (0..80 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let cut = 70 * 1024 * 1024;
    let (mirror, seen) = cutting_mirror(content.clone(), cut);
    let files: &[(&str, &[u8])] = &[("Sponsors/long.mp4", &content)];
    let dir = tmp.path().join("usb");
    signer.write(
        &dir,
        &sample_bundle("cesson-handball", 1, files, &[format!("{mirror}/f")]),
    );
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert_eq!(out.status.code(), Some(1), "the first attempt breaks off");
    let st = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let pending = st["pending_downloads"][0]["bytes"].as_u64().unwrap();
    assert!(pending >= 64 * 1024 * 1024, "checkpointed bytes kept: {st}");
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "None None");
    assert_eq!(
        seen[1],
        format!("Some(\"bytes={cut}-\") Some(\"\\\"v1\\\"\")"),
        "resumed where the connection broke (a checkpoint is taken on the error), with If-Range"
    );
    assert_eq!(
        Sha256::digest(&std::fs::read(tmp.path().join("videos/Sponsors/long.mp4")).unwrap()),
        Sha256::digest(&content)
    );
}

#[test]
fn kill_9_at_random_points_never_exposes_a_half_written_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // Two versions of a 24-file tree of 256 KB files, alternating.
    let make = |v: u8| -> Vec<(String, Vec<u8>)> {
        (0..24u8)
            .map(|i| {
                let path = format!("Sponsors/S{}/clip-{i:02}.mp4", i % 3);
                let bytes: Vec<u8> = (0..256 * 1024u32)
                    .map(|k| (k as u8) ^ i ^ v.wrapping_mul(31))
                    .collect();
                (path, bytes)
            })
            .collect()
    };
    let versions = [make(1), make(2)];
    let mut valid: BTreeSet<String> = BTreeSet::new();
    for v in &versions {
        for (_, b) in v {
            valid.insert(Sha256::digest(b).to_hex());
        }
    }
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("v{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let videos = tmp.path().join("videos");
    let conf = tmp.path().join("app/configuration.json");
    // The watcher reads what the local app would read, all the time.
    let watcher = {
        let stop = stop.clone();
        let valid = valid.clone();
        let videos = videos.clone();
        let conf = conf.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (rel, hash) in tree(&videos) {
                    let name = rel.rsplit('/').next().unwrap_or_default();
                    if name.starts_with('.') {
                        continue; // the agent's hidden temp names
                    }
                    assert!(valid.contains(&hash), "half-written or foreign file {rel}");
                    checks += 1;
                }
                if let Ok(b) = std::fs::read(&conf) {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .expect("configuration.json is whole");
                    checks += 1;
                }
            }
            checks
        })
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut kills = 0;
    for round in 0..80u64 {
        let v = (round % 2) as usize;
        let files: Vec<(&str, &[u8])> = versions[v]
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let dir = &dirs[v];
        let _ = std::fs::remove_dir_all(dir);
        signer.write(
            dir,
            &sample_bundle("cesson-handball", round + 1, &files, &[]),
        );
        with_content(dir, &files);
        let mut child = Command::new(bin("touchline-agent"))
            .args(["apply-dir"])
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "off")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // After each kill, a restart converges (on every other round, so
        // that the next kill also lands in the middle of a change).
        if round % 2 == 1 {
            let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
            assert!(
                out.status.success(),
                "round {round}: restart after kill -9 did not converge: {}",
                stderr(&out)
            );
        }
    }
    // After the last kill, a clean run converges on the last bundle.
    let last = &dirs[1];
    let out = agent(&["apply-dir", last.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    stop.store(true, Ordering::Relaxed);
    let checks = watcher.join().expect("the watcher saw only whole files");
    let want: BTreeMap<String, String> = versions[1]
        .iter()
        .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
        .collect();
    assert_eq!(tree(&videos), want);
    assert!(kills >= 50, "only {kills} runs were killed mid-way");
    assert!(checks > 0);
    println!("{kills} kills, {checks} file reads by the watcher");
}

#[test]
fn a_crash_right_after_any_placement_converges_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let version = |v: u8| -> Vec<(String, Vec<u8>)> {
        (0..6u8)
            .map(|i| (format!("Sponsors/c{i}.mp4"), vec![v, i, v, i]))
            .collect()
    };
    let mut serial = 0u64;
    let mut write = |v: u8| -> (PathBuf, Vec<(String, Vec<u8>)>) {
        serial += 1;
        let files = version(v);
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let dir = tmp.path().join(format!("s{serial}"));
        signer.write(&dir, &sample_bundle("cesson-handball", serial, &refs, &[]));
        with_content(&dir, &refs);
        (dir, files)
    };
    for n in 1..=6u64 {
        // A change is cut short (abort, like a power cut) right after its
        // n-th rename into place…
        // (The box holds version 2 after each round: version 1 is a change.)
        let (cut, _) = write(1);
        let out = Command::new(bin("touchline-agent"))
            .args(["apply-dir"])
            .arg(&cut)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CRASH_AT", format!("place:{n}"))
            .env("TOUCHLINE_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "crash point place:{n} reached");
        // …and the next bundle, with other content at the same paths,
        // must still converge after the restart.
        let (next, files) = write(2);
        let out = agent(&["apply-dir", next.to_str().unwrap()], &cfg);
        assert!(
            out.status.success(),
            "crash after place {n}: {}",
            stderr(&out)
        );
        let want: BTreeMap<String, String> = files
            .iter()
            .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
            .collect();
        assert_eq!(
            tree(&tmp.path().join("videos")),
            want,
            "crash after place {n}"
        );
    }
}

#[test]
fn kill_9_during_downloads_never_leaves_a_bad_file_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // 6 files of 1 MB at 64 KB / 10 ms: a whole pass takes about a second.
    let files: Vec<(String, Vec<u8>)> = (0..6u32)
        .map(|i| {
            (
                format!("Sponsors/dl-{i}.mp4"),
                pseudo_random(1024 * 1024, 100 + i),
            )
        })
        .collect();
    let mirror = slow_mirror(
        files.iter().map(|f| f.1.clone()).collect(),
        Duration::from_millis(10),
    );
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let dir = tmp.path().join("usb");
    signer.write(
        &dir,
        &sample_bundle("cesson-handball", 1, &refs, std::slice::from_ref(&mirror)),
    );
    let cas = tmp.path().join("state/cas/sha256");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    for round in 0..30 {
        let mut child = Command::new(bin("touchline-agent"))
            .args(["apply-dir"])
            .arg(&dir)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "off")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 600));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment: every file in the store is what its name
        // says, and the videos directory holds only whole, signed files.
        for (name, hash) in tree(&cas) {
            assert_eq!(name, hash, "round {round}: a store file is not its hash");
        }
        for (rel, hash) in tree(&tmp.path().join("videos")) {
            assert!(
                files
                    .iter()
                    .any(|(p, b)| *p == rel && Sha256::digest(b).to_hex() == hash),
                "round {round}: unexpected {rel}"
            );
        }
        // Start over now and then, so that kills land early in a pass too.
        if round % 3 == 2 {
            let _ = std::fs::remove_dir_all(tmp.path().join("state"));
            let _ = std::fs::remove_dir_all(tmp.path().join("videos"));
        }
    }
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: BTreeMap<String, String> = files
        .iter()
        .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
        .collect();
    assert_eq!(tree(&tmp.path().join("videos")), want);
    assert!(tree(&tmp.path().join("state/cas/partial")).is_empty());
    assert!(kills >= 20, "only {kills} runs were killed mid-way");
    println!("{kills} kills during downloads");
}

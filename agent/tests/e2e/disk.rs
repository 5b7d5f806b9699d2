//! A full disk: refused before anything is written, or stopped mid-way
//! with a clear condition and the old state kept.

use super::*;

#[test]
fn not_enough_space_is_a_clear_condition_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A reserve larger than any disk: the free-space check must refuse.
    let (cfg, signer) = offline_box(tmp.path(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "space_reserve_bytes = 0",
        "space_reserve_bytes = 900000000000000000",
    );
    std::fs::write(&cfg, text).unwrap();
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"0123456789")];
    let dir = tmp.path().join("usb");
    signer.write(&dir, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&dir, files);
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: need 900000.0 TB, have "),
        "{err}"
    );
    assert!(tree(&tmp.path().join("videos")).is_empty());
    assert!(
        tree(&tmp.path().join("state/cas")).is_empty(),
        "nothing downloaded"
    );
    let st = agent(&["status"], &cfg);
    assert!(String::from_utf8_lossy(&st.stdout).contains("[error] disk: not enough space"));
}

#[test]
fn a_disk_that_fills_up_mid_download_or_mid_copy_is_a_clear_condition_and_keeps_the_old_state() {
    let outside = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount_or_skip(&outside.path().join("disk"), "16m") else {
        return;
    };
    let root = disk.0.clone();
    let (cfg, signer) = offline_box(&root, "");
    let old: &[(&str, &[u8])] = &[("Sponsors/old.mp4", b"the sponsor reel")];
    let usb = outside.path().join("usb1");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, old, &[]));
    with_content(&usb, old);
    let out = agent(&["apply-dir", usb.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    // The files the app reads (the new bundle itself is accepted: valid,
    // just not applicable yet).
    let mut before = snapshot(&root);
    before.remove("state/accepted.json");

    // 1. The club uploads a video while the agent downloads an 8 MB one:
    //    the disk fills up in the middle of the download.
    let big = pseudo_random(8 * 1024 * 1024, 1);
    let (mirror, reached, go) = gated_mirror(big.clone(), 3 * 1024 * 1024);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/big.mp4", &big),
    ];
    let usb2 = outside.path().join("usb2");
    signer.write(
        &usb2,
        &sample_bundle("cesson-handball", 2, files, &[format!("{mirror}/f")]),
    );
    let running = Command::new(bin("touchline-agent"))
        .args(["apply-dir", usb2.to_str().unwrap(), "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&reached);
    let upload = root.join("videos/Club/upload.mp4");
    disk.fill(&upload);
    go.store(true, Ordering::SeqCst);
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: download of ")
            && err.contains("No space left on device")
            && err.contains("the partial file was removed"),
        "{err}"
    );
    let mut now = snapshot(&root);
    assert!(now.remove("Club/upload.mp4").is_some());
    now.remove("state/accepted.json");
    assert_eq!(now, before, "the old state is intact");
    assert!(
        tree(&root.join("state/cas/partial")).is_empty(),
        "the partial download is removed"
    );
    let st = agent(&["status"], &cfg);
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        st.contains("[error] disk: not enough space: download of"),
        "{st}"
    );
    // The club frees space: the next pass converges.
    std::fs::remove_file(&upload).unwrap();
    let out = agent(&["apply-dir", usb2.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(root.join("videos/Sponsors/big.mp4")).unwrap(),
        big
    );
    let st = agent(&["status"], &cfg);
    assert!(!String::from_utf8_lossy(&st.stdout).contains("disk:"));

    // 2. Videos on their own small filesystem (a USB disk): no hard links,
    //    so every placement is a copy, and its space is checked too.
    let vdisk = Tmpfs::mount(&outside.path().join("vdisk"), "8m").unwrap();
    let box2 = outside.path().join("box2");
    std::fs::create_dir_all(&box2).unwrap();
    let (cfg2, signer2) = offline_box(&box2, "");
    let text = std::fs::read_to_string(&cfg2).unwrap().replace(
        &format!("videos_dir = \"{}\"", box2.join("videos").display()),
        &format!("videos_dir = \"{}\"", vdisk.0.join("videos").display()),
    );
    std::fs::write(&cfg2, text).unwrap();
    let usb3 = outside.path().join("usb3");
    signer2.write(&usb3, &sample_bundle("cesson-handball", 1, old, &[]));
    with_content(&usb3, old);
    assert!(
        agent(&["apply-dir", usb3.to_str().unwrap()], &cfg2)
            .status
            .success()
    );
    let before = tree(&vdisk.0);
    // 2a. More than the videos filesystem holds: refused before anything.
    let huge = pseudo_random(9 * 1024 * 1024, 2);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/huge.mp4", &huge),
    ];
    let usb4 = outside.path().join("usb4");
    signer2.write(&usb4, &sample_bundle("cesson-handball", 2, files, &[]));
    with_content(&usb4, files);
    let out = agent(&["apply-dir", usb4.to_str().unwrap()], &cfg2);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: need 9.4 MB, have ")
            && err.contains("(copies into the videos directory, on the filesystem of "),
        "{err}"
    );
    assert!(
        !box2
            .join("state/cas/sha256")
            .join(Sha256::digest(&huge).to_hex())
            .exists(),
        "nothing downloaded"
    );
    assert_eq!(tree(&vdisk.0), before);
    // 2b. It fits when checked, then the club fills the disk while the
    //     agent downloads the second file: the copy fails half-way.
    let a = pseudo_random(3 * 1024 * 1024, 3);
    let b = pseudo_random(3 * 1024 * 1024, 4);
    let (mirror, reached, go) = gated_mirror(b.clone(), 1024 * 1024);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/a.mp4", &a),
        ("Sponsors/b.mp4", &b),
    ];
    let usb5 = outside.path().join("usb5");
    let mut bundle = sample_bundle("cesson-handball", 3, files, &[format!("{mirror}/f")]);
    bundle.files.iter_mut().for_each(|f| {
        if f.sha256 != Sha256::digest(&b) {
            f.urls.clear();
        }
    });
    signer2.write(&usb5, &bundle);
    with_content(&usb5, &files[..2]);
    let running = Command::new(bin("touchline-agent"))
        .args(["apply-dir", usb5.to_str().unwrap(), "--config"])
        .arg(&cfg2)
        .env("TOUCHLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&reached);
    // Leave 4 MB: room for a.mp4, not for b.mp4 after it.
    let upload = vdisk.0.join("videos/Club/upload.mp4");
    disk_fill_leaving(&upload, &vdisk.0, 4 * 1024 * 1024);
    go.store(true, Ordering::SeqCst);
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: copying to `")
            && err.contains("/.b.mp4.")
            && err.contains(".touchline-tmp`: No space left on device"),
        "{err}"
    );
    let now = tree(&vdisk.0);
    assert!(
        now.keys().all(|k| !k.ends_with(".touchline-tmp")),
        "no temp file left: {now:?}"
    );
    assert_eq!(
        now.get("videos/Sponsors/old.mp4"),
        before.get("videos/Sponsors/old.mp4")
    );
    assert!(!now.contains_key("videos/Sponsors/b.mp4"));
    std::fs::remove_file(&upload).unwrap();
    let out = agent(&["apply-dir", usb5.to_str().unwrap()], &cfg2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(vdisk.0.join("videos/Sponsors/b.mp4")).unwrap(),
        b
    );
}

/// Writes a club file so that about `leave` bytes stay free on `fs`.
fn disk_fill_leaving(path: &Path, fs: &Path, leave: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = rustix::fs::statvfs(fs).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let n = free.saturating_sub(leave);
    std::fs::write(path, vec![9u8; n as usize]).unwrap();
}

//! Hostile sources: bad bundles and misbehaving mirrors are refused with
//! a precise reason and change nothing.

use super::*;

#[test]
fn bad_bundles_are_refused_with_the_reason_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"aaaa"), ("Sponsors/b.mp4", b"bbbb")];
    let good = tmp.path().join("good");
    signer.write(&good, &sample_bundle("cesson-handball", 5, files, &[]));
    with_content(&good, files);
    let out = agent(&["apply-dir", good.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = snapshot(tmp.path());
    assert_eq!(before.len(), 4);

    let other = SigningKey::generate();
    type Case<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "flipped byte",
            Box::new(|d: &Path| {
                let mut body = sample_bundle("cesson-handball", 6, files, &[]).to_canonical_json();
                signer.write_raw(d, &body);
                let i = body.len() / 2;
                body[i] ^= 1;
                std::fs::write(d.join("bundle.json"), body).unwrap();
            }),
            "bundle signature rejected",
        ),
        (
            "untrusted key",
            Box::new(|d: &Path| {
                Signer { key: other.clone() }
                    .write(d, &sample_bundle("cesson-handball", 6, files, &[]));
            }),
            "bundle signature rejected",
        ),
        (
            "another site",
            Box::new(|d: &Path| signer.write(d, &sample_bundle("brest-basket", 6, files, &[]))),
            "bundle is for site `brest-basket`, this box is `cesson-handball`",
        ),
        (
            "older serial",
            Box::new(|d: &Path| signer.write(d, &sample_bundle("cesson-handball", 4, files, &[]))),
            "bundle serial 4 is older than serial 5 already accepted",
        ),
        (
            "expired",
            Box::new(|d: &Path| {
                let mut b = sample_bundle("cesson-handball", 6, files, &[]);
                b.issued_at = "2026-01-01T00:00:00Z".parse().unwrap();
                b.expires_at = "2026-01-08T00:00:00Z".parse().unwrap();
                signer.write(d, &b);
            }),
            "bundle expired at 2026-01-08T00:00:00Z",
        ),
        (
            "path traversal",
            Box::new(|d: &Path| {
                let body = String::from_utf8(
                    sample_bundle("cesson-handball", 6, files, &[]).to_canonical_json(),
                )
                .unwrap()
                .replace("Sponsors/a.mp4", "../../etc/passwd");
                signer.write_raw(d, body.as_bytes());
            }),
            "bundle is not valid",
        ),
        (
            "oversize",
            Box::new(|d: &Path| {
                let mut b = sample_bundle("cesson-handball", 6, files, &[]);
                b.config
                    .insert("padding".into(), "x".repeat(5 * 1024 * 1024).into());
                signer.write(d, &b);
            }),
            "over the 4194304-byte limit",
        ),
    ];
    for (name, make, want) in cases {
        let dir = tmp.path().join(name.replace(' ', "-"));
        make(&dir);
        with_content(&dir, files);
        let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        assert_eq!(snapshot(tmp.path()), before, "{name}: nothing changed");
        let st = agent(&["status"], &cfg);
        assert!(
            String::from_utf8_lossy(&st.stdout).contains(want),
            "{name}: status shows the reason: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}

#[test]
fn hostile_mirrors_are_refused_with_a_precise_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(
        tmp.path(),
        "min_download_rate = 1000\ndownload_watchdog = \"2s\"\nread_timeout = \"5s\"",
    );
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let files: &[(&str, &[u8])] = &[("Sponsors/big.mp4", &content)];
    let (mirror, stop) = hostile_mirror(content.clone());
    let cases = [
        ("wrong", "sha256 mismatch"),
        ("endless", "more than the 200000 bytes the bundle says"),
        (
            "liar",
            "Content-Length says 2000000 bytes, the bundle says 200000",
        ),
        ("tarpit", "too slow"),
    ];
    for (serial, (mode, want)) in cases.iter().enumerate() {
        let dir = tmp.path().join(mode);
        signer.write(
            &dir,
            &sample_bundle(
                "cesson-handball",
                serial as u64 + 1,
                files,
                &[format!("{mirror}/{mode}")],
            ),
        );
        let started = Instant::now();
        let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{mode}: {}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode} did not hold the agent"
        );
        assert!(
            tree(&tmp.path().join("videos")).is_empty(),
            "{mode}: nothing placed"
        );
        assert!(!tmp.path().join("app/configuration.json").exists());
        // No partial file of a rejected download stays in the store.
        let store: BTreeSet<String> = tree(&tmp.path().join("state/cas/sha256"))
            .into_keys()
            .collect();
        assert!(store.is_empty(), "{mode}: {store:?}");
    }
    stop.store(true, Ordering::Relaxed);
}

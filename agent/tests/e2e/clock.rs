//! A wrong clock (1970, 2031): a valid bundle still applies.

use super::*;

#[test]
fn a_clock_in_1970_or_2031_still_applies_a_valid_bundle() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    for (name, site, clock) in [
        ("box1970", "brest-basket", "1970-01-01T00:00:05Z"),
        ("box2031", "le-mans-basket", "2031-06-01T12:00:00Z"),
    ] {
        let cfg = w.agent_config(name, site, Some(&c.url), "");
        let out = Command::new(bin("touchline-agent"))
            .args(["once", "--config"])
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CLOCK", clock)
            .env("TOUCHLINE_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(!tree(&w.path(name).join("videos")).is_empty(), "{name}");
    }
    // An expired bundle is refused whatever the clock, and the box keeps
    // what it has.
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let files: &[(&str, &[u8])] = &[("a.mp4", b"a")];
    let ok = tmp.path().join("ok");
    signer.write(&ok, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&ok, files);
    assert!(
        agent(&["apply-dir", ok.to_str().unwrap()], &cfg)
            .status
            .success()
    );
    let before = snapshot(tmp.path());
    let old = tmp.path().join("old");
    let mut b = sample_bundle("cesson-handball", 2, files, &[]);
    b.issued_at = "2025-01-01T00:00:00Z".parse().unwrap();
    b.expires_at = "2025-01-08T00:00:00Z".parse().unwrap();
    signer.write(&old, &b);
    for clock in ["1970-01-01T00:00:05Z", "2025-01-02T00:00:00Z"] {
        let out = Command::new(bin("touchline-agent"))
            .args(["apply-dir"])
            .arg(&old)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CLOCK", clock)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("bundle expired at 2025-01-08T00:00:00Z"),
            "{}",
            stderr(&out)
        );
        assert_eq!(snapshot(tmp.path()), before);
    }
}

//! Offline for a long stretch: the files stay, queued reports arrive in
//! order when the controller is back.

use super::*;

#[test]
fn offline_for_a_long_stretch_keeps_the_files_and_delivers_queued_reports_in_order() {
    let w = World::new();
    let port = touchline_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let c = w.start(&listen);
    let cfg = w.agent_config(
        "box",
        "nantes-handball",
        Some(&c.url),
        "heartbeat_interval = \"1s\"\nmetrics_interval = \"1s\"",
    );
    assert!(agent(&["once"], &cfg).status.success());
    let videos = w.path("box/videos");
    let before = tree(&videos);
    assert!(!before.is_empty());
    let mut daemon = Command::new(bin("touchline-agent"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // The controller goes away for a long stretch (simulated: every
    // metrics interval is one report).
    drop(c);
    std::thread::sleep(Duration::from_secs(8));
    let st = agent_status(&cfg);
    assert!(
        st["offline_since"].is_string(),
        "status says offline since T: {st}"
    );
    let queued = st["queued_reports"].as_u64().unwrap();
    assert!(queued >= 4, "reports queue up while offline: {st}");
    assert_eq!(tree(&videos), before, "the box keeps its files");
    // Back: the queue drains, in order, nothing twice.
    let c = w.start(&listen);
    wait_until_drained(&cfg, Duration::from_secs(20));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let admin = std::fs::read_to_string(w.path("data").join("local-admin.token")).unwrap();
    assert_history_in_order(&c, &admin, "nantes-handball", queued);
}

#[test]
fn a_reflashed_box_with_the_same_token_is_heard_again_from_its_first_report() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let cfg = w.agent_config("box", "nantes-handball", Some(&c.url), "");
    let admin = std::fs::read_to_string(w.path("data").join("local-admin.token")).unwrap();
    let site = || -> serde_json::Value {
        let r = http()
            .get(format!("{}/api/sites/nantes-handball", c.url))
            .bearer_auth(admin.trim())
            .send()
            .unwrap();
        serde_json::from_slice(&r.bytes().unwrap()).unwrap()
    };
    // Each start reserves a block of sequence numbers: three runs take the
    // controller's high-water mark past 2000.
    for _ in 0..3 {
        assert!(agent(&["once"], &cfg).status.success());
    }
    let before = site()["report"]["seq"].as_u64().unwrap();
    assert!(before > 2000, "{before}");
    // Reflashed: the state is gone, the token (in the config) is the same.
    std::fs::remove_dir_all(w.path("box/state")).unwrap();
    assert!(agent(&["once"], &cfg).status.success());
    let after = site();
    let seq = after["report"]["seq"].as_u64().unwrap();
    assert!(
        seq < 1000,
        "the new state's first reports are stored, not dropped as seen: {seq} (was {before})"
    );
    let events = after["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "reset"
            && e["message"]
                .as_str()
                .unwrap()
                .starts_with("the box's state was wiped")),
        "{events:?}"
    );
    // And its next run continues that sequence.
    assert!(agent(&["once"], &cfg).status.success());
    assert!(site()["report"]["seq"].as_u64().unwrap() > seq);
}

/// Back from an outage, the reports queued while the controller was out of
/// reach (each says so) and the box's live report go in one request: the
/// controller never holds a queued report as the box's latest state, not
/// even between two requests (it showed the box with "controller
/// unreachable" just after it reconnected). A recording proxy in front of
/// the real controller takes the controller away and sees every request.
#[test]
fn the_queued_reports_and_the_live_one_reach_the_controller_together() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let proxy = touchline_testkit::proxy::RecordingProxy::start(&c.url);
    let cfg = w.agent_config(
        "box",
        "nantes-handball",
        Some(&proxy.url),
        "heartbeat_interval = \"1s\"\nmetrics_interval = \"1s\"",
    );
    let daemon = Killed(
        Command::new(bin("touchline-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent_status(&cfg)["phase"] != "converged" {
        assert!(Instant::now() < deadline, "{}", agent_status(&cfg));
        std::thread::sleep(Duration::from_millis(300));
    }
    proxy.set_down(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent_status(&cfg)["queued_reports"].as_u64().unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "{}", agent_status(&cfg));
        std::thread::sleep(Duration::from_millis(300));
    }
    let cut = proxy.exchanges().len();
    proxy.set_down(false);
    wait_until_drained(&cfg, Duration::from_secs(30));
    drop(daemon);

    let batches: Vec<serde_json::Value> = proxy.exchanges()[cut..]
        .iter()
        .filter(|e| e.method == "POST" && e.path.ends_with("/reports") && e.status < 300)
        .map(|e| serde_json::from_slice(&e.body).unwrap())
        .collect();
    let says_unreachable = |r: &serde_json::Value| {
        r["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["item"] == "controller"))
    };
    let queued: usize = batches
        .iter()
        .flat_map(|b| b["reports"].as_array().unwrap())
        .filter(|r| says_unreachable(r))
        .count();
    // The first report queued was built before the box knew.
    assert!(
        queued >= 2,
        "the reports queued during the outage arrived, saying so: {batches:#?}"
    );
    for b in &batches {
        let newest = b["reports"]
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|r| r["seq"].as_u64())
            .unwrap();
        assert!(
            !says_unreachable(newest),
            "a request whose newest report says the controller is unreachable \
             made that the box's latest state: {b:#}"
        );
    }
}

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
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["offline_since"].is_string(),
        "status says offline since T: {st}"
    );
    let queued = st["queued_reports"].as_u64().unwrap();
    assert!(queued >= 4, "reports queue up while offline: {st}");
    assert_eq!(tree(&videos), before, "the box keeps its files");
    // Back: the queue drains, in order, nothing twice.
    let c = w.start(&listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = agent(&["status", "--json"], &cfg);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if st["queued_reports"] == 0 && st["offline_since"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let admin = std::fs::read_to_string(w.path("data").join("local-admin.token")).unwrap();
    let hist: serde_json::Value = serde_json::from_slice(
        &http()
            .get(format!(
                "{}/api/sites/nantes-handball/history?from=2000-01-01T00:00:00Z",
                c.url
            ))
            .bearer_auth(admin.trim())
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    let points = hist["points"].as_array().unwrap();
    let times: Vec<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(times, sorted, "history in order, no duplicates");
    assert!(
        points.len() as u64 > queued,
        "every queued metrics report arrived: {} points, {queued} were queued",
        points.len()
    );
}

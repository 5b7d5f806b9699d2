//! A box that loses its controller and finds it again: a real
//! `touchline-agent run` daemon and `touchline serve`, the controller
//! killed for longer than the fleet's `offline_after` and started again on
//! the same address.
//!
//! What is shown: while it is cut off the box keeps its applied state (its
//! phase stays `converged`, not `degraded`); when the controller comes back
//! neither the controller's own downtime (offline) nor the box's passes
//! without a controller (apply-failed) raise an alert, not even a pending
//! one, and the box's first report says nothing of a controller out of
//! reach; the box is `online`, `converged`, with no condition. Then the
//! box stopped for real does go offline: the alerts do run.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use touchline_testkit::agent_box::AgentBox;
use touchline_testkit::{ControllerFiles, Killed, RunningController, bin};

const FLEET: &str = "name: Reconnect\ntimezone: Europe/Paris\ndefaults:\n  config:\n    version: \"1.0\"\n  agent:\n    poll_interval: 2s\n    heartbeat_interval: 1s\nalerts:\n  offline_after: 4s\n  hold: 1s\n";

const SITE: &str = "id: s1\nname: Site s1\nclub: Club s1\nlocation:\n  city: Rennes\n  region: Bretagne\n  latitude: 48.1\n  longitude: -1.6\nlabels:\n  sport: handball\n  region: bretagne\n";

fn api(c: &RunningController, admin: &str, path: &str) -> Value {
    let r = c.get(path, Some(admin));
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().unwrap()
}

fn wait(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The alerts of `/api/alerts`, as `rule state`.
fn alerts(c: &RunningController, admin: &str) -> Vec<String> {
    api(c, admin, "/api/alerts")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["rule"].as_str().unwrap(),
                a["state"].as_str().unwrap()
            )
        })
        .collect()
}

/// Box `s1` of `files` (reports every second, plus `extra` config) as a
/// real `touchline-agent run` daemon against `c`, logging to the returned
/// path.
fn run_box(
    files: &ControllerFiles,
    c: &RunningController,
    extra: &str,
) -> (AgentBox, Killed, std::path::PathBuf) {
    let token = files.site_token("s1", false);
    let agent = AgentBox::new(
        &files.path("box-s1"),
        "s1",
        &files.path("key.pub"),
        Some((&c.url, &token)),
        &format!(
            "space_reserve_bytes = 0\nheartbeat_interval = \"1s\"\nmetrics_interval = \"1s\"\n{extra}"
        ),
    );
    let log = agent.path("agent.log");
    let daemon = Killed(
        Command::new(bin("touchline-agent"))
            .args(["run", "--config"])
            .arg(&agent.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    (agent, daemon, log)
}

#[test]
fn a_box_that_finds_its_controller_again_raises_no_alert_and_says_nothing_stale() {
    let files = ControllerFiles::with_repo(|dir| {
        std::fs::create_dir_all(dir.join("sites")).unwrap();
        std::fs::write(dir.join("fleet.yaml"), FLEET).unwrap();
        std::fs::write(dir.join("sites/s1.yaml"), SITE).unwrap();
    });
    files.config("alerts_interval = \"1s\"");
    let mut c = files.start();
    let mut admin = files.local_admin_token();
    c.sync(&admin);
    let commits = api(&c, &admin, "/api/commits");
    assert_eq!(commits["commits"][0]["state"], "accepted", "{commits:#}");
    let (agent, _daemon, log) = run_box(&files, &c, "");
    let site = |c: &RunningController, admin: &str| api(c, admin, "/api/sites/s1")["site"].clone();
    wait(Duration::from_secs(30), "s1 converged and online", || {
        let s = site(&c, &admin);
        s["phase"] == "converged" && s["status"] == "online"
    });
    assert!(alerts(&c, &admin).is_empty(), "{:?}", alerts(&c, &admin));

    // The controller goes away for longer than offline_after.
    let addr = c.url.trim_start_matches("http://").to_owned();
    let _ = c.process.0.kill();
    let _ = c.process.0.wait();
    std::thread::sleep(Duration::from_secs(6));
    let status = agent.status_json();
    assert_eq!(
        status["phase"], "converged",
        "cut off from its controller, the box keeps its applied state: {status:#}"
    );
    c = files.start_on(&addr);
    admin = files.local_admin_token();
    let restarted = jiff::Timestamp::now();

    // Watch every 100 ms until the box is back: no alert at any stage,
    // and nothing it says once heard again is about the outage.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut back = false;
    while Instant::now() < deadline {
        let seen = alerts(&c, &admin);
        assert!(
            seen.is_empty(),
            "a reconnect raised {seen:?}\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let s = site(&c, &admin);
        let heard = s["last_seen"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t >= restarted);
        if heard {
            assert_ne!(s["status"], "degraded", "{s:#}");
            assert_ne!(s["status"], "offline", "{s:#}");
            let conditions = s["conditions"].to_string();
            assert!(
                !conditions.contains("unreachable"),
                "{s:#}\nagent log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            if s["status"] == "online" && s["phase"] == "converged" && s["current"] == true {
                back = true;
                // A few more evaluations (hold 1 s, every second).
                if Instant::now() + Duration::from_secs(3) > deadline {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        if back && alerts(&c, &admin).is_empty() {
            std::thread::sleep(Duration::from_secs(3));
            let seen = alerts(&c, &admin);
            assert!(seen.is_empty(), "after the reconnect: {seen:?}");
            break;
        }
    }
    assert!(back, "s1 did not come back online: {:#}", site(&c, &admin));
    let report = api(&c, &admin, "/api/sites/s1")["report"].clone();
    assert_eq!(report["status"]["last_error"], Value::Null, "{report:#}");

    // The control: the box really stopped goes offline and alerts.
    drop(_daemon);
    wait(Duration::from_secs(20), "s1 offline and alerting", || {
        alerts(&c, &admin).iter().any(|a| a == "offline firing")
    });
    assert_eq!(site(&c, &admin)["status"], "offline");
    assert_eq!(site(&c, &admin)["current"], false);
}

/// A box whose download outlasts `offline_after` (a 1.5 MB video at
/// 150 kB/s, the cap its site's manifest sets: about 10 s, against 4 s)
/// stays reachable: while it downloads it looks at its bundle every poll
/// interval, so it is never shown offline and raises no alert. The time it
/// takes also shows the box keeps to the cap from git.
#[test]
fn a_box_downloading_longer_than_offline_after_stays_online() {
    let bytes: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let hash = touchline_schemas::Sha256::digest(&bytes).to_hex();
    let files = ControllerFiles::with_repo(|dir| {
        std::fs::create_dir_all(dir.join("sites")).unwrap();
        std::fs::create_dir_all(dir.join("videos")).unwrap();
        std::fs::write(dir.join("fleet.yaml"), FLEET).unwrap();
        std::fs::write(
            dir.join("sites/s1.yaml"),
            format!(
                "{SITE}overrides:\n  videos:\n    - clip\n  agent:\n    max_download_rate: 150000\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("videos/catalog.yaml"),
            format!("videos:\n  - id: clip\n    title: Clip\n    file: clip.mp4\n    category: Tests\n    subcategory: Long\n    sha256: {hash}\n    size: 1500000\n    duration: 10\n"),
        )
        .unwrap();
    });
    files.config("alerts_interval = \"1s\"");
    let clip = files.path("clip.mp4");
    std::fs::write(&clip, &bytes).unwrap();
    files.add_content(&[clip]);
    let c = files.start();
    let admin = files.local_admin_token();
    c.sync(&admin);
    let started = Instant::now();
    let (agent, _daemon, log) = run_box(&files, &c, "");
    let mut seen_downloading = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "s1 did not converge\nagent log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let s = api(&c, &admin, "/api/sites/s1")["site"].clone();
        let raised = alerts(&c, &admin);
        assert!(
            raised.is_empty(),
            "a download raised {raised:?} after {:?}: {s:#}",
            started.elapsed()
        );
        if s["last_seen"].is_string() {
            assert!(
                s["status"] == "online",
                "downloading for {:?}, shown {}: {s:#}\nagent log:\n{}",
                started.elapsed(),
                s["status"],
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if s["phase"] == "converged" {
            break;
        }
        seen_downloading |= s["last_seen"].is_string();
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    assert!(
        seen_downloading,
        "the box was never seen while it downloaded"
    );
    assert!(
        took > Duration::from_secs(6),
        "the download took {took:?}: not longer than offline_after (4 s), nothing was shown (is the cap from the manifest kept to?)"
    );
    // The video is in place, whole.
    let placed = touchline_testkit::tree(&agent.path("videos"));
    assert!(
        placed.values().any(|h| *h == hash),
        "the clip is not in place: {placed:?}"
    );
}

//! `touchline demo`: the README's first command, run as a user would.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Stops the demo (and so its boxes) if the test fails half-way.
struct DemoGuard(u32);
impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.to_string()])
            .status();
    }
}

#[test]
fn demo_runs_the_example_fleet_picks_up_commits_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let mut child = Command::new(env!("CARGO_BIN_EXE_touchline"))
        .args(["demo", "--listen", "127.0.0.1:0", "--workspace"])
        .arg(&ws)
        .current_dir(touchline_testkit::repo_root())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = DemoGuard(child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = String::new();
    let mut token = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(u) = line.trim().strip_prefix("controller:") {
            url = u.trim().to_owned();
        }
        if let Some(t) = line.trim().strip_prefix("operator token:") {
            token = t.trim().to_owned();
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::blocking::Client::new();
    let get = |path: &str, tok: &str| -> Value {
        let r = http
            .get(format!("{url}{path}"))
            .bearer_auth(tok)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    };
    assert_eq!(get("/api/sites", &token)["count"], 12);
    let site_token = std::fs::read_to_string(ws.join("tokens/cesson-handball.token")).unwrap();
    let bundle = http
        .get(format!("{url}/v1/sites/cesson-handball/bundle"))
        .bearer_auth(&site_token)
        .send()
        .unwrap();
    assert_eq!(bundle.status(), 200);
    // Every file the bundle names is in the content store.
    let b: touchline_schemas::Bundle =
        touchline_schemas::Bundle::from_slice(&bundle.bytes().unwrap()).unwrap();
    for f in &b.files {
        let r = http
            .head(format!("{url}/v1/content/{}", f.sha256))
            .bearer_auth(&site_token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", f.path);
    }

    // A commit in the demo repository reaches the controller by itself.
    let repo = ws.join("manifests");
    let fleet = std::fs::read_to_string(repo.join("fleet.yaml")).unwrap();
    std::fs::write(
        repo.join("fleet.yaml"),
        fleet.replace("volume: 80", "volume: 70"),
    )
    .unwrap();
    let st = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-qam",
            "quieter",
        ])
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let commits = get("/api/commits", &token);
        if commits["commits"].as_array().unwrap().len() == 2 {
            assert_eq!(commits["commits"][0]["state"], "accepted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not pick up the commit: {commits}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The boxes: one real agent per site converges on the new commit.
    let agent =
        std::path::Path::new(env!("CARGO_BIN_EXE_touchline")).with_file_name("touchline-agent");
    if agent.is_file() {
        // (Handball and basketball set their own volume; rugby takes the
        // fleet's.)
        let conf = ws.join("boxes/massy-rugby/app/configuration.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&conf).unwrap_or_default();
            if text.contains("\"volume\": 70") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the massy-rugby box did not apply the commit: {text}\n{}",
                std::fs::read_to_string(ws.join("boxes/massy-rugby/agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let videos = std::fs::read_dir(ws.join("boxes/massy-rugby/videos"))
            .unwrap()
            .count();
        assert!(videos > 0, "videos placed");
        let sites = get("/api/sites", &token);
        let reporting = sites["sites"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["last_seen"].is_null())
            .count();
        assert_eq!(reporting, 12, "every box reported: {sites}");
        // Every box installed its release (a first install does not wait
        // for the maintenance window) and runs what its bundle asks for.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rel = get("/api/releases", &token);
            let rows = rel["releases"].as_array().unwrap();
            let all_match = rows
                .iter()
                .all(|r| r["sites_running"] == r["sites_desired"]);
            let running: u64 = rows.iter().map(|r| r["running"].as_u64().unwrap()).sum();
            if all_match && running == 12 {
                assert!(
                    rows.iter()
                        .any(|r| r["version"] == "2.1.3" && r["running"].as_u64() > Some(0)),
                    "{rel}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the boxes did not all install their release: {rel}\n{}",
                std::fs::read_to_string(ws.join("boxes/massy-rugby/agent.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let current = std::fs::read_link(ws.join("boxes/massy-rugby/software/current")).unwrap();
        let current = current.display().to_string();
        assert!(current.starts_with("releases/2.1."), "{current}");
        // The banner's remote action: a demo box answers system-info.
        let r: Value = http
            .post(format!("{url}/api/sites/massy-rugby/actions"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"action": "system-info"}"#)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let a = get(&format!("/api/sites/massy-rugby/actions/{id}"), &token);
            if a["state"] == "done" {
                assert!(
                    a["output"].as_str().unwrap().contains("\"agent_version\""),
                    "{a}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "system-info not done: {a}");
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        println!(
            "SKIPPED boxes: {} is not built (cargo test --workspace builds it)",
            agent.display()
        );
    }

    // Ctrl-C stops everything cleanly.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::mem::forget(guard);
    assert!(
        !ws.join("data/controller.addr").exists(),
        "the address file is removed on shutdown"
    );
    // No agent of this demo is left running.
    let ws_text = ws.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("touchline-agent") && c.contains(&ws_text))
        .collect();
    assert!(left.is_empty(), "agents still running: {left:?}");
}

//! Remote action latency: `cargo bench -p touchline-agent --bench actions`
//! (`-- --requests N`, default 100).
//!
//! The example fleet on a real `touchline serve` (loopback), one real
//! `touchline-agent run` at its defaults (a one-minute long-poll), and N
//! `system-info` requests through `POST /api/sites/{id}/actions`, one after
//! the other. For each: request → `done` as the client sees it (polling
//! the action every 5 ms) and as the controller's clock has it (request
//! time to the arrival of the box's final update). Prints the median and
//! the 99th percentile of both.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use touchline_testkit::agent_box::AgentBox;
use touchline_testkit::{ControllerFiles, Killed, bin};

const SITE: &str = "cesson-handball";

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize);
    let files = ControllerFiles::example();
    files.add_example_content();
    let c = files.start();
    let admin = files.local_admin_token();
    c.sync(&admin);
    let token = files.site_token(SITE, false);
    let root = files.path("box");
    let b = AgentBox::new(
        &root,
        SITE,
        &files.path("key.pub"),
        Some((&c.url, &token)),
        "space_reserve_bytes = 0\n",
    );
    assert!(b.once().status.success());
    let _agent = Killed(
        Command::new(bin("touchline-agent"))
            .args(["run", "--config"])
            .arg(&b.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let http = reqwest::blocking::Client::new();
    let mut seen = Vec::new();
    let mut server = Vec::new();
    let all = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        let r: Value = serde_json::from_slice(
            &http
                .post(format!("{}/api/sites/{SITE}/actions", c.url))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(json!({"action": "system-info"}).to_string())
                .send()
                .unwrap()
                .bytes()
                .unwrap(),
        )
        .unwrap();
        let id = r["id"].as_str().unwrap().to_owned();
        let done = loop {
            let a: Value = serde_json::from_slice(
                &http
                    .get(format!("{}/api/sites/{SITE}/actions/{id}", c.url))
                    .bearer_auth(&admin)
                    .send()
                    .unwrap()
                    .bytes()
                    .unwrap(),
            )
            .unwrap();
            match a["state"].as_str() {
                Some("done") => break a,
                Some("queued" | "received" | "running") => {}
                other => panic!("system-info ended {other:?}: {a}"),
            }
            assert!(t.elapsed() < Duration::from_secs(30), "not done: {a}");
            std::thread::sleep(Duration::from_millis(5));
        };
        seen.push(t.elapsed());
        let requested: jiff::Timestamp = done["requested_at"].as_str().unwrap().parse().unwrap();
        let last = done["updates"].as_array().unwrap().last().unwrap();
        let arrived: jiff::Timestamp = last["received_at"].as_str().unwrap().parse().unwrap();
        server.push(arrived.duration_since(requested).unsigned_abs());
    }
    let total = all.elapsed();
    println!(
        "system-info on an online box, {requests} requests in {:.1} s: request → done as the client sees it p50 {:.0} ms, p99 {:.0} ms; by the controller's clock p50 {:.0} ms, p99 {:.0} ms",
        total.as_secs_f64(),
        pct(&mut seen, 0.5).as_secs_f64() * 1000.0,
        pct(&mut seen, 0.99).as_secs_f64() * 1000.0,
        pct(&mut server, 0.5).as_secs_f64() * 1000.0,
        pct(&mut server, 0.99).as_secs_f64() * 1000.0,
    );
}

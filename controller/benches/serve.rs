//! Benchmark of `touchline serve` with a 2,000-site fleet, on loopback:
//!
//! 1. conditional bundle polls (304), side by side with nginx serving the
//!    same bundle files from disk with its own ETags, both driven by `wrk`;
//! 2. durable report ingestion (one report per request, acknowledged after
//!    the flush), with `wrk --latency` for p99;
//! 3. commit → new bundle served: `git commit` + `POST /api/sync` until the
//!    new ETag is served, for a change that touches every site;
//! 4. the controller's RSS at the end.
//!
//! Before the controller starts, the status store is filled with
//! `--history-days` (default 30) days of 5-minute reports for every site,
//! through the `Store` API in one-day batches, housekept after each day the
//! way the controller's hourly housekeeping does (default tiers: raw for
//! 48 h, 5-minute points after that); the controller's RSS and a 30-day
//! history query are measured on that store.
//!
//! Run: `cargo bench -p touchline-controller --bench serve`
//! (`-- --sites N --seconds S --history-days D`). Needs `wrk` and `nginx` (Debian packages);
//! without them the comparisons are skipped with a message.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use touchline_controller::redb_store::RedbStore;
use touchline_testkit::synthetic::{Size, generate};
use touchline_testkit::{ControllerFiles, Killed, git};

const OPERATOR: &str = "bench-operator-token-0123456789abcdef0123456789";

fn which(p: &str) -> bool {
    touchline_testkit::which(p).is_some()
}

/// Parses `Requests/sec:` and the latency percentiles of `wrk --latency`.
struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
}

fn to_ms(v: &str) -> f64 {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * mult
}

fn wrk(url: &str, script: &Path, targets: &Path, seconds: u64, conns: u32) -> WrkResult {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .env("WRK_TARGETS", targets)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps = find("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let p50 = find("50%").map_or(f64::NAN, |v| to_ms(&v));
    let p99 = find("99%").map_or(f64::NAN, |v| to_ms(&v));
    let errors = find("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if rps == 0.0 {
        eprintln!(
            "wrk output:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    WrkResult {
        rps,
        p50_ms: p50,
        p99_ms: p99,
        errors,
        requests,
    }
}

const POLL_LUA: &str = r#"
local targets = {}
for line in io.lines(os.getenv("WRK_TARGETS")) do
  local path, tok, etag = line:match("^(%S+) (%S+) (.+)$")
  table.insert(targets, {path = path, tok = tok, etag = etag})
end
local i = 0
function init(args) i = math.random(#targets) end
function request()
  i = i % #targets + 1
  local t = targets[i]
  local h = {["If-None-Match"] = t.etag}
  if t.tok ~= "-" then h["Authorization"] = "Bearer " .. t.tok end
  return wrk.format("GET", t.path, h)
end
"#;

const REPORT_LUA: &str = r#"
local sites = {}
for line in io.lines(os.getenv("WRK_TARGETS")) do
  local site, tok = line:match("^(%S+) (%S+)$")
  table.insert(sites, {site = site, tok = tok})
end
local counter = 0
local id = 0
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) counter = 0 end
function request()
  -- Thread `id` owns every second site; each pass over its sites is one
  -- more sequence number, five minutes later.
  local half = math.floor(#sites / 2)
  local k = counter % half
  local round = math.floor(counter / half) + 1
  counter = counter + 1
  local s = sites[k * 2 + id + 1]
  local t = 1795000000 + round * 300
  local at = os.date("!%Y-%m-%dT%H:%M:%SZ", t)
  local body = string.format('{"format":1,"site":"%s","reports":[{"seq":%d,"at":"%s","status":{"phase":"converged","desired_serial":1,"applied_serial":1},"metrics":{"cpu_percent":%d.5,"memory_percent":41.2,"temperature_c":58.0,"disk_used_bytes":12000000000,"disk_total_bytes":32000000000,"uptime_secs":%d}}]}', s.site, 1000000 + round, at, round % 100, round * 300)
  return wrk.format("POST", "/v1/sites/" .. s.site .. "/reports",
    {["Authorization"] = "Bearer " .. s.tok, ["Content-Type"] = "application/json"}, body)
end
"#;

/// Fills the store with `days` of 5-minute reports for every site, one
/// batch per site and day from 4 threads, with the default history tiers'
/// housekeeping after each day.
fn prefill_history(store: &RedbStore, data: &Path, sites: usize, days: u64) {
    let t = Instant::now();
    let config = touchline_controller::config::Config::default();
    let reports = touchline_testkit::synthetic::simulate_history(
        store,
        sites,
        days,
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_secs(config.history_retention.as_secs() as i64),
        &config.history_tiers,
        4,
    );
    println!(
        "history prefill: {reports} reports ({sites} sites x {days} days x 288) in {:.1} s ({:.0} reports/s in one-day batches); store on disk {:.0} MB",
        t.elapsed().as_secs_f64(),
        reports as f64 / t.elapsed().as_secs_f64(),
        store.size_on_disk(data) as f64 / 1e6
    );
}

fn main() {
    let arg = touchline_testkit::bench_arg;
    let sites = usize::try_from(arg("--sites", 2000)).unwrap();
    let seconds = arg("--seconds", 10);
    let history_days = arg("--history-days", 30);
    let have_wrk = which("wrk");
    let have_nginx = which("nginx") || Path::new("/usr/sbin/nginx").exists();
    let files = ControllerFiles::with_repo(|repo| {
        generate(repo, &Size::bench(sites));
    });
    let tmp = files.dir();
    let repo = files.repo_dir();
    let data = files.data();

    // Tokens straight into the store, before the controller starts.
    let tokens = {
        let store = RedbStore::open(&data).unwrap();
        let tokens = common::mint_site_tokens(&store, sites);
        if history_days > 0 {
            prefill_history(&store, &data, sites, history_days);
        }
        tokens
    };
    common::admin_config(&files, "bench", OPERATOR);
    let t = Instant::now();
    let controller = files.start();
    let pid = controller.process.0.id();
    let url = controller.url.clone();
    println!(
        "controller up with {sites} sites in {:.2} s (first sync included): {url}",
        t.elapsed().as_secs_f64()
    );

    let rss = move || format!("{} kB", common::status_kib(pid, "VmRSS:"));
    println!("controller RSS after start: {}", rss());
    if history_days > 0 {
        let (site, _) = &tokens[sites / 3];
        let t = Instant::now();
        let r = reqwest::blocking::Client::new()
            .get(format!(
                "{url}/api/sites/{site}/history?from=2000-01-01T00:00:00Z"
            ))
            .bearer_auth(OPERATOR)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        println!(
            "{history_days}-day history of one site: {} points in {:.1} ms (JSON)",
            v["points"].as_array().unwrap().len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
        println!("controller RSS after the history query: {}", rss());
    }
    // The status page with every site and the history: median of 5 loads
    // (loopback, so close to the server's time) and the page weight.
    {
        let web = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let form = web.get(format!("{url}/login")).send().unwrap();
        let pre = form
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("tl_login="))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .unwrap();
        let r = web
            .post(format!("{url}/login"))
            .header("cookie", format!("tl_login={pre}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={OPERATOR}&csrf={pre}"))
            .send()
            .unwrap();
        let session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("tl_session="))
            .map(|c| format!("tl_session={}", c.split(';').next().unwrap()))
            .expect("a session");
        let (site, _) = &tokens[sites / 3];
        for (what, path) in [
            ("overview page", "/".to_owned()),
            ("sites page", "/sites".to_owned()),
            ("site page, 7-day charts", format!("/sites/{site}?range=7d")),
        ] {
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let r = web
                    .get(format!("{url}{path}"))
                    .header("cookie", &session)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200, "{path}");
                bytes = r.bytes().unwrap().len();
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "status page, {what} ({sites} sites): median {:.1} ms, {} KB",
                times[2],
                bytes / 1000
            );
        }
    }
    let http = reqwest::blocking::Client::new();
    let www = tmp.join("www");
    let mut poll_targets = String::new();
    for (site, tok) in &tokens {
        let r = http
            .get(format!("{url}/v1/sites/{site}/bundle"))
            .bearer_auth(tok)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let body = r.bytes().unwrap();
        let dir = www.join(format!("v1/sites/{site}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bundle"), &body).unwrap();
        poll_targets.push_str(&format!("/v1/sites/{site}/bundle {tok} {etag}\n"));
    }
    let poll_file = tmp.join("poll-targets");
    std::fs::write(&poll_file, &poll_targets).unwrap();
    let poll_lua = tmp.join("poll.lua");
    std::fs::write(&poll_lua, POLL_LUA).unwrap();

    println!(
        "\n{:<58} {:>10} {:>9} {:>9}",
        "measurement", "req/s", "p50 ms", "p99 ms"
    );
    if !have_wrk {
        println!("SKIPPED: wrk is not installed (apt-get install wrk): no load figures");
    } else {
        let c = wrk(&url, &poll_lua, &poll_file, seconds, 64);
        let rss_polls = rss();
        assert_eq!(c.errors, 0, "non-304 answers from the controller");
        println!(
            "{:<58} {:>10.0} {:>9.2} {:>9.2}",
            "controller: conditional bundle polls (304), 64 conns", c.rps, c.p50_ms, c.p99_ms
        );
        println!("  controller RSS after the polls: {rss_polls}");
        if have_nginx {
            // nginx with the same files, its own ETags, same load.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = tmp.join("nginx.conf");
            std::fs::write(
                &conf,
                format!(
                    "worker_processes 2;\ndaemon off;\npid {}/nginx.pid;\nerror_log {}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {t}/nb; proxy_temp_path {t}/np; fastcgi_temp_path {t}/nf; uwsgi_temp_path {t}/nu; scgi_temp_path {t}/ns;\n  server {{\n    listen 127.0.0.1:{port};\n    root {};\n    location / {{ default_type application/json; etag on; }}\n  }}\n}}\n",
                    tmp.display(),
                    tmp.display(),
                    www.display(),
                    t = tmp.display()
                ),
            )
            .unwrap();
            let nginx = Command::new(if which("nginx") {
                "nginx"
            } else {
                "/usr/sbin/nginx"
            })
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(tmp)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
            let _nginx = Killed(nginx);
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while http
                .get(format!("{base}/v1/sites/site-00000/bundle"))
                .send()
                .is_err()
            {
                assert!(Instant::now() < deadline, "nginx did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut ng_targets = String::new();
            for (site, _) in &tokens {
                let r = http
                    .head(format!("{base}/v1/sites/{site}/bundle"))
                    .send()
                    .unwrap();
                let etag = r.headers()["etag"].to_str().unwrap().to_owned();
                ng_targets.push_str(&format!("/v1/sites/{site}/bundle - {etag}\n"));
            }
            let ng_file = tmp.join("nginx-targets");
            std::fs::write(&ng_file, ng_targets).unwrap();
            let n = wrk(&base, &poll_lua, &ng_file, seconds, 64);
            println!(
                "{:<58} {:>10.0} {:>9.2} {:>9.2}",
                "nginx 1.22 (2 workers): same files, its own ETags (304)",
                n.rps,
                n.p50_ms,
                n.p99_ms
            );
            println!(
                "{:<58} {:>9.0}%",
                "controller / nginx",
                100.0 * c.rps / n.rps
            );
        } else {
            println!("SKIPPED: nginx is not installed (apt-get install nginx-light): no reference");
        }

        // Durable report ingestion.
        let report_file = tmp.join("report-targets");
        let mut f = std::fs::File::create(&report_file).unwrap();
        for (site, tok) in &tokens {
            writeln!(f, "{site} {tok}").unwrap();
        }
        let report_lua = tmp.join("report.lua");
        std::fs::write(&report_lua, REPORT_LUA).unwrap();
        let r = wrk(&url, &report_lua, &report_file, seconds, 32);
        assert_eq!(r.errors, 0, "report batches refused");
        println!(
            "{:<58} {:>10.0} {:>9.2} {:>9.2}",
            "controller: reports (1 per request, flushed before 200)", r.rps, r.p50_ms, r.p99_ms
        );
        println!("  {} reports stored", r.requests);
    }

    // Commit -> new bundle served, for a change that touches every site.
    let mut lags = Vec::new();
    for round in 0..3 {
        let volume = 70 + round;
        common::set_fleet_volume(&repo, volume);
        let (site, tok) = &tokens[sites / 2];
        let old = http
            .get(format!("{url}/v1/sites/{site}/bundle"))
            .bearer_auth(tok)
            .send()
            .unwrap()
            .headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        git(&repo, &["commit", "-qam", &format!("volume {volume}")]);
        let t = Instant::now();
        let r = http
            .post(format!("{url}/api/sync"))
            .bearer_auth(OPERATOR)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .get(format!("{url}/v1/sites/{site}/bundle"))
            .bearer_auth(tok)
            .header("If-None-Match", &old)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "new bundle served");
        lags.push(t.elapsed().as_secs_f64());
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "{:<58} {:>9.3} s (median of 3; min {:.3}, max {:.3})",
        "commit -> new ETag served (sync + render + sign 2000 + fsync)", lags[1], lags[0], lags[2]
    );

    println!(
        "controller memory at the end: VmRSS {} kB, VmHWM {} kB",
        common::status_kib(pid, "VmRSS:"),
        common::status_kib(pid, "VmHWM:")
    );
    let du = Command::new("du")
        .args(["-sh"])
        .arg(data.join("status.redb"))
        .output()
        .unwrap();
    println!(
        "status store on disk: {}",
        String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
}

//! Soak: `--boxes` simulated boxes (default 10,000) against one real
//! `touchline serve` for `--seconds` (default 600), over the wire protocol
//! the agent speaks. Each box has its own HTTP client (its own connection
//! pool, as an agent has) and holds a long-poll on its bundle with its
//! ETag (`?wait=30`); a report goes out on a second connection while the
//! poll stays open, as the agent's heartbeat does. It reports: the fleet's 5-minute metrics scaled to
//! the same per-second load as real boxes (`--reports-per-second`, default
//! 35), plus one report by every box that gets a new bundle (the burst
//! after a commit). A box whose request fails retries after a backoff and
//! keeps its unacknowledged reports, as the agent does.
//!
//! Mid-run: at 10 % and 80 % of the run a commit that changes every site
//! (`POST /api/sync` right after it); at 40 % a controller restart
//! (SIGKILL, then a start on the same port: failures while it is down are
//! counted apart); from 60 % to 70 %, 1,000 slow hostile connections that
//! send a request head one byte every 5 s.
//!
//! At the end: every box's last acknowledged report is read back from the
//! controller (lost = acknowledged but not stored), and a table with the
//! failures, the commit → new-ETag distribution, outside the commit bursts
//! how late long-polls without news come back and how long a poll takes to
//! answer (probes: 1 box in 100 polls with `wait=0` every 5 s), and the
//! controller's peak RSS and descriptors (overall and per tenth of the run).
//!
//! Run: `cargo bench -p touchline-controller --bench soak`
//! (`-- --boxes N --seconds S --reports-per-second R`).

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use touchline_testkit::{ControllerFiles, RunningController, git};

const OPERATOR: &str = "soak-operator-token-0123456789abcdef0123456789ab";
const WAIT: u64 = 30;

/// What the run counts, shared by every box.
#[derive(Default)]
struct Tally {
    /// Requests that failed while the controller was up.
    failed: AtomicU64,
    /// Requests that failed while it restarted (retried by the backoff).
    failed_in_restart: AtomicU64,
    polls: AtomicU64,
    reports_acked: AtomicU64,
    /// Answer time minus the wait of 304s, outside the commit bursts (µs;
    /// the controller answers up to a tenth of the wait early, so this is
    /// how late an answer without news comes).
    overhead_us: Mutex<Vec<u64>>,
    /// Answer times of the probe polls (`wait=0`), outside the bursts (µs).
    probe_us: Mutex<Vec<u64>>,
    /// Commit → new ETag per box, for each commit (ms).
    converge_ms: Mutex<BTreeMap<u32, Vec<u64>>>,
    /// A sample of the errors.
    errors: Mutex<Vec<String>>,
}

struct Run {
    url: String,
    started: Instant,
    restarting: AtomicBool,
    /// The commit in flight: its number and when it was made.
    commit: Mutex<Option<(u32, Instant)>>,
    /// No overhead sample is taken during a burst.
    burst_until: Mutex<Instant>,
    stop: AtomicBool,
    tally: Tally,
}

impl Run {
    fn fail(&self, what: String) {
        if self.restarting.load(Ordering::SeqCst) {
            self.tally.failed_in_restart.fetch_add(1, Ordering::Relaxed);
        } else {
            self.tally.failed.fetch_add(1, Ordering::Relaxed);
            let mut e = self.tally.errors.lock().unwrap();
            if e.len() < 10 {
                e.push(format!(
                    "{:.1} s: {what}",
                    self.started.elapsed().as_secs_f64()
                ));
            }
        }
    }
}

fn report_json(site: &str, seq: u64, serial: u64) -> String {
    serde_json::json!({"format": 1, "site": site, "reports": [{
        "seq": seq, "at": jiff::Timestamp::now().to_string(),
        "status": {"phase": "converged", "applied_serial": serial, "desired_serial": serial},
        "metrics": {"cpu_percent": 12.5, "memory_percent": 40.0, "temperature_c": 55.0,
                    "disk_used_bytes": 10_000_000_000u64, "disk_total_bytes": 32_000_000_000u64}}]})
    .to_string()
}

/// The `ETag` of an answer.
fn etag_of(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One box: long-polls, and sends its due reports in order, retrying.
struct BoxSim {
    site: String,
    token: String,
    etag: Option<String>,
    serial: u64,
    /// The next sequence number and the highest acknowledged one.
    next_seq: u64,
    acked: u64,
    /// Reports made but not acknowledged yet.
    due: u64,
}

async fn send_reports(run: &Run, http: &reqwest::Client, b: &mut BoxSim) -> bool {
    while b.due > 0 {
        let seq = b.next_seq;
        let r = http
            .post(format!("{}/v1/sites/{}/reports", run.url, b.site))
            .bearer_auth(&b.token)
            .header("content-type", "application/json")
            .body(report_json(&b.site, seq, b.serial))
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                b.acked = seq;
                b.next_seq += 1;
                b.due -= 1;
                run.tally.reports_acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                run.fail(format!("report {}: HTTP {}", b.site, r.status()));
                return false;
            }
            Err(e) => {
                run.fail(format!("report {}: {e}", b.site));
                return false;
            }
        }
    }
    true
}

async fn box_loop(
    run: Arc<Run>,
    http: reqwest::Client,
    mut b: BoxSim,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut backoff = Duration::from_millis(500);
    while !run.stop.load(Ordering::Relaxed) {
        while reports.try_recv().is_ok() {
            b.due += 1;
        }
        if b.due > 0 && !send_reports(&run, &http, &mut b).await {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(8));
            continue;
        }
        let mut req = http
            .get(format!(
                "{}/v1/sites/{}/bundle?wait={WAIT}",
                run.url, b.site
            ))
            .bearer_auth(&b.token)
            .timeout(Duration::from_secs(WAIT + 20));
        if let Some(e) = &b.etag {
            req = req.header("if-none-match", e);
        }
        let t = Instant::now();
        // A due report goes out while the long-poll stays open, on a
        // second connection, as the agent's heartbeat does.
        let poll = req.send();
        tokio::pin!(poll);
        let answer = loop {
            tokio::select! {
                r = &mut poll => break r,
                Some(()) = reports.recv() => {
                    b.due += 1;
                    send_reports(&run, &http, &mut b).await;
                }
            }
        };
        run.tally.polls.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(r) if r.status() == 304 => {
                backoff = Duration::from_millis(500);
                let over = t.elapsed().saturating_sub(Duration::from_secs(WAIT));
                if Instant::now() > *run.burst_until.lock().unwrap() {
                    run.tally
                        .overhead_us
                        .lock()
                        .unwrap()
                        .push(over.as_micros() as u64);
                }
            }
            Ok(r) if r.status() == 200 => {
                backoff = Duration::from_millis(500);
                let etag = etag_of(&r);
                let body = r.bytes().await.unwrap_or_default();
                let first = b.etag.is_none();
                if etag != b.etag {
                    b.etag = etag;
                    b.serial = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["serial"].as_u64())
                        .unwrap_or(b.serial);
                    if !first && let Some((n, at)) = *run.commit.lock().unwrap() {
                        run.tally
                            .converge_ms
                            .lock()
                            .unwrap()
                            .entry(n)
                            .or_default()
                            .push(at.elapsed().as_millis() as u64);
                    }
                    // Applied: one report says so.
                    b.due += 1;
                }
            }
            Ok(r) => {
                run.fail(format!("poll {}: HTTP {}", b.site, r.status()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
            Err(e) => {
                run.fail(format!("poll {}: {e}", b.site));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
    }
    // Flush what is due before the final count.
    for _ in 0..20 {
        if b.due == 0 || send_reports(&run, &http, &mut b).await {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ACKED
        .lock()
        .unwrap()
        .push((b.site.clone(), b.acked, b.token.clone()));
}

/// A probe: every `PROBE_EVERY` a poll that asks not to wait (`wait=0`,
/// with the ETag it last saw), to time how long the controller takes to
/// answer a poll under the soak's load.
async fn probe_loop(run: Arc<Run>, http: reqwest::Client, site: String, token: String) {
    let mut etag: Option<String> = None;
    while !run.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(PROBE_EVERY).await;
        let mut req = http
            .get(format!("{}/v1/sites/{site}/bundle?wait=0", run.url))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(20));
        if let Some(e) = &etag {
            req = req.header("if-none-match", e);
        }
        let t = Instant::now();
        let Ok(r) = req.send().await else { continue };
        if r.status() == 200 {
            etag = etag_of(&r);
            let _ = r.bytes().await;
        }
        if etag.is_some()
            && !run.restarting.load(Ordering::SeqCst)
            && Instant::now() > *run.burst_until.lock().unwrap()
        {
            run.tally
                .probe_us
                .lock()
                .unwrap()
                .push(t.elapsed().as_micros() as u64);
        }
    }
}

const PROBE_EVERY: Duration = Duration::from_secs(5);

static ACKED: Mutex<Vec<(String, u64, String)>> = Mutex::new(Vec::new());

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn commit_every_site(files: &ControllerFiles, volume: u32) {
    let repo = files.repo_dir();
    common::set_fleet_volume(&repo, volume);
    git(&repo, &["commit", "-qam", &format!("volume {volume}")]);
}

fn pct(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn main() {
    let arg = touchline_testkit::bench_arg;
    let boxes = usize::try_from(arg("--boxes", 10_000)).unwrap();
    let seconds = arg("--seconds", 600);
    let rate = arg("--reports-per-second", 35);
    let (soft, _) = touchline_controller::listen::raise_open_files_limit();
    println!("soak: {boxes} boxes, {seconds} s, {rate} reports/s; open-files limit {soft:?}");
    let (files, tokens) = common::synthetic_fleet(boxes, "soak", OPERATOR);
    let listen = format!("127.0.0.1:{}", touchline_testkit::free_port());
    let controller: Arc<Mutex<Option<RunningController>>> =
        Arc::new(Mutex::new(Some(files.start_on(&listen))));
    let pid = Arc::new(AtomicU64::new(u64::from(
        controller.lock().unwrap().as_ref().unwrap().process.0.id(),
    )));
    let url = format!("http://{listen}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Each box has its own client, and so its own connection pool, as an
    // agent does: at most its long-poll and a report at once.
    let made = Instant::now();
    // One TLS setup for all (the boxes speak plain HTTP here).
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let clients: Vec<reqwest::Client> = rt.block_on(async {
        (0..boxes)
            .map(|_| {
                reqwest::Client::builder()
                    .tls_backend_preconfigured(tls.clone())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build()
                    .unwrap()
            })
            .collect()
    });
    println!(
        "{boxes} clients made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let run = Arc::new(Run {
        url: url.clone(),
        started: Instant::now(),
        restarting: AtomicBool::new(false),
        commit: Mutex::new(None),
        burst_until: Mutex::new(Instant::now()),
        stop: AtomicBool::new(false),
        tally: Tally::default(),
    });
    let mut feeds = Vec::with_capacity(boxes);
    let mut tasks = Vec::with_capacity(boxes);
    let mut probes = Vec::new();
    for (i, ((site, token), http)) in tokens.into_iter().zip(clients).enumerate() {
        if i % 100 == 0 {
            probes.push(rt.spawn(probe_loop(
                run.clone(),
                http.clone(),
                site.clone(),
                token.clone(),
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        feeds.push(tx);
        let b = BoxSim {
            site,
            token,
            etag: None,
            serial: 0,
            next_seq: 1,
            acked: 0,
            due: 0,
        };
        tasks.push(rt.spawn(box_loop(run.clone(), http, b, rx)));
    }
    // The metrics schedule: `rate` reports a second, round robin.
    let feeder = {
        let run = run.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            let mut i = 0;
            while !run.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let _ = feeds[i % feeds.len()].send(());
                i += 1;
            }
        })
    };
    // RSS and descriptors, sampled every second: the peaks, and the
    // peaks of each tenth of the run (where they happen).
    let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let tenths = Arc::new(Mutex::new([(0u64, 0u64); 10]));
    let sampler = {
        let (peaks, tenths, pid, run) = (peaks.clone(), tenths.clone(), pid.clone(), run.clone());
        std::thread::spawn(move || {
            while !run.stop.load(Ordering::Relaxed) {
                let p = u32::try_from(pid.load(Ordering::SeqCst)).unwrap();
                let (rss, open) = (common::status_kib(p, "VmRSS:"), fds(p) as u64);
                peaks.0.fetch_max(rss, Ordering::Relaxed);
                peaks.1.fetch_max(open, Ordering::Relaxed);
                let tenth = usize::try_from(run.started.elapsed().as_secs() * 10 / seconds.max(1))
                    .unwrap()
                    .min(9);
                let mut t = tenths.lock().unwrap();
                t[tenth].0 = t[tenth].0.max(rss);
                t[tenth].1 = t[tenth].1.max(open);
                drop(t);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let at = |share: u64| Duration::from_secs(seconds * share / 100);
    let sync = || {
        reqwest::blocking::Client::new()
            .post(format!("{url}/api/sync"))
            .bearer_auth(OPERATOR)
            .timeout(Duration::from_secs(120))
            .send()
            .map(|r| r.status())
    };
    let wait_until = |t: Duration| {
        if let Some(d) = t.checked_sub(run.started.elapsed()) {
            std::thread::sleep(d);
        }
    };
    let mut timeline = Vec::new();
    for (n, share) in [(1u32, 10u64), (2, 80)] {
        if n == 2 {
            // The restart at 40 %, the hostile connections at 60–70 %.
            wait_until(at(40));
            run.restarting.store(true, Ordering::SeqCst);
            let t = Instant::now();
            drop(controller.lock().unwrap().take());
            let c = files.start_on(&listen);
            pid.store(u64::from(c.process.0.id()), Ordering::SeqCst);
            *controller.lock().unwrap() = Some(c);
            let down = t.elapsed();
            std::thread::sleep(Duration::from_secs(2));
            run.restarting.store(false, Ordering::SeqCst);
            timeline.push(format!(
                "restart (SIGKILL → listening again): {:.1} s",
                down.as_secs_f64()
            ));
            wait_until(at(60));
            let slow: Vec<std::net::TcpStream> = (0..1000)
                .filter_map(|_| std::net::TcpStream::connect(&listen).ok())
                .collect();
            let opened = slow.len();
            let head = b"GET /api/sites HTTP/1.1\r\nHost: x\r\n";
            let mut slow: Vec<_> = slow.into_iter().map(|s| (s, 0usize)).collect();
            while run.started.elapsed() < at(70) {
                for (s, i) in &mut slow {
                    use std::io::Write as _;
                    if *i < head.len() && s.write_all(&head[*i..=*i]).is_ok() {
                        *i += 1;
                    }
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            timeline.push(format!(
                "{opened} slow hostile connections held from 60 % to 70 %"
            ));
            drop(slow);
        }
        wait_until(at(share));
        commit_every_site(&files, 70 + n);
        *run.burst_until.lock().unwrap() = Instant::now() + Duration::from_secs(30);
        *run.commit.lock().unwrap() = Some((n, Instant::now()));
        let status = sync();
        timeline.push(format!("commit {n} at {share} %: sync {status:?}"));
    }
    wait_until(Duration::from_secs(seconds));
    run.stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        feeder.abort();
        for t in tasks.into_iter().chain(probes) {
            let _ = t.await;
        }
    });
    sampler.join().unwrap();

    // Lost reports: acknowledged, not stored.
    let check = reqwest::blocking::Client::new();
    let mut lost = 0u64;
    let acked = std::mem::take(&mut *ACKED.lock().unwrap());
    for (site, seq, _) in &acked {
        if *seq == 0 {
            continue;
        }
        let v: serde_json::Value = check
            .get(format!("{url}/api/sites/{site}"))
            .bearer_auth(OPERATOR)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if v["report"]["seq"].as_u64() != Some(*seq) {
            lost += 1;
        }
    }
    let t = &run.tally;
    let mut over = std::mem::take(&mut *t.overhead_us.lock().unwrap());
    let mut probe = std::mem::take(&mut *t.probe_us.lock().unwrap());
    println!("\n| measurement | figure |\n| --- | --- |");
    for line in &timeline {
        println!("| event | {line} |");
    }
    println!("| polls answered | {} |", t.polls.load(Ordering::Relaxed));
    println!(
        "| reports acknowledged | {} |",
        t.reports_acked.load(Ordering::Relaxed)
    );
    println!(
        "| failed requests while the controller was up | {} |",
        t.failed.load(Ordering::Relaxed)
    );
    println!(
        "| failed requests during the restart (retried) | {} |",
        t.failed_in_restart.load(Ordering::Relaxed)
    );
    println!(
        "| boxes whose last acknowledged report is not stored (lost) | {lost} of {} |",
        acked.len()
    );
    for (n, v) in t.converge_ms.lock().unwrap().iter_mut() {
        let count = v.len();
        println!(
            "| commit {n} → new ETag, {count} of {boxes} boxes | p50 {} ms, p99 {} ms, max {} ms |",
            pct(v, 50),
            pct(v, 99),
            pct(v, 100)
        );
    }
    println!(
        "| long-poll without news answered after the wait, outside bursts ({} polls) | p99 {:.1} ms late, max {:.1} ms |",
        over.len(),
        pct(&mut over, 99) as f64 / 1000.0,
        pct(&mut over, 100) as f64 / 1000.0
    );
    println!(
        "| poll answer (`wait=0` probes by 1 box in 100 every 5 s), outside bursts ({} polls) | p50 {:.1} ms, p99 {:.1} ms |",
        probe.len(),
        pct(&mut probe, 50) as f64 / 1000.0,
        pct(&mut probe, 99) as f64 / 1000.0
    );
    println!(
        "| controller peak RSS | {} MiB |",
        peaks.0.load(Ordering::Relaxed) / 1024
    );
    println!(
        "| controller peak descriptors | {} |",
        peaks.1.load(Ordering::Relaxed)
    );
    for (i, (rss, open)) in tenths.lock().unwrap().iter().enumerate() {
        println!(
            "| peak from {} % to {} % of the run | {} MiB, {open} descriptors |",
            i * 10,
            i * 10 + 10,
            rss / 1024
        );
    }
    for e in t.errors.lock().unwrap().iter() {
        println!("error sample: {e}");
    }
}

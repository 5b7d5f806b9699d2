//! Agent benchmark: `cargo bench -p touchline-agent --bench agent`
//! (`-- --idle-seconds N --download-mb M`; `--idle-seconds 0` skips 4,
//! `--download-mb 0` skips 3).
//!
//! 1. stripped release binary size;
//! 2. a no-op pass with 200 videos present (in process): time and bytes
//!    re-hashed;
//! 3. download of a large file from the real controller on loopback through
//!    the agent (temp file, streaming sha256, checkpoints, rename), side by
//!    side with `curl -o` of the same URL in the same run;
//! 4. `touchline-agent run` at defaults against the real controller for
//!    `--idle-seconds` (default 600): VmHWM, CPU, and bytes on the wire
//!    (counted by a TCP relay between agent and controller), per hour.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use touchline_agent::agent::{Agent, Origin, Outcome};
use touchline_agent::clock::SystemClock;
use touchline_agent::config::Config;
use touchline_schemas::bundle::{AgentSettings, BUNDLE_FORMAT, BundleFile};
use touchline_schemas::{Bundle, Sha256, SigningKey, SiteId, TargetPath};
use touchline_testkit::{AgentBox, ControllerFiles, Killed, bin, run};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_touchline-agent"))
}

/// Runs `cmd`; asserts success; its stdout.
fn ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn bundle(site: &str, files: &[(String, Sha256, u64)]) -> Bundle {
    let now = jiff::Timestamp::now();
    Bundle {
        agent_release: None,
        agent: AgentSettings::default(),
        commit: None,
        config: serde_json::json!({"volume": 80})
            .as_object()
            .unwrap()
            .clone(),
        expires_at: now + jiff::SignedDuration::from_hours(24),
        files: files
            .iter()
            .map(|(p, h, n)| BundleFile {
                path: TargetPath::new(p).unwrap(),
                sha256: *h,
                size: *n,
                urls: vec![],
            })
            .collect(),
        format: BUNDLE_FORMAT,
        step: 0,
        issued_at: now,
        serial: 1,
        site: SiteId::new(site).unwrap(),
        software: None,
    }
}

/// A box under `dir` for `site` (no space reserve), its `agent.toml`.
fn write_box_config(dir: &Path, site: &str, keys: &Path, extra: &str) -> PathBuf {
    AgentBox::new(
        dir,
        site,
        keys,
        None,
        &format!("space_reserve_bytes = 0\n{extra}"),
    )
    .config
}

/// Counts bytes both ways between the agent and the controller.
fn relay(target: std::net::SocketAddr) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                c.fetch_add(n as u64, Ordering::Relaxed);
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (url, count)
}

fn proc_status(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let arg = touchline_testkit::bench_arg;
    let idle = arg("--idle-seconds", 600);
    let mb = arg("--download-mb", 500);
    let tmp = tempfile::tempdir().unwrap();

    // 1. Binary size.
    let stripped = tmp.path().join("touchline-agent.stripped");
    std::fs::copy(agent_bin(), &stripped).unwrap();
    let strip = Command::new("strip").arg(&stripped).status();
    println!(
        "agent binary: {:.1} MB ({}), release build of this tree",
        std::fs::metadata(&stripped).unwrap().len() as f64 / 1e6,
        if strip.is_ok_and(|s| s.success()) {
            "stripped"
        } else {
            "NOT stripped: no `strip`"
        }
    );

    // 2. No-op pass with 200 videos, in process.
    let key = SigningKey::generate();
    let keys = tmp.path().join("trusted");
    std::fs::write(&keys, key.public_key_openssh()).unwrap();
    let boxdir = tmp.path().join("box200");
    std::fs::create_dir_all(&boxdir).unwrap();
    let src = tmp.path().join("usb");
    std::fs::create_dir_all(src.join("content")).unwrap();
    let mut files = Vec::new();
    for i in 0..200u32 {
        let bytes: Vec<u8> = (0..512 * 1024u32).map(|k| (k ^ i) as u8).collect();
        let h = Sha256::digest(&bytes);
        std::fs::write(src.join("content").join(h.to_hex()), &bytes).unwrap();
        files.push((
            format!("Sponsors/S{}/clip-{i:03}.mp4", i % 10),
            h,
            bytes.len() as u64,
        ));
    }
    let body = bundle("bench-box", &files).to_canonical_json();
    std::fs::write(src.join("bundle.json"), &body).unwrap();
    std::fs::write(src.join("bundle.json.sig"), key.sign(&body).unwrap()).unwrap();
    let cfg = Config::load(&write_box_config(&boxdir, "bench-box", &keys, "")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut agent = Agent::open(cfg, Box::new(SystemClock::from_env())).unwrap();
        let origin = Origin::Dir(src.clone());
        let outcome = agent.pass(&origin).await;
        assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
        // The first no-op pass hashes the store's copies once (they were
        // hashed while downloading by a previous pass); measure after it.
        let outcome = agent.pass(&origin).await;
        assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
        let mut times = Vec::new();
        let before = touchline_agent::fetch::BYTES_REHASHED.load(Ordering::Relaxed);
        for _ in 0..20 {
            let t = Instant::now();
            let outcome = agent.pass(&origin).await;
        assert!(matches!(outcome, Outcome::Converged), "{outcome:?}");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let hashed = touchline_agent::fetch::BYTES_REHASHED.load(Ordering::Relaxed) - before;
        times.sort_by(f64::total_cmp);
        println!(
            "no-op pass, 200 videos (100 MB) present: median {:.2} ms, max {:.2} ms over 20 passes; {hashed} bytes re-hashed",
            times[10], times[19]
        );
    });

    // A controller with the example fleet.
    let t = bin("touchline");
    let files = ControllerFiles::example();
    let repo = files.repo_dir();
    let data = files.data();
    let content = tmp.path().join("content");
    ok(Command::new(&t)
        .args(["content", "generate-example", "--out"])
        .arg(&content)
        .arg(&repo));
    let mut all = Vec::new();
    let mut stack = vec![content.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                all.push(e.path());
            }
        }
    }
    // The large file for the download comparison.
    let big = tmp.path().join("big.mp4");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let block: Vec<u8> = (0..1024 * 1024u32)
            .map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for i in 0..mb {
            let mut b = block.clone();
            b[0] = i as u8;
            f.write_all(&b).unwrap();
        }
    }
    all.push(big.clone());
    let added = ok(Command::new(&t)
        .args(["content", "add", "--data"])
        .arg(&data)
        .args(&all));
    let big_line = added.lines().last().unwrap().to_owned();
    let mut parts = big_line.split_whitespace();
    let big_hash = parts.next().unwrap().to_owned();
    let big_size: u64 = parts.next().unwrap().parse().unwrap();
    let site = "massy-rugby";
    // The controller serves a box only the content its bundle names: the
    // large file goes into another site's bundle, through git (the idle
    // box below stays on the example's small videos).
    let dl_site = "vannes-rugby";
    if mb > 0 {
        let repo = files.repo();
        let catalog =
            std::fs::read_to_string(files.repo_dir().join("videos/catalog.yaml")).unwrap();
        repo.file(
            "videos/catalog.yaml",
            format!(
                "{catalog}  - id: bench-big\n    title: Bench\n    file: big.mp4\n    category: Bench\n    subcategory: Big\n    sha256: {big_hash}\n    size: {big_size}\n"
            ),
        );
        let site_file = format!("sites/{dl_site}.yaml");
        let yaml = std::fs::read_to_string(files.repo_dir().join(&site_file)).unwrap();
        repo.file(
            &site_file,
            yaml.replacen("overrides:\n", "overrides:\n  videos: [bench-big]\n", 1),
        );
        repo.commit("bench: the large file");
    }
    let token = ok(Command::new(&t)
        .args(["site", "token", "--data"])
        .arg(&data)
        .arg(dl_site))
    .trim()
    .to_owned();
    let controller = files.start();
    let url = controller.url.clone();

    // 3. Download: agent vs curl, same URL, same run (3 rounds each);
    // `--download-mb 0` skips it.
    if mb > 0 {
        // 3. Download: agent vs curl, same URL, same run (3 rounds each).
        let have_curl = Command::new("curl").arg("--version").output().is_ok();
        let dl_box = tmp.path().join("dl");
        std::fs::create_dir_all(&dl_box).unwrap();
        let usb = tmp.path().join("usb-big");
        std::fs::create_dir_all(&usb).unwrap();
        let b = bundle(
            dl_site,
            &[(
                "big/big.mp4".into(),
                Sha256::new(&big_hash).unwrap(),
                big_size,
            )],
        );
        let body = b.to_canonical_json();
        std::fs::write(usb.join("bundle.json"), &body).unwrap();
        std::fs::write(usb.join("bundle.json.sig"), key.sign(&body).unwrap()).unwrap();
        let mut agent_s = Vec::new();
        let mut curl_s = Vec::new();
        let mut curl_sync_s = Vec::new();
        for round in 0..3 {
            let _ = std::fs::remove_dir_all(dl_box.join("state"));
            let _ = std::fs::remove_dir_all(dl_box.join("videos"));
            let cfg = write_box_config(
                &dl_box,
                dl_site,
                &keys,
                &format!("controller_url = \"{url}\"\ntoken = \"{token}\""),
            );
            let t0 = Instant::now();
            let out = Command::new(agent_bin())
                .args(["apply-dir"])
                .arg(&usb)
                .arg("--config")
                .arg(&cfg)
                .env("TOUCHLINE_LOG", "warn")
                .output()
                .unwrap();
            agent_s.push(t0.elapsed().as_secs_f64());
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if have_curl {
                let dest = tmp.path().join("curl.out");
                let t0 = Instant::now();
                let st = Command::new("curl")
                    .args(["-sf", "-o"])
                    .arg(&dest)
                    .arg("-H")
                    .arg(format!("Authorization: Bearer {token}"))
                    .arg(format!("{url}/v1/content/{big_hash}"))
                    .status()
                    .unwrap();
                curl_s.push(t0.elapsed().as_secs_f64());
                assert!(st.success());
                // The same bytes made durable (the agent fsyncs before it
                // renames into the store): curl's time plus `sync <file>`.
                let t1 = Instant::now();
                let _ = Command::new("sync").arg(&dest).status();
                curl_sync_s
                    .push(curl_s.last().copied().unwrap_or(0.0) + t1.elapsed().as_secs_f64());
                let _ = std::fs::remove_file(dest);
            }
        }
        agent_s.sort_by(f64::total_cmp);
        let mbps = |s: f64| big_size as f64 / s / 1e6;
        println!(
            "download {} MB from the controller on loopback: agent (hash, checkpoints, fsync, rename, hard link) median {:.2} s = {:.0} MB/s",
            big_size / 1_000_000,
            agent_s[1],
            mbps(agent_s[1])
        );
        if have_curl {
            curl_s.sort_by(f64::total_cmp);
            curl_sync_s.sort_by(f64::total_cmp);
            println!(
                "  curl -o of the same URL: median {:.2} s = {:.0} MB/s; agent / curl throughput: {:.0} %",
                curl_s[1],
                mbps(curl_s[1]),
                100.0 * curl_s[1] / agent_s[1]
            );
            println!(
                "  curl -o + sync of the file (durable, like the agent): median {:.2} s = {:.0} MB/s; agent / that: {:.0} %",
                curl_sync_s[1],
                mbps(curl_sync_s[1]),
                100.0 * curl_sync_s[1] / agent_s[1]
            );
        } else {
            println!("  SKIPPED curl reference: curl is not installed");
        }
        // What the agent does that curl does not: SHA-256 of every byte. On
        // loopback with two cores (controller, receive, hash+write) that CPU
        // is the gap; a club's line is a thousand times slower than the hash.
        let hash_s = {
            let t0 = Instant::now();
            let got = touchline_agent::fetch::hash_file(&big).unwrap();
            assert_eq!(got.to_hex(), big_hash);
            t0.elapsed().as_secs_f64()
        };
        println!(
            "  SHA-256 of the same file from the page cache, one core: {hash_s:.2} s = {:.0} MB/s",
            mbps(hash_s)
        );
    }
    if idle == 0 {
        return;
    }
    // 4. Idle daemon at defaults, through a byte-counting relay.
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let (relay_url, wire) = relay(addr);
    let idle_box = tmp.path().join("idle");
    std::fs::create_dir_all(&idle_box).unwrap();
    // (The store is locked by the running controller: `site token` goes
    // through it.)
    let token2 = ok(Command::new(&t)
        .args(["site", "token", "--rotate", "--data"])
        .arg(&data)
        .arg(site));
    let cfg = write_box_config(
        &idle_box,
        site,
        &files.path("key.pub"),
        &format!(
            "controller_url = \"{relay_url}\"\ntoken = \"{}\"",
            token2.trim()
        ),
    );
    let warm = Command::new(agent_bin())
        .args(["once", "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    let child = Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let agent = Killed(child);
    std::thread::sleep(Duration::from_secs(5));
    let (w0, c0, t0) = (wire.load(Ordering::Relaxed), cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(idle));
    let (w1, c1) = (wire.load(Ordering::Relaxed), cpu_ticks(pid));
    let secs = t0.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "idle `run` at defaults for {secs:.0} s: VmHWM {}, VmRSS {}, CPU {:.3} % of one core, wire {:.1} KB/hour ({} bytes in {secs:.0} s)",
        proc_status(pid, "VmHWM:"),
        proc_status(pid, "VmRSS:"),
        100.0 * (c1 - c0) as f64 / hz / secs,
        (w1 - w0) as f64 * 3600.0 / secs / 1000.0,
        w1 - w0
    );
    drop(agent);
}

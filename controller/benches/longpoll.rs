//! What a waiting box costs the controller: `--boxes` sites (default
//! 5,000), each with its own token, each holding one long-poll
//! (`GET /v1/sites/{id}/bundle?wait=120` with its current ETag) on its own
//! connection, as a fleet between commits does. Prints the controller's RSS
//! before, with every poll waiting and after they closed, the cost per
//! waiting poll, and the time a commit takes to answer all of them.
//!
//! Run: `cargo bench -p touchline-controller --bench longpoll`
//! (`-- --boxes N`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use touchline_testkit::git;

const OPERATOR: &str = "bench-operator-token-0123456789abcdef0123456789";

/// Open sockets of `pid` (its descriptors that are sockets).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn main() {
    let boxes = usize::try_from(touchline_testkit::bench_arg("--boxes", 5000)).unwrap();
    // Both ends hold one descriptor per box.
    let (soft, hard) = touchline_controller::listen::raise_open_files_limit();
    println!("bench open-files limit: {soft:?} (hard {hard:?})");
    let (files, tokens) = common::synthetic_fleet(boxes, "bench", OPERATOR);
    let controller = files.start();
    let pid = controller.process.0.id();
    let url = controller.url.clone();
    let addr = url.trim_start_matches("http://").to_owned();

    // Each box's current ETag (one ordinary poll each).
    let http = reqwest::blocking::Client::new();
    let etags: Vec<String> = tokens
        .iter()
        .map(|(site, tok)| {
            let r = http
                .get(format!("{url}/v1/sites/{site}/bundle"))
                .bearer_auth(tok)
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "{site}");
            r.headers()["etag"].to_str().unwrap().to_owned()
        })
        .collect();
    drop(http);
    std::thread::sleep(Duration::from_secs(2));
    let before = common::status_kib(pid, "VmRSS:");
    let sockets_before = sockets(pid);

    let t = Instant::now();
    let mut polls: Vec<TcpStream> = tokens
        .iter()
        .zip(&etags)
        .map(|((site, tok), etag)| {
            let mut s = TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "GET /v1/sites/{site}/bundle?wait=120 HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {tok}\r\nIf-None-Match: {etag}\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect();
    // Wait until the controller holds them all.
    while sockets(pid) < sockets_before + boxes && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let waiting = common::status_kib(pid, "VmRSS:");
    println!(
        "{boxes} long-polls opened in {:.2} s; controller sockets {} -> {}",
        t.elapsed().as_secs_f64(),
        sockets_before,
        sockets(pid)
    );
    // None answered early (a 304 or an error would be a broken poll).
    for s in polls.iter_mut().step_by(97) {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a long-poll answered before any commit"
        );
        s.set_nonblocking(false).unwrap();
    }

    // A commit that changes every site (the fleet-wide volume) answers
    // every poll: when each answer's first bytes arrive.
    let repo = files.repo_dir();
    common::set_fleet_volume(&repo, 71);
    git(&repo, &["commit", "-qam", "volume 71"]);
    let t = Instant::now();
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/api/sync"))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let synced = t.elapsed();
    for s in &polls {
        s.set_nonblocking(true).unwrap();
    }
    let mut pending: Vec<usize> = (0..polls.len()).collect();
    let mut answers: Vec<Duration> = Vec::with_capacity(boxes);
    let mut not_modified = 0;
    while !pending.is_empty() && t.elapsed() < Duration::from_secs(60) {
        pending.retain(|&i| {
            let mut b = [0u8; 12];
            match polls[i].read(&mut b) {
                Ok(n) if n > 0 => {
                    answers.push(t.elapsed());
                    if b[..n].starts_with(b"HTTP/1.1 304") {
                        not_modified += 1;
                    }
                    false
                }
                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                _ => false,
            }
        });
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = answers.len();
    answers.sort();
    let pct = |p: usize| {
        answers
            .get((answers.len() * p / 100).min(answers.len().saturating_sub(1)))
            .map_or(f64::NAN, Duration::as_secs_f64)
    };
    println!(
        "commit -> sync answered in {:.2} s; {answered} of {boxes} polls answered ({not_modified} with 304): \
         p50 {:.2} s, p99 {:.2} s, last {:.2} s after the sync request",
        synced.as_secs_f64(),
        pct(50),
        pct(99),
        pct(100)
    );
    drop(polls);
    std::thread::sleep(Duration::from_secs(3));
    let after = common::status_kib(pid, "VmRSS:");
    let per = (waiting.saturating_sub(before)) as f64 / boxes as f64;
    println!(
        "controller RSS: before {before} KiB, {boxes} polls waiting {waiting} KiB, after they closed {after} KiB"
    );
    println!("cost of one waiting long-poll: {per:.1} KiB");
}

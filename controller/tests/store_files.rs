//! A broken status store file: `touchline serve` refuses to start with a
//! message that says how to restore it, and never panics (nor starts on an
//! empty store, which would answer 401 to every box).
#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};

use touchline_testkit::ControllerFiles;

fn serve_fails(files: &ControllerFiles) -> String {
    let out = files
        .serve_command("127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("restore it from a backup (stop the controller, copy the backup over it)"),
        "{stderr}"
    );
    stderr
}

#[test]
fn an_empty_or_corrupt_store_is_refused_with_how_to_restore_it() {
    let files = ControllerFiles::example();
    // A real store first.
    drop(files.start());
    let db = files.data().join("status.redb");
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 4096);

    std::fs::write(&db, b"").unwrap();
    let stderr = serve_fails(&files);
    assert!(
        stderr.contains("status.redb` is empty (0 bytes)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "nothing written over it"
    );

    // Random bytes over the header and in the middle.
    for offset in [0u64, good.len() as u64 / 2] {
        std::fs::write(&db, &good).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        f.write_all(&noise).unwrap();
        drop(f);
        // A page redb never reads at open may let it start: then it is
        // killed after a while; either way it never panics.
        let log = files.path("corrupt.log");
        let mut child = files
            .serve_command("127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if started.elapsed() > std::time::Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(!stderr.contains("panicked"), "offset {offset}: {stderr}");
        if let Some(st) = status {
            assert_eq!(st.code(), Some(1), "offset {offset}: {stderr}");
            assert!(stderr.contains("status store"), "offset {offset}: {stderr}");
        }
    }
}

fn report(seq: u64, note: &str) -> serde_json::Value {
    serde_json::json!({"seq": seq, "at": "2026-11-22T10:00:00Z",
        "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1,
                   "conditions": [{"item": "disk", "severity": "warning", "message": note, "since": "2026-11-22T10:00:00Z"}]},
        "metrics": {"cpu_percent": 12.5, "temperature_c": 61.0, "disk_used_bytes": 10, "disk_total_bytes": 100}})
}

#[test]
fn a_full_disk_is_a_503_that_says_so_and_the_store_recovers_when_space_returns() {
    use reqwest::StatusCode;
    let files = ControllerFiles::example();
    let Some(disk) = touchline_testkit::tmpfs::Tmpfs::mount_or_skip(&files.data(), "12m") else {
        return;
    };
    let site = "levallois-basket";
    let token = files.site_token(site, false);
    let s = files.start();
    let post = |s: &touchline_testkit::RunningController, from: u64, n: u64| {
        let note = "x".repeat(1800);
        let reports: Vec<_> = (from..from + n).map(|q| report(q, &note)).collect();
        let batch = serde_json::json!({"format": 1, "site": site, "reports": reports});
        s.http
            .post(format!("{}/v1/sites/{site}/reports", s.url))
            .bearer_auth(&token)
            .json(&batch)
            .send()
            .unwrap()
    };
    let r = post(&s, 1, 1);
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().unwrap());
    let healthz = || {
        let r = s.get("/healthz", None);
        let status = r.status();
        (status, r.json::<serde_json::Value>().unwrap())
    };
    assert_eq!(healthz().0, StatusCode::OK);

    disk.fill(&files.data().join("filler"));
    // The file still has free pages: writes land until it must grow.
    let mut seq = 2;
    let failed = loop {
        assert!(seq < 100_000, "the store never filled the disk");
        let r = post(&s, seq, 200);
        if r.status() != StatusCode::OK {
            break r;
        }
        seq += 200;
    };
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.headers()["retry-after"], "10");
    let text = failed.text().unwrap();
    assert!(
        text.contains("the status store cannot read or write its file")
            && text.contains("No space left on device"),
        "{text}"
    );
    assert!(!text.contains("does not decode"), "{text}");
    let (status, body) = healthz();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ok"], false);
    assert!(
        body["store_error"].as_str().is_some_and(
            |e| e.contains("No space left on device") || e.contains("earlier read or write")
        ),
        "{body}"
    );

    // Space comes back: the same process writes again, by itself.
    std::fs::remove_file(files.data().join("filler")).unwrap();
    let start = std::time::Instant::now();
    while healthz().0 != StatusCode::OK {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the store did not recover: {}",
            healthz().1
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = post(&s, seq, 200);
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().unwrap());
    let again = post(&s, seq, 200).json::<serde_json::Value>().unwrap();
    assert_eq!(
        again,
        serde_json::json!({"accepted": 0, "duplicates": 200, "last_seq": seq + 199}),
        "the batch refused while full was stored once space returned"
    );
    let mut s = s;
    assert!(
        s.process.0.try_wait().unwrap().is_none(),
        "no restart was needed"
    );
    drop(s);
    // Nothing was lost or half-written: the store opens again.
    let s = files.start();
    let r = post(&s, 1, 1).json::<serde_json::Value>().unwrap();
    assert_eq!(r["duplicates"], 1, "{r}");
}

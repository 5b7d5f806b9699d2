//! A stand-in for the git hosts' APIs (`support/status_recorder.py`,
//! Python's `http.server`): records each request as a JSON line.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use touchline_testkit::Killed;

/// The stand-in host, killed when dropped.
pub struct Recorder {
    _process: Killed,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log: PathBuf,
}

impl Recorder {
    /// Starts it (`None`: no python3 outside CI, with a printed reason);
    /// the first `fail_first` requests get a 500.
    pub fn start(dir: &Path, fail_first: u32) -> Option<Self> {
        let python = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !python {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 is required in CI"
            );
            println!("SKIPPED: python3 (the stand-in git host) is not installed");
            return None;
        }
        let port_file = dir.join("recorder.port");
        let log = dir.join("recorder.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/status_recorder.py");
        let process = Killed(
            Command::new("python3")
                .arg(script)
                .arg(&port_file)
                .arg(&log)
                .env("FAIL_FIRST", fail_first.to_string())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(Instant::now() < deadline, "the recorder did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Self {
            _process: process,
            url: format!("http://127.0.0.1:{}", port.trim()),
            log,
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for a recorded request whose description contains `text`.
    pub fn wait_for(&self, text: &str) -> Value {
        self.wait_until(text, |r| {
            r["body"]["description"]
                .as_str()
                .is_some_and(|d| d.contains(text))
        })
    }

    /// Waits for a recorded status of `commit` (the latest one).
    pub fn wait_for_commit(&self, commit: &str) -> Value {
        self.wait_until(commit, |r| {
            r["path"].as_str().is_some_and(|p| p.ends_with(commit))
        })
    }

    fn wait_until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.requests().into_iter().rev().find(|r| ok(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no status with `{what}`: {:#?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

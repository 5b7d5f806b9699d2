//! End to end, with the real binaries: `touchline serve` and
//! `touchline-agent`, real git, real HTTP on 127.0.0.1, real files. One
//! module per concern; the harness is `touchline-testkit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod clock;
mod club;
mod convergence;
mod crash;
mod disk;
mod enroll;
mod hostile;
mod offline;
mod partition;
mod release;
mod tls;

#[path = "../support/fake_app.rs"]
mod fake_app;

pub(crate) use std::collections::{BTreeMap, BTreeSet};
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Command, Stdio};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use touchline_schemas::{Bundle, Sha256, SigningKey};
pub(crate) use touchline_testkit::agent_box::{
    AgentBox, Signer, agent, sample_bundle, snapshot, with_content,
};
pub(crate) use touchline_testkit::mirrors::{
    cutting_mirror, gated_mirror, hostile_mirror, pseudo_random, slow_mirror, wait_for,
};
pub(crate) use touchline_testkit::process::stderr;
pub(crate) use touchline_testkit::tmpfs::Tmpfs;
pub(crate) use touchline_testkit::tools::require_tool_at;
pub(crate) use touchline_testkit::{
    ControllerFiles, Killed, RunningController, bin, git, http, run, tree,
};

/// The example fleet with its content, a key, and boxes beside them.
struct World {
    files: ControllerFiles,
}

impl World {
    fn new() -> Self {
        let files = ControllerFiles::example();
        files.add_example_content();
        Self { files }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.files.path(rel)
    }

    fn repo(&self) -> PathBuf {
        self.files.repo_dir()
    }

    fn token(&self, site: &str) -> String {
        self.files.site_token(site, false)
    }

    fn start(&self, listen: &str) -> RunningController {
        self.files.start_on(listen)
    }

    /// A sync with the local admin token the controller wrote.
    fn sync(&self, c: &RunningController) {
        c.sync(&self.files.local_admin_token());
    }

    /// A box (its own root, `name`) for `site`, fed by `url`; its config.
    fn agent_config(&self, name: &str, site: &str, url: Option<&str>, extra: &str) -> PathBuf {
        let token = url.map(|_| self.token(site));
        AgentBox::new(
            &self.path(name),
            site,
            &self.path("key.pub"),
            url.zip(token.as_deref()),
            extra,
        )
        .config
    }
}

/// A box with no controller, fed by bundle directories: its config and
/// the signer of the key it trusts.
fn offline_box(tmp: &Path, extra: &str) -> (PathBuf, Signer) {
    let (b, signer) = AgentBox::offline(tmp, extra);
    (b.config, signer)
}

fn bundle_of(c: &RunningController, site: &str, token: &str) -> Bundle {
    let body = http()
        .get(format!("{}/v1/sites/{site}/bundle", c.url))
        .bearer_auth(token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    Bundle::from_slice(&body).unwrap()
}

/// `touchline-agent status --json` of the box of `cfg`.
fn agent_status(cfg: &Path) -> serde_json::Value {
    let out = agent(&["status", "--json"], cfg);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (at most `within`) until the box's report queue is empty and it
/// is no longer offline.
fn wait_until_drained(cfg: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let st = agent_status(cfg);
        if st["queued_reports"] == 0 && st["offline_since"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Asserts that `site`'s metrics history on `c` is in order with no
/// point twice, and holds more points than the `queued` reports.
fn assert_history_in_order(c: &RunningController, admin: &str, site: &str, queued: u64) {
    let body = http()
        .get(format!(
            "{}/api/sites/{site}/history?from=2000-01-01T00:00:00Z",
            c.url
        ))
        .bearer_auth(admin.trim())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let hist: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let points = hist["points"].as_array().unwrap();
    let times: Vec<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(times, sorted, "history in order, no duplicates");
    assert!(
        points.len() as u64 > queued,
        "every queued metrics report arrived: {} points, {queued} were queued",
        points.len()
    );
}

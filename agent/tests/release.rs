//! Software releases end to end, with the real agent binary, real tar.gz
//! packages built here, and a fake NEOPRO app: each release holds a
//! `run.sh` that `start_command` launches; releases A and A' serve
//! `/health` (Python's `http.server` on a loopback port), release B serves
//! no `/health` (404), release C dies right after it starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use touchline_schemas::bundle::{AgentSettings, BUNDLE_FORMAT, BundleHealthCheck, DesiredRelease};
use touchline_schemas::manifest::{MaintenanceWindow, PackageFormat};
use touchline_schemas::{Bundle, HumanDuration, ReleaseVersion, Sha256, SiteId};
use touchline_testkit::agent_box::{AgentBox, Signer};
use touchline_testkit::process::stderr;

#[path = "support/fake_app.rs"]
mod fake_app;
use fake_app::{App, package};

/// A box with a software root, fed by bundle directories.
struct BoxUnderTest {
    tmp: tempfile::TempDir,
    agent: AgentBox,
    signer: Signer,
    port: u16,
    serial: u64,
}

impl BoxUnderTest {
    fn new(extra: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_app::service_scripts(root);
        let (agent, signer) =
            AgentBox::offline(root, &format!("{}{extra}", fake_app::software_config(root)));
        Self {
            tmp,
            agent,
            signer,
            port: touchline_testkit::free_port(),
            serial: 0,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes a signed bundle dir for `version` (a new serial) and
    /// returns it.
    fn bundle(&mut self, version: &str, app: App, urgent: bool, window: &str) -> PathBuf {
        self.serial += 1;
        let pkg = package(version, app);
        let sha = Sha256::digest(&pkg);
        let now = jiff::Timestamp::now();
        let b = Bundle {
            agent_release: None,
            agent: AgentSettings {
                maintenance_window: MaintenanceWindow::parse(window).unwrap(),
                timezone: "Europe/Paris".into(),
                ..AgentSettings::default()
            },
            commit: None,
            config: serde_json::Map::new(),
            expires_at: now + jiff::SignedDuration::from_hours(24 * 7),
            files: Vec::new(),
            format: BUNDLE_FORMAT,
            step: 0,
            issued_at: now - jiff::SignedDuration::from_hours(24),
            serial: self.serial,
            site: SiteId::new("cesson-handball").unwrap(),
            software: Some(DesiredRelease {
                format: PackageFormat::TarGz,
                health_check: BundleHealthCheck {
                    command: None,
                    http: Some(format!("http://127.0.0.1:{}/health", self.port)),
                    timeout: HumanDuration::from_secs(3),
                },
                sha256: sha,
                size: pkg.len() as u64,
                urgent,
                urls: Vec::new(),
                version: ReleaseVersion::new(version).unwrap(),
            }),
        };
        let dir = self.path(&format!("usb-{}", self.serial));
        self.signer.write(&dir, &b);
        std::fs::create_dir_all(dir.join("content")).unwrap();
        std::fs::write(dir.join("content").join(sha.to_hex()), &pkg).unwrap();
        dir
    }

    fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.agent.command(args);
        cmd.env("APP_PORT", self.port.to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn apply(&self, dir: &Path, env: &[(&str, &str)]) -> Output {
        self.agent(&["apply-dir", dir.to_str().unwrap()], env)
    }

    /// What `current` points at.
    fn current(&self) -> Option<String> {
        let t = std::fs::read_link(self.path("software/current")).ok()?;
        Some(t.file_name()?.to_string_lossy().into_owned())
    }

    /// The version the running app serves (None: nothing answers).
    fn serving(&self) -> Option<String> {
        fake_app::serving(self.port)
    }

    fn status(&self) -> serde_json::Value {
        let o = self.agent(&["status", "--json"], &[]);
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn installed(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("software/releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for BoxUnderTest {
    fn drop(&mut self) {
        fake_app::stop(self.tmp.path(), self.port);
    }
}

#[test]
fn a_bad_release_rolls_back_by_itself_and_a_good_one_commits() {
    if !fake_app::python_or_skip() {
        return;
    }
    let mut b = BoxUnderTest::new("");
    // A: healthy, on a fresh box.
    let a = b.bundle("1.0.0", App::Healthy, false, "");
    let out = b.apply(&a, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.current().as_deref(), Some("1.0.0"));
    assert_eq!(b.serving().as_deref(), Some("1.0.0"));

    // B: /health is a 404 → rolled back to A, reported with the output.
    let bad = b.bundle("1.1.0", App::NoHealth, false, "");
    let out = b.apply(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("rolled back from 1.1.0 to 1.0.0: health check failed for 3s")
            && err.contains("HTTP 404"),
        "{err}"
    );
    assert_eq!(b.current().as_deref(), Some("1.0.0"));
    assert_eq!(b.serving().as_deref(), Some("1.0.0"), "A runs again");
    let st = b.status();
    assert_eq!(st["release"]["current"], "1.0.0", "{st}");
    assert_eq!(st["release"]["desired"], "1.1.0");
    assert_eq!(st["release"]["last_rollback"]["from"], "1.1.0");
    assert!(
        st["release"]["last_rollback"]["output"]
            .as_str()
            .unwrap()
            .contains("HTTP 404")
    );
    // No update loop: the same serial does not try B again.
    let t0 = Instant::now();
    let out = b.apply(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not retried for serial 2"),
        "{}",
        stderr(&out)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "no second health check"
    );
    assert_eq!(b.serving().as_deref(), Some("1.0.0"));
    // retry-release lifts the hold: B is tried (and fails) again.
    let out = b.agent(&["retry-release"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("release 1.1.0 (serial 2) will be tried again")
    );
    let out = b.apply(&bad, &[]);
    assert!(
        stderr(&out).contains("rolled back from 1.1.0 to 1.0.0"),
        "{}",
        stderr(&out)
    );

    // C: dies right after start → nothing answers → rolled back.
    let crash = b.bundle("1.2.0", App::Crashes, false, "");
    let out = b.apply(&crash, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("rolled back from 1.2.0 to 1.0.0: health check failed"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connect"), "{err}");
    assert_eq!(b.serving().as_deref(), Some("1.0.0"));

    // A': healthy → committed.
    let a2 = b.bundle("1.0.1", App::Healthy, false, "");
    let out = b.apply(&a2, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.current().as_deref(), Some("1.0.1"));
    assert_eq!(b.serving().as_deref(), Some("1.0.1"));
    let st = b.status();
    assert_eq!(st["phase"], "converged", "{st}");

    // Retention: after five more releases, five are kept, and the current
    // and previous ones are among them.
    for v in ["1.0.2", "1.0.3", "1.0.4", "1.0.5", "1.0.6"] {
        let d = b.bundle(v, App::Healthy, false, "");
        let out = b.apply(&d, &[]);
        assert!(out.status.success(), "{v}: {}", stderr(&out));
    }
    assert_eq!(
        b.installed(),
        vec!["1.0.2", "1.0.3", "1.0.4", "1.0.5", "1.0.6"],
        "the last 5 releases"
    );

    // A manual rollback: back to 1.0.5, health checked; 1.0.6 stays held
    // back for this serial.
    let out = b.agent(&["rollback"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rolled back by hand from 1.0.6 to 1.0.5"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(b.current().as_deref(), Some("1.0.5"));
    assert_eq!(b.serving().as_deref(), Some("1.0.5"));
    let last = b.path(&format!("usb-{}", b.serial));
    let out = b.apply(&last, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(b.current().as_deref(), Some("1.0.5"), "not switched back");
}

#[test]
fn the_maintenance_window_and_the_update_lock_hold_a_staged_release() {
    if !fake_app::python_or_skip() {
        return;
    }
    let mut b = BoxUnderTest::new("");
    let first = b.bundle("2.0.0", App::Healthy, false, "");
    assert!(b.apply(&first, &[]).status.success());
    // Tomorrow, 01:30 UTC = 02:30 in Paris (winter): outside 03:00-05:00.
    let day = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24))
        .strftime("%Y-%m-%d")
        .to_string();
    let offset = jiff::tz::TimeZone::get("Europe/Paris")
        .unwrap()
        .to_offset(jiff::Timestamp::now())
        .seconds()
        / 3600;
    let at = |local_h: i32, m: i32| format!("{day}T{:02}:{m:02}:00Z", local_h - offset);
    let outside = at(2, 30);
    let inside = at(3, 30);
    let next = b.bundle("2.1.0", App::Healthy, false, "03:00-05:00");
    let out = b.apply(&next, &[("TOUCHLINE_TEST_CLOCK", &outside)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "release 2.1.0 staged, waiting for the maintenance window 03:00-05:00 (Europe/Paris)"
        ),
        "{err}"
    );
    assert!(b.path("software/releases/2.1.0/run.sh").is_file(), "staged");
    assert_eq!(b.current().as_deref(), Some("2.0.0"), "not switched");
    assert_eq!(b.serving().as_deref(), Some("2.0.0"));
    let st = b.status();
    assert_eq!(st["phase"], "waiting", "{st}");
    assert_eq!(
        st["release"]["staged"],
        serde_json::json!(["2.0.0", "2.1.0"])
    );
    // Inside the window it switches.
    let out = b.apply(&next, &[("TOUCHLINE_TEST_CLOCK", &inside)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.serving().as_deref(), Some("2.1.0"));

    // An urgent release does not wait for the window.
    let urgent = b.bundle("2.1.1", App::Healthy, true, "03:00-05:00");
    let out = b.apply(&urgent, &[("TOUCHLINE_TEST_CLOCK", &outside)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.serving().as_deref(), Some("2.1.1"));

    // The app holds the update lock during a match: the switch waits.
    let lock = b.path("update.lock");
    std::fs::write(&lock, "").unwrap();
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while rustix::fs::flock(
        std::fs::File::open(&lock).unwrap(),
        rustix::fs::FlockOperation::NonBlockingLockShared,
    )
    .is_ok()
    {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let later = b.bundle("2.2.0", App::Healthy, false, "");
    let out = b.apply(&later, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("release 2.2.0 staged, waiting: update lock held since "),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.serving().as_deref(), Some("2.1.1"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = b.apply(&later, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.serving().as_deref(), Some("2.2.0"));
}

#[test]
fn a_cut_at_any_step_of_a_switch_ends_healthy_or_rolled_back() {
    if !fake_app::python_or_skip() {
        return;
    }
    let steps = [
        "release-unpacked",
        "release-journal",
        "release-switched",
        "release-started",
        "release-checking",
        "release-rolling-back",
        "release-switched-back",
    ];
    for (i, step) in steps.iter().enumerate() {
        for app in [App::Healthy, App::NoHealth] {
            let mut b = BoxUnderTest::new("");
            let first = b.bundle("3.0.0", App::Healthy, false, "");
            assert!(b.apply(&first, &[]).status.success());
            let version = format!("3.{}.{}", i + 1, matches!(app, App::NoHealth) as u8);
            let next = b.bundle(&version, app, false, "");
            let out = b.apply(&next, &[("TOUCHLINE_TEST_CRASH_AT", &format!("{step}:1"))]);
            let crashed = out.status.code().is_none();
            let reachable = !step.contains("back") || matches!(app, App::NoHealth);
            assert_eq!(crashed, reachable, "{step}: {}", stderr(&out));
            // `current` always points at a complete release.
            let cur = b.current().expect("current exists");
            assert!(
                b.path(&format!("software/releases/{cur}/run.sh")).is_file(),
                "{step}: current → {cur} is not a complete release"
            );
            // Restart: converges on the new release when it is healthy, on
            // the old one (reported) when it is not.
            let out = b.apply(&next, &[]);
            let healthy = matches!(app, App::Healthy);
            if healthy {
                assert!(out.status.success(), "{step}: {}", stderr(&out));
                assert_eq!(b.current().as_deref(), Some(version.as_str()), "{step}");
                assert_eq!(b.serving().as_deref(), Some(version.as_str()), "{step}");
            } else {
                assert_eq!(out.status.code(), Some(1), "{step}");
                assert!(
                    stderr(&out).contains(&format!("rolled back from {version} to 3.0.0")),
                    "{step} (crashed: {crashed}): {}",
                    stderr(&out)
                );
                assert_eq!(b.current().as_deref(), Some("3.0.0"), "{step}");
                assert_eq!(b.serving().as_deref(), Some("3.0.0"), "{step}");
            }
            assert!(
                !b.installed().iter().any(|d| d.ends_with(".partial")),
                "{step}: a .partial directory is left"
            );
            let st = b.status();
            assert!(st["release"]["journal"].is_null(), "{step}: {st}");
        }
    }
}

#[test]
fn a_hostile_package_is_refused_with_the_entry_named_and_changes_nothing() {
    if !fake_app::python_or_skip() {
        return;
    }
    let mut b = BoxUnderTest::new("");
    let first = b.bundle("4.0.0", App::Healthy, false, "");
    assert!(b.apply(&first, &[]).status.success());
    // A package with `../../evil` in it (written header by header: the tar
    // builder refuses such paths).
    let dir = b.bundle("4.1.0", App::Healthy, false, "");
    let mut pkg = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut pkg, flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_old();
        let name = b"../../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, &b"evil"[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    // Re-sign the bundle for this package.
    let mut bundle: Bundle =
        Bundle::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
    let sw = bundle.software.as_mut().unwrap();
    sw.sha256 = Sha256::digest(&pkg);
    sw.size = pkg.len() as u64;
    b.signer.write(&dir, &bundle);
    std::fs::write(
        dir.join("content").join(Sha256::digest(&pkg).to_hex()),
        &pkg,
    )
    .unwrap();
    let out = b.apply(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("release 4.1.0: package refused: entry `../../evil`: `..` in the path"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        b.installed(),
        vec!["4.0.0"],
        "nothing staged, no .partial left"
    );
    assert_eq!(b.current().as_deref(), Some("4.0.0"));
    assert_eq!(b.serving().as_deref(), Some("4.0.0"));
    assert!(!b.path("evil").exists() && !b.path("software/evil").exists());
}

#[test]
fn a_box_running_from_a_plain_current_directory_is_adopted_on_its_first_switch() {
    if !fake_app::python_or_skip() {
        return;
    }
    let mut b = BoxUnderTest::new("");
    // What the clubs' boxes have today: the app unpacked by hand in
    // software/current, running.
    let plain = b.path("software/current");
    std::fs::create_dir_all(&plain).unwrap();
    let old = fake_app::package("0.9.0", App::Healthy);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&old[..]));
    ar.unpack(&plain).unwrap();
    let start = Command::new("bash")
        .arg(b.path("start.sh"))
        .env("TOUCHLINE_SOFTWARE_ROOT", b.path("software"))
        .env("APP_PORT", b.port.to_string())
        .status()
        .unwrap();
    assert!(start.success());
    let t0 = Instant::now();
    while b.serving().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the old app did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.serving().as_deref(), Some("0.9.0"));
    // The first release: the window applies (something runs), so make it
    // urgent; the plain directory becomes releases/0.9.0 (its VERSION).
    let first = b.bundle("1.0.0", App::Healthy, true, "03:00-05:00");
    let out = b.apply(&first, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.current().as_deref(), Some("1.0.0"));
    assert_eq!(b.installed(), vec!["0.9.0", "1.0.0"]);
    assert_eq!(b.serving().as_deref(), Some("1.0.0"));
    // And it is what a rollback goes back to.
    let out = b.agent(&["rollback"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(b.current().as_deref(), Some("0.9.0"));
    // (An adopted release has no known health check: the rollback does not
    // wait for it to answer.)
    let t0 = Instant::now();
    while b.serving().as_deref() != Some("0.9.0") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "0.9.0 did not come back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

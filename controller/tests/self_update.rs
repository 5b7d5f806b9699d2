//! Agent self-update end to end: `touchline serve` publishes an agent
//! release pinned in git, and a real `touchline-agent run` (the package's
//! binary, playing the launcher as systemd would start it) stages it by
//! sha256, checks it, switches, and keeps it on trial. The candidates are
//! real executables: a copy of the agent binary (good), one for another
//! architecture (its ELF header says so), and small programs compiled here
//! with `rustc` that pass `self-test` but exit at once or hang in `run`,
//! or fail `self-test`. No test uses systemd: the launcher is what
//! restarts and rolls back.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use touchline_schemas::Sha256;
use touchline_testkit::agent_box::AgentBox;
use touchline_testkit::{ControllerFiles, Killed, RunningController, bin};

const SITE: &str = "cesson-handball";

/// The daemon, in its own process group (the launcher and the agent it
/// watches), killed as a group when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

struct Rig {
    files: ControllerFiles,
    c: RunningController,
    admin: String,
    agent: AgentBox,
    /// The site's manifest as committed first.
    site_yaml: String,
}

impl Rig {
    fn new(trial: &str) -> Self {
        let files = ControllerFiles::example();
        files.add_example_content();
        // Passes that wait (for the update lock) look again at the next
        // long-poll: keep it short.
        let site_file = format!("sites/{SITE}.yaml");
        let site_yaml = std::fs::read_to_string(files.repo_dir().join(&site_file))
            .unwrap()
            .replacen(
                "overrides:\n",
                "overrides:\n  agent:\n    poll_interval: 2s\n",
                1,
            );
        files
            .repo()
            .file(&site_file, &site_yaml)
            .commit("short polls");
        let c = files.start();
        let admin = files.local_admin_token();
        c.sync(&admin);
        let token = files.site_token(SITE, false);
        let root = files.path("box");
        let agent = AgentBox::new(
            &root,
            SITE,
            &files.path("key.pub"),
            Some((&c.url, &token)),
            &format!(
                "space_reserve_bytes = 0\nstop_command = [\"true\"]\nstart_command = [\"true\"]\nreload_command = [\"true\"]\nagent_trial = \"{trial}\"\nupdate_lock = \"{}\"\n",
                root.join("update.lock").display()
            ),
        );
        let out = agent.once();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            files,
            c,
            admin,
            agent,
            site_yaml,
        }
    }

    fn daemon(&self) -> Daemon {
        self.daemon_with(&[])
    }

    fn daemon_with(&self, env: &[(&str, &str)]) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(bin("touchline-agent"));
        cmd.args(["run", "--config"])
            .arg(&self.agent.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon(cmd.spawn().unwrap())
    }

    /// Adds `exe` to the content store and pins it as agent release
    /// `version` for this site (amd64 or whatever this machine is), then
    /// syncs.
    fn pin(&self, version: &str, exe: &Path) {
        self.pin_with(version, exe, true, None);
    }

    /// [`Rig::pin`], `urgent` or not (then it waits for the maintenance
    /// window: the example fleet's 03:00-05:00 in Europe/Paris, or the
    /// site's `window`).
    fn pin_with(&self, version: &str, exe: &Path, urgent: bool, window: Option<&str>) {
        let bytes = std::fs::read(exe).unwrap();
        let sha = Sha256::digest(&bytes);
        touchline_testkit::run(
            Command::new(bin("touchline"))
                .args(["content", "add", "--data"])
                .arg(self.files.data())
                .arg(exe),
        );
        let arch = touchline_schemas::manifest::Arch::this().unwrap();
        let repo = self.files.repo();
        repo.file(
            &format!("agent-releases/{version}.yaml"),
            format!(
                "version: {version}\nurgent: {urgent}\nchangelog: test build\nbinaries:\n  {arch}:\n    sha256: {}\n    size: {}\n",
                sha.to_hex(),
                bytes.len()
            ),
        );
        let mut site = self.site_yaml.replacen(
            "overrides:\n",
            &format!("overrides:\n  agent_release:\n    version: {version}\n"),
            1,
        );
        if let Some(w) = window {
            site = site.replacen(
                "    poll_interval: 2s\n",
                &format!("    poll_interval: 2s\n    maintenance_window: \"{w}\"\n"),
                1,
            );
        }
        repo.file(&format!("sites/{SITE}.yaml"), site);
        repo.commit(&format!("agent {version}"));
        let out = self.c.sync(&self.admin);
        assert_eq!(out["result"], "published", "{out}");
    }

    /// A status page, logged in with the admin's token.
    fn page(&self, path: &str, lang: &str) -> String {
        use common::server::{cookie_of, csrf_in, value};
        let form = self.c.get("/login", None);
        let pre = value(&cookie_of(&form, "tl_login").unwrap());
        let csrf = csrf_in(&form.text().unwrap());
        let r = self
            .c
            .http
            .post(format!("{}/login", self.c.url))
            .header("cookie", format!("tl_login={pre}"))
            .form(&[("token", self.admin.as_str()), ("csrf", &csrf)])
            .send()
            .unwrap();
        let session = value(&cookie_of(&r, "tl_session").unwrap());
        self.c
            .http
            .get(format!("{}{path}", self.c.url))
            .header("cookie", format!("tl_session={session}"))
            .header("accept-language", lang)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    fn site(&self) -> Value {
        let r = self.c.get(&format!("/api/sites/{SITE}"), Some(&self.admin));
        assert!(r.status().is_success());
        r.json().unwrap()
    }

    fn journal(&self) -> Value {
        std::fs::read(self.agent.path("state/agent-release.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// Waits until the latest report satisfies `ok`.
    fn wait_report(&self, within: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.site();
            let status = &s["report"]["status"];
            if ok(status) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reported in {within:?}: {status}\njournal: {}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A copy of the agent binary with `tag` appended (a distinct sha256;
/// trailing bytes do not change what an ELF executable does).
fn good_copy(dir: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(bin("touchline-agent")).unwrap();
    bytes.extend_from_slice(tag.as_bytes());
    let p = dir.join(format!("agent-{tag}"));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A copy of the agent binary whose ELF header names another machine.
fn other_arch_copy(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(bin("touchline-agent")).unwrap();
    // e_machine, little-endian, at offset 18: AArch64 (183), or x86-64 (62)
    // on an arm64 machine.
    let m: u16 = if std::env::consts::ARCH == "aarch64" {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&m.to_le_bytes());
    let p = dir.join("agent-other-arch");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A program compiled here: `self-test` exits 0 (or 1 for
/// `selftest-fails`); `run` does `mode` (`exits`: status 1 at once;
/// `hangs`: sleeps).
fn fake(dir: &Path, mode: &str) -> PathBuf {
    let src = dir.join(format!("fake-{mode}.rs"));
    std::fs::write(
        &src,
        format!(
            r#"fn main() {{
    let mode = "{mode}";
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(String::as_str) == Some("self-test") {{
        if mode == "selftest-fails" {{
            eprintln!("self-test: the trusted keys do not verify the accepted bundle");
            std::process::exit(1);
        }}
        println!("self-test passed");
        return;
    }}
    if mode == "hangs" {{
        loop {{ std::thread::sleep(std::time::Duration::from_secs(3600)); }}
    }}
    eprintln!("fake agent: giving up at once");
    std::process::exit(1);
}}
"#
        ),
    )
    .unwrap();
    let out_path = dir.join(format!("fake-{mode}"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let st = Command::new(rustc)
        .arg("--edition=2021")
        .arg("-o")
        .arg(&out_path)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "compiling the fake agent");
    out_path
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_good_agent_release_waits_for_the_lock_switches_and_passes_its_trial() {
    if touchline_testkit::tools::require_tool("flock", "apt-get install util-linux").is_none() {
        return;
    }
    let rig = Rig::new("60s");
    let package = env!("CARGO_PKG_VERSION");
    let _d = rig.daemon();
    rig.wait_report(Duration::from_secs(20), "the package's agent", |s| {
        s["agent_version"] == package
    });
    // A match is on: the release is staged and self-tested, and waits.
    let lock = rig.agent.path("update.lock");
    std::fs::write(&lock, "").unwrap();
    let holder = Killed(
        Command::new("flock")
            .arg("--close")
            .arg(&lock)
            .args(["sleep", "60"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let exe = good_copy(rig.files.dir(), "99.0.0");
    rig.pin("99.0.0", &exe);
    let s = rig.wait_report(Duration::from_secs(30), "waiting for the lock", |s| {
        text(&s["agent_release"]["waiting"]).contains("waiting: update lock held since")
    });
    let a = &s["report"]["status"]["agent_release"];
    assert_eq!(a["desired"], "99.0.0", "{a}");
    assert_eq!(a["running"], package, "{a}");
    assert!(
        text(&a["waiting"]).starts_with("agent release 99.0.0 staged and self-tested"),
        "{a}"
    );
    assert!(rig.journal()["current"].is_null(), "{}", rig.journal());
    // The executable is staged by sha256, executable, beside the journal.
    let sha = Sha256::digest(&std::fs::read(&exe).unwrap()).to_hex();
    let staged = rig.agent.path(&format!("state/agent/{sha}"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // The match ends: it switches, restarts into 99.0.0 and passes.
    drop(holder);
    let s = rig.wait_report(Duration::from_secs(40), "running 99.0.0, confirmed", |s| {
        s["agent_version"] == "99.0.0" && s["agent_release"]["trial"].is_null()
    });
    let a = &s["report"]["status"]["agent_release"];
    assert_eq!(a["package"], package, "{a}");
    assert!(a["last_rollback"].is_null(), "{a}");
    let j = rig.journal();
    assert_eq!(j["current"]["version"], "99.0.0", "{j}");
    assert_eq!(j["trial"]["confirmed"], true, "{j}");
    assert_eq!(j["trial"]["starts"], 1, "{j}");
    assert!(j["previous"].is_null(), "the package came before: {j}");

    // /api/releases: desired and running per agent version.
    let r = rig.c.get("/api/releases", Some(&rig.admin));
    let rel: Value = r.json().unwrap();
    let row = rel["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["version"] == "99.0.0")
        .unwrap_or_else(|| panic!("{rel}"))
        .clone();
    assert_eq!(row["in_manifests"], true, "{row}");
    assert_eq!(row["sites"], serde_json::json!([SITE]), "{row}");
    assert_eq!(row["sites_desired"], serde_json::json!([SITE]), "{row}");
    assert_eq!(row["file"], "agent-releases/99.0.0.yaml", "{row}");
}

#[test]
fn bad_agent_releases_are_refused_or_rolled_back_without_a_human() {
    let rig = Rig::new("4s");
    let package = env!("CARGO_PKG_VERSION");
    let dir = rig.files.dir().to_owned();
    let _d = rig.daemon();
    rig.wait_report(Duration::from_secs(20), "the package's agent", |s| {
        s["agent_version"] == package
    });

    // Another architecture: refused before anything runs.
    rig.pin("99.1.0", &other_arch_copy(&dir));
    let s = rig.wait_report(Duration::from_secs(30), "wrong arch held back", |s| {
        s["agent_release"]["held_back"] == "99.1.0"
    });
    let cond = conditions(&s);
    let arch = touchline_schemas::manifest::Arch::this().unwrap();
    assert!(
        cond.contains(&format!(
            "agent release 99.1.0 is held back: the {arch} executable is refused: it is an executable for"
        )) && cond.contains(&format!("and this box is {arch}")),
        "{cond}"
    );
    assert!(rig.journal()["current"].is_null());

    // Fails its self-test: refused, with the self-test's words.
    rig.pin("99.2.0", &fake(&dir, "selftest-fails"));
    let s = rig.wait_report(
        Duration::from_secs(30),
        "self-test failure held back",
        |s| s["agent_release"]["held_back"] == "99.2.0",
    );
    let cond = conditions(&s);
    assert!(
        cond.contains("agent release 99.2.0 is held back: its self-test failed: self-test: the trusted keys do not verify the accepted bundle"),
        "{cond}"
    );
    assert!(rig.journal()["current"].is_null());

    // Passes self-test, exits at once in `run`: three starts, then the
    // package's agent again.
    rig.pin("99.3.0", &fake(&dir, "exits"));
    let s = rig.wait_report(Duration::from_secs(40), "exits-at-once rolled back", |s| {
        s["agent_release"]["last_rollback"]["from"] == "99.3.0"
    });
    let status = &s["report"]["status"];
    let rb = &status["agent_release"]["last_rollback"];
    assert_eq!(rb["to"], package, "{rb}");
    assert_eq!(
        rb["output"],
        "it did not complete a pass and a report in 3 starts (last: exited with status 1)",
        "{rb}"
    );
    assert_eq!(status["agent_version"], package);
    assert_eq!(status["agent_release"]["held_back"], "99.3.0");
    let j = rig.journal();
    assert!(j["current"].is_null() && j["trial"].is_null(), "{j}");
    // `status` on the box says the same.
    let st: Value = serde_json::from_slice(&rig.agent.run(&["status", "--json"]).stdout).unwrap();
    let a = &st["agent_release"];
    assert_eq!(a["running"], package, "{a}");
    assert_eq!(a["held_back"]["version"], "99.3.0", "{a}");
    assert_eq!(a["last_rollback"]["from"], "99.3.0", "{a}");
    let text_status = touchline_testkit::process::stdout(&rig.agent.run(&["status"]));
    assert!(
        text_status.contains("agent rollback:  99.3.0 → ")
            && text_status.contains("in 3 starts (last: exited with status 1)"),
        "{text_status}"
    );

    // Passes self-test, hangs: killed after the trial time.
    let t0 = Instant::now();
    rig.pin("99.4.0", &fake(&dir, "hangs"));
    let s = rig.wait_report(Duration::from_secs(40), "hanging agent rolled back", |s| {
        s["agent_release"]["last_rollback"]["from"] == "99.4.0"
    });
    let rb = &s["report"]["status"]["agent_release"]["last_rollback"];
    assert_eq!(
        rb["output"], "it did not complete a pass and a report within 4s of its start",
        "{rb}"
    );
    assert!(t0.elapsed() >= Duration::from_secs(4));
    // The releases page lists the agent releases, in English and French.
    let page = rig.page("/releases", "en");
    assert!(page.contains("<h1>Agent releases</h1>"), "{page}");
    assert!(
        page.contains("Rolled back on: cesson-handball (it did not complete a pass and a report within 4s of its start)"),
        "{page}"
    );
    let fr = rig.page("/releases", "fr");
    assert!(fr.contains("<h1>Versions de l"), "{fr}");
    assert!(fr.contains("Annulée sur : cesson-handball"), "{fr}");

    // The package's agent still works: a good release after all of it.
    rig.pin("99.5.0", &good_copy(&dir, "99.5.0"));
    let s = rig.wait_report(
        Duration::from_secs(40),
        "good release after the bad ones",
        |s| s["agent_version"] == "99.5.0" && s["agent_release"]["trial"].is_null(),
    );
    assert!(
        s["report"]["status"]["agent_release"]["held_back"].is_null(),
        "{s}"
    );
    // Only the running executable and the one before are kept.
    let kept = std::fs::read_dir(rig.agent.path("state/agent"))
        .unwrap()
        .count();
    assert!(kept <= 2, "{kept} executables kept");
}

fn conditions(site: &Value) -> String {
    site["report"]["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| text(&c["message"]))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A power cut at each step of an agent update (staged, selected in the
/// journal, trial start counted): the next start converges on the new
/// agent, confirmed, with nothing half-done.
#[test]
fn an_agent_killed_at_each_step_of_an_update_converges_when_restarted() {
    let rig = Rig::new("60s");
    let dir = rig.files.dir().to_owned();
    for (i, step) in [
        "agent-release-staged",
        "agent-release-selected",
        "agent-trial-start",
    ]
    .into_iter()
    .enumerate()
    {
        let version = format!("99.{i}.0");
        let mut crashing = rig.daemon_with(&[("TOUCHLINE_TEST_CRASH_AT", &format!("{step}:1"))]);
        rig.pin(&version, &good_copy(&dir, &version));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = crashing.0.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{step}: the agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(6),
            "{step}: aborted at the step ({status})"
        );
        let j = rig.journal();
        match step {
            "agent-release-staged" => assert_ne!(j["current"]["version"], version, "{step}: {j}"),
            "agent-release-selected" => {
                assert_eq!(j["current"]["version"], version, "{step}: {j}");
                assert_eq!(j["trial"]["starts"], 0, "{step}: {j}");
            }
            _ => assert_eq!(j["trial"]["starts"], 1, "{step}: {j}"),
        }
        drop(crashing);
        // systemd starts it again.
        let _d = rig.daemon();
        rig.wait_report(Duration::from_secs(40), step, |s| {
            s["agent_version"] == version.as_str() && s["agent_release"]["trial"].is_null()
        });
        let j = rig.journal();
        assert_eq!(j["trial"]["confirmed"], true, "{step}: {j}");
        assert!(j["last_rollback"].is_null(), "{step}: {j}");
    }
}

/// Outside the maintenance window a checked release waits, and says so;
/// once the site's window (changed in git) holds the present, it switches.
#[test]
fn a_non_urgent_agent_release_waits_for_the_maintenance_window() {
    let rig = Rig::new("60s");
    let now = jiff::Zoned::now().in_tz("Europe/Paris").unwrap();
    let at = |hours: i64| {
        let t = now
            .checked_add(jiff::SignedDuration::from_hours(hours))
            .unwrap();
        format!("{:02}:00", t.hour())
    };
    // Two hours from now for an hour: closed now, whatever the time of day.
    let closed = format!("{}-{}", at(2), at(3));
    let open = format!("{}-{}", at(-1), at(1));
    let exe = good_copy(rig.files.dir(), "99.0.0");
    rig.pin_with("99.0.0", &exe, false, Some(&closed));
    let _d = rig.daemon();
    let s = rig.wait_report(Duration::from_secs(30), "waiting for the window", |s| {
        text(&s["agent_release"]["waiting"]).contains("waiting for the maintenance window")
    });
    let a = &s["report"]["status"]["agent_release"];
    assert_eq!(
        a["waiting"],
        format!(
            "agent release 99.0.0 staged and self-tested, waiting for the maintenance window {closed} (Europe/Paris)"
        ),
        "{a}"
    );
    assert!(rig.journal()["current"].is_null(), "{}", rig.journal());
    rig.pin_with("99.0.0", &exe, false, Some(&open));
    rig.wait_report(Duration::from_secs(40), "switched in the window", |s| {
        s["agent_version"] == "99.0.0" && s["agent_release"]["trial"].is_null()
    });
}

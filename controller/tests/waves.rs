//! Rollouts in waves end to end: `touchline serve` following a git
//! repository whose `fleet.yaml` declares waves (`beta`, then the rest),
//! and five real `touchline-agent run` daemons installing real tar.gz
//! releases whose health check is a command. Release 3.0.0's check fails
//! on the boxes whose root holds a file `sick`, so one release can pass on
//! some boxes and roll back on others.
//!
//! What is shown: a release that passes on the beta wave goes everywhere,
//! with a beta box that is offline not blocking it and catching up when
//! it comes back; the controller restarted during the bake time keeps the
//! rollout; a release that rolls back on 2 of 3 beta boxes halts the
//! rollout with the other boxes still on the previous release, through a
//! restart; an operator's resume (audited) lets it go on, or a revert (the
//! next commit decides) supersedes it and brings the beta back. With content in
//! waves, a configuration change goes through the waves (through a restart),
//! and one whose reload fails on a beta box halts them; the commit's one
//! status on the git host (a stand-in, `support/status_recorder.py`) turns
//! to a final failure that says why.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::recorder::Recorder;
use serde_json::Value;
use touchline_schemas::Sha256;
use touchline_testkit::agent_box::AgentBox;
use touchline_testkit::{ControllerFiles, Killed, RunningController, bin};

const BETA: [&str; 3] = ["b1", "b2", "b3"];
const OTHERS: [&str; 2] = ["s1", "s2"];

fn site_yaml(id: &str, beta: bool) -> String {
    format!(
        "id: {id}\nname: Site {id}\nclub: Club {id}\nlocation:\n  city: Rennes\n  region: Bretagne\n  latitude: 48.1\n  longitude: -1.6\nlabels:\n  sport: handball\n  region: bretagne\n{}",
        if beta { "groups:\n  - beta\n" } else { "" }
    )
}

/// The fleet: `version` everywhere, waves `beta` then `everyone`, 6 s
/// apart. With a `volume`, `configuration.json` says it, the content goes
/// through the waves too, and they are 12 s apart (room for a restart).
fn fleet_yaml(version: &str, volume: Option<u32>) -> String {
    let (display, content, bake) = match volume {
        Some(v) => (
            format!("    display:\n      volume: {v}\n"),
            "  content: waves\n",
            12,
        ),
        None => (String::new(), "", 6),
    };
    format!(
        "name: Waves\ntimezone: Europe/Paris\ndefaults:\n  software:\n    version: {version}\n  config:\n    version: \"1.0\"\n{display}  agent:\n    poll_interval: 2s\n    heartbeat_interval: 2s\nrollout:\n  waves:\n    - name: beta\n      group: beta\n    - name: everyone\n  bake: {bake}s\n{content}"
    )
}

/// A release package: `healthy` in it, and the health check looks for it
/// and for the absence of `<box root>/sick` (the check runs in
/// `<root>/software/releases/<version>`).
fn package(version: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in [("VERSION", version), ("healthy", "yes")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

struct Rig {
    files: ControllerFiles,
    /// The stand-in git host the commit statuses go to, when asked for.
    status: Option<Recorder>,
    c: RunningController,
    admin: String,
    boxes: Vec<(String, AgentBox)>,
    daemons: Vec<Option<Killed>>,
}

impl Rig {
    /// Five boxes on release 1.0.0; `volume`: see [`fleet_yaml`].
    fn new(volume: Option<u32>) -> Self {
        Self::open(volume, false)
    }

    /// [`Rig::new`], with the commits' statuses sent to a GitHub stand-in
    /// (none without python3 outside CI).
    fn with_commit_status(volume: Option<u32>) -> Self {
        Self::open(volume, true)
    }

    fn open(volume: Option<u32>, commit_status: bool) -> Self {
        let files = ControllerFiles::with_repo(|dir| {
            std::fs::create_dir_all(dir.join("sites")).unwrap();
            std::fs::create_dir_all(dir.join("groups")).unwrap();
            std::fs::create_dir_all(dir.join("releases")).unwrap();
            std::fs::write(dir.join("fleet.yaml"), fleet_yaml("1.0.0", volume)).unwrap();
            std::fs::write(
                dir.join("groups/beta.yaml"),
                "id: beta\ndescription: the beta testers\n",
            )
            .unwrap();
            for s in BETA {
                std::fs::write(dir.join(format!("sites/{s}.yaml")), site_yaml(s, true)).unwrap();
            }
            for s in OTHERS {
                std::fs::write(dir.join(format!("sites/{s}.yaml")), site_yaml(s, false)).unwrap();
            }
        });
        let status = commit_status
            .then(|| Recorder::start(files.dir(), 0))
            .flatten();
        let status_config = status.as_ref().map_or(String::new(), |rec| {
            let token = files.path("status.token");
            std::fs::write(&token, "tok\n").unwrap();
            format!(
                "\n[commit_status]\nkind = \"github\"\napi_url = \"{}\"\nrepository = \"neopro/fleet\"\ntoken_file = \"{}\"\n",
                rec.url,
                token.display()
            )
        });
        files.config(&format!("offline_after = \"5s\"\n{status_config}"));
        add_release(&files, "1.0.0");
        files.repo().commit("release 1.0.0");
        let c = files.start();
        let admin = files.local_admin_token();
        let out = c.sync(&admin);
        let commits: Value = c.get("/api/commits", Some(&admin)).json().unwrap();
        assert_eq!(commits["commits"][0]["state"], "accepted", "{commits:#}");
        let _ = out;
        let mut boxes = Vec::new();
        for s in BETA.iter().chain(OTHERS.iter()) {
            let token = files.site_token(s, false);
            let root = files.path(&format!("box-{s}"));
            let agent = AgentBox::new(
                &root,
                s,
                &files.path("key.pub"),
                Some((&c.url, &token)),
                &format!(
                    "space_reserve_bytes = 0\nsoftware_root = \"{r}/software\"\nstop_command = [\"true\"]\nstart_command = [\"true\"]\nreload_command = [\"true\"]\nupdate_lock = \"{r}/update.lock\"\n",
                    r = root.display()
                ),
            );
            boxes.push((s.to_string(), agent));
        }
        let mut rig = Self {
            files,
            status,
            c,
            admin,
            daemons: Vec::new(),
            boxes,
        };
        rig.daemons = (0..rig.boxes.len()).map(|i| Some(rig.daemon(i))).collect();
        rig
    }

    fn daemon(&self, i: usize) -> Killed {
        Killed(
            Command::new(bin("touchline-agent"))
                .args(["run", "--config"])
                .arg(&self.boxes[i].1.config)
                .env("RUST_LOG", "info,touchline_agent::agent=debug")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.boxes[i].1.path("agent.log"))
                        .unwrap(),
                )
                .spawn()
                .unwrap(),
        )
    }

    fn index(&self, site: &str) -> usize {
        self.boxes.iter().position(|(s, _)| s == site).unwrap()
    }

    fn root(&self, site: &str) -> PathBuf {
        self.boxes[self.index(site)].1.path("")
    }

    fn stop(&mut self, site: &str) {
        let i = self.index(site);
        self.daemons[i] = None;
    }

    fn start(&mut self, site: &str) {
        let i = self.index(site);
        self.daemons[i] = Some(self.daemon(i));
    }

    fn api(&self, path: &str) -> Value {
        let r = self.c.get(path, Some(&self.admin));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }

    /// The release a site's published bundle asks for.
    fn desired(&self, site: &str) -> String {
        self.api(&format!("/api/sites/{site}"))["site"]["desired"]["release"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The release a site reports running.
    fn running(&self, site: &str) -> String {
        self.api(&format!("/api/sites/{site}"))["site"]["applied"]["release"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn rollout(&self) -> Value {
        self.api("/api/rollout")["current"].clone()
    }

    fn wait(&self, within: Duration, what: &str, ok: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + within;
        while !ok(self) {
            if Instant::now() >= deadline {
                for (s, b) in &self.boxes {
                    let log = std::fs::read_to_string(b.path("agent.log")).unwrap_or_default();
                    let _ = std::fs::write(format!("/tmp/waves-{s}.log"), &log);
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "--- {s}:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!(
                    "{what}: not within {within:?}\nrollout: {:#}",
                    self.rollout()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_running(&self, sites: &[&str], version: &str, within: Duration) {
        self.wait(within, &format!("{sites:?} running {version}"), |r| {
            sites.iter().all(|s| r.running(s) == version)
        });
    }

    /// Pins `version` in `fleet.yaml` (the release added), commits, syncs.
    fn pin(&self, version: &str) {
        add_release(&self.files, version);
        self.files
            .repo()
            .file("fleet.yaml", fleet_yaml(version, None));
        self.files.repo().commit(&format!("release {version}"));
        let out = self.c.sync(&self.admin);
        assert_eq!(out["result"], "published", "{out}");
    }

    /// Kills the controller and starts it again on the same address.
    fn restart_controller(&mut self) {
        let addr = self.c.url.trim_start_matches("http://").to_owned();
        let _ = self.c.process.0.kill();
        let _ = self.c.process.0.wait();
        self.c = self.files.start_on(&addr);
        self.admin = self.files.local_admin_token();
    }
}

/// A status page session of the operator: a client that does not follow
/// redirects, its cookies and its CSRF token.
fn operator_session(url: &str) -> (reqwest::blocking::Client, String, String) {
    use common::server::{cookie_of, csrf_in, value};
    let web = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = web.get(format!("{url}/login")).send().unwrap();
    let pre = value(&cookie_of(&form, "tl_login").unwrap());
    let r = web
        .post(format!("{url}/login"))
        .header("cookie", format!("tl_login={pre}"))
        .form(&[
            ("token", touchline_testkit::OPERATOR),
            ("csrf", pre.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookies = cookie_of(&r, "tl_session").unwrap();
    let cookies = cookies.split(';').next().unwrap().to_owned();
    let home = web
        .get(format!("{url}/releases"))
        .header("cookie", &cookies)
        .send()
        .unwrap()
        .text()
        .unwrap();
    (web, cookies, csrf_in(&home))
}

fn add_release(files: &ControllerFiles, version: &str) {
    let pkg = package(version);
    let path = files.path(&format!("pkg-{version}.tar.gz"));
    std::fs::write(&path, &pkg).unwrap();
    touchline_testkit::run(
        Command::new(bin("touchline"))
            .args(["content", "add", "--data"])
            .arg(files.data())
            .arg(&path),
    );
    files.repo().file(
        &format!("releases/{version}.yaml"),
        format!(
            "version: {version}\nurgent: true\npackage:\n  sha256: {}\n  size: {}\nhealth_check:\n  command: [\"sh\", \"-c\", \"test -f healthy && test ! -e ../../../sick\"]\n  timeout: 2s\n",
            Sha256::digest(&pkg).to_hex(),
            pkg.len()
        ),
    );
}

fn waves_of(r: &Value) -> Vec<(String, bool, bool)> {
    r["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                !w["opened_at"].is_null(),
                !w["passed_at"].is_null(),
            )
        })
        .collect()
}

fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), "").unwrap();
}

#[test]
fn releases_go_out_in_waves_halt_on_rollbacks_and_survive_restarts() {
    let mut rig = Rig::new(None);
    let all: Vec<&str> = BETA.iter().chain(OTHERS.iter()).copied().collect();
    rig.wait_running(&all, "1.0.0", Duration::from_secs(60));
    assert!(
        rig.api("/api/rollout")["current"].is_null(),
        "a first release for new boxes is no rollout"
    );

    // b3 goes offline before 2.0.0 is committed.
    rig.stop("b3");
    rig.wait(Duration::from_secs(20), "b3 offline", |r| {
        r.api("/api/sites/b3")["site"]["status"] == "offline"
    });

    // s2's app holds its update lock (a match is on): it will wait in the
    // second wave.
    let mut lock = Killed(
        // --no-fork: the lock is held by the process killed below.
        Command::new("flock")
            .arg("--no-fork")
            .arg(rig.root("s2").join("update.lock"))
            .args(["sleep", "600"])
            .spawn()
            .unwrap(),
    );

    rig.pin("2.0.0");
    let r = rig.rollout();
    assert_eq!(r["state"], "moving", "{r:#}");
    assert_eq!(r["targets"][0], "release 2.0.0");
    assert_eq!(r["policy_file"], "fleet.yaml");
    assert_eq!(
        waves_of(&r),
        [
            ("beta".into(), true, false),
            ("everyone".into(), false, false)
        ]
    );
    for s in OTHERS {
        assert_eq!(rig.desired(s), "1.0.0", "{s} is held back until its wave");
    }
    for s in BETA {
        assert_eq!(rig.desired(s), "2.0.0");
    }
    // The beta wave passes on its two reachable boxes; b3 does not block it.
    rig.wait_running(&["b1", "b2"], "2.0.0", Duration::from_secs(60));
    // From the last beta report stored to the wave passing (polled every
    // 100 ms).
    let stored = Instant::now();
    rig.wait(Duration::from_secs(20), "beta passed", |r| {
        waves_of(&r.rollout())[0].2
    });
    println!(
        "beta wave passed {} ms after its last report was stored",
        stored.elapsed().as_millis()
    );
    let r = rig.rollout();
    let beta = &r["waves"][0];
    assert_eq!(beta["tally"]["applied"], 2, "{r:#}");
    assert_eq!(beta["tally"]["unreachable"], 1, "{r:#}");
    assert_eq!(beta["pending"][0]["site"], "b3");
    assert_eq!(beta["pending"][0]["state"], "unreachable");
    assert!(!r["next_opening"].is_null(), "the bake time runs: {r:#}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .starts_with("wave 1/2 beta · 2/5 applied"),
        "{r:#}"
    );
    // The controller restarts during the bake time: the rollout is kept,
    // and the next wave opens when the bake time ends.
    rig.restart_controller();
    let r = rig.rollout();
    assert_eq!(waves_of(&r)[1], ("everyone".into(), false, false), "{r:#}");
    assert_eq!(rig.desired("s1"), "1.0.0");
    rig.wait(Duration::from_secs(30), "the second wave opened", |r| {
        waves_of(&r.rollout())[1].1
    });
    let r = rig.rollout();
    let passed: jiff::Timestamp = r["waves"][0]["passed_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let opened: jiff::Timestamp = r["waves"][1]["opened_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let waited = opened.duration_since(passed).as_secs_f64();
    assert!(
        (6.0..16.0).contains(&waited),
        "bake 6s, opened after {waited}s"
    );
    println!("second wave opened {waited:.1}s after the beta wave passed (bake 6s)");
    // s1 runs it; s2 waits for its lock, reachable: the wave waits for it.
    rig.wait_running(&["s1"], "2.0.0", Duration::from_secs(60));
    rig.wait(Duration::from_secs(20), "s2 waiting for its lock", |r| {
        let p = &r.rollout()["waves"][1]["pending"];
        p[0]["site"] == "s2" && p[0]["state"] == "waiting"
    });
    let r = rig.rollout();
    assert_eq!(r["state"], "moving", "{r:#}");
    assert!(
        r["waves"][1]["pending"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("update lock"),
        "{r:#}"
    );
    // The releases page gives s2's reason in its own words, the state in
    // the reader's language.
    let (web, cookies, _) = operator_session(&rig.c.url);
    for (lang, state) in [("en", "waiting: "), ("fr", "attend : ")] {
        let html = web
            .get(format!("{}/releases", rig.c.url))
            .header("cookie", format!("{cookies}; tl_lang={lang}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let said = format!(
            "s2 ({state}\u{201c}release 2.0.0: release 2.0.0 staged, waiting: update lock held since"
        );
        assert!(html.contains(&said), "{lang}: no `{said}` in {html}");
    }
    // s2 goes offline while it waits: the wave passes once s2 counts as
    // unreachable (silent for offline_after, 5 s), not at a later timer.
    rig.stop("s2");
    rig.wait(Duration::from_secs(30), "complete", |r| {
        r.rollout()["state"] == "complete"
    });
    let r = rig.rollout();
    let seen: jiff::Timestamp = rig.api("/api/sites/s2")["site"]["last_seen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let finished: jiff::Timestamp = r["finished_at"].as_str().unwrap().parse().unwrap();
    // The record keeps whole seconds: -1 s is on time.
    let late = finished.duration_since(seen).as_secs_f64() - 5.0;
    println!("second wave passed {late:.1}s after s2 became unreachable");
    assert!(
        late < 3.0,
        "the wave passed {late:.1}s after s2 became unreachable: the rollout did not look when it did"
    );
    assert_eq!(r["waves"][1]["tally"]["unreachable"], 1, "{r:#}");
    // The match ends, s2 comes back and catches up.
    let _ = lock.0.kill();
    let _ = lock.0.wait();
    rig.start("s2");
    rig.wait_running(&["s2"], "2.0.0", Duration::from_secs(60));
    // b3 comes back and catches up.
    rig.start("b3");
    rig.wait_running(&["b3"], "2.0.0", Duration::from_secs(60));

    // 3.0.0 rolls back on b1 and b2.
    touch(&rig.root("b1"), "sick");
    touch(&rig.root("b2"), "sick");
    rig.pin("3.0.0");
    rig.wait(Duration::from_secs(60), "halted", |r| {
        r.rollout()["state"] == "halted"
    });
    let r = rig.rollout();
    let halt = &r["halted"];
    assert!(
        halt["reason"]
            .as_str()
            .unwrap()
            .contains("boxes in opened waves rolled the release back (limit 1)"),
        "{r:#}"
    );
    let troubled: Vec<&str> = halt["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["site"].as_str().unwrap())
        .collect();
    assert!(
        troubled.iter().all(|s| ["b1", "b2"].contains(s)),
        "{troubled:?}"
    );
    assert!(
        halt["sites"][0]["output"]
            .as_str()
            .unwrap()
            .contains("health check failed"),
        "{r:#}"
    );
    assert_eq!(r["previous"], Value::Null, "only the current one here");
    assert_eq!(rig.api("/api/rollout")["previous"]["state"], "complete");
    for s in OTHERS {
        assert_eq!(rig.desired(s), "2.0.0", "{s} stays on 2.0.0");
        assert_eq!(rig.running(s), "2.0.0");
    }
    // Through a restart, still halted, still held back.
    rig.restart_controller();
    rig.wait_running(&["b3"], "3.0.0", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let r = rig.rollout();
    assert_eq!(r["state"], "halted", "{r:#}");
    for s in OTHERS {
        assert_eq!(rig.desired(s), "2.0.0");
    }
    // A viewer may not resume; an operator does, and it is audited.
    let viewer = rig
        .c
        .http
        .post(format!("{}/api/rollout/resume", rig.c.url))
        .bearer_auth(touchline_testkit::VIEWER)
        .send()
        .unwrap();
    assert_eq!(viewer.status(), 403);
    // The releases page shows the halt, in the reader's language, with
    // the boxes behind it and the resume button; the operator resumes
    // there.
    let (web, cookies, csrf) = operator_session(&rig.c.url);
    let page = |lang: &str| {
        web.get(format!("{}/releases", rig.c.url))
            .header("cookie", format!("{cookies}; tl_lang={lang}"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let html = page("en");
    assert!(html.contains("id=\"rollout-state\">halted<"), "{html}");
    assert!(html.contains("<strong>release 3.0.0</strong>"), "{html}");
    for s in ["b1", "b2"] {
        assert!(
            html.contains(&format!(
                "<td><a href=\"/sites/{s}\">{s}</a></td><td>rolled back</td>"
            )),
            "{s} in {html}"
        );
    }
    assert!(html.contains("id=\"rollout-resume\""), "{html}");
    assert!(page("fr").contains("id=\"rollout-state\">arrêté<"));
    let r = web
        .post(format!("{}/rollout/resume", rig.c.url))
        .header("cookie", &cookies)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    assert_eq!(r.headers()["location"], "/releases");
    let resumed = rig.api("/api/rollout")["current"].clone();
    assert_eq!(resumed["resumes"][0]["by"], "ops", "{resumed:#}");
    let html = page("en");
    assert!(html.contains("Resumed by ops · "), "{html}");
    assert!(!html.contains("id=\"rollout-resume\""), "{html}");
    let again = rig
        .c
        .http
        .post(format!("{}/api/rollout/resume", rig.c.url))
        .bearer_auth(touchline_testkit::OPERATOR)
        .send()
        .unwrap();
    assert_eq!(again.status(), 409, "nothing is halted any more");
    assert!(again.text().unwrap().contains("no rollout is halted"));
    rig.wait_running(&OTHERS, "3.0.0", Duration::from_secs(60));
    let audit = rig.api("/api/audit").to_string();
    assert!(audit.contains("resume rollout"), "{audit}");
}

/// The volume in a box's `configuration.json` (0 before the first).
fn volume(rig: &Rig, site: &str) -> u64 {
    std::fs::read(rig.root(site).join("app/configuration.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["display"]["volume"].as_u64())
        .unwrap_or(0)
}

#[test]
fn with_content_in_waves_a_configuration_change_goes_through_the_waves() {
    let mut rig = Rig::new(Some(80));
    let all: Vec<&str> = BETA.iter().chain(OTHERS.iter()).copied().collect();
    rig.wait_running(&all, "1.0.0", Duration::from_secs(60));
    rig.wait(Duration::from_secs(30), "volume 80 everywhere", |r| {
        all.iter().all(|s| volume(r, s) == 80)
    });
    let serials = |rig: &Rig| -> Vec<u64> {
        OTHERS
            .iter()
            .map(|s| {
                rig.api(&format!("/api/sites/{s}"))["site"]["desired"]["serial"]
                    .as_u64()
                    .unwrap_or_default()
            })
            .collect()
    };
    let before = serials(&rig);

    // Only the configuration changes: no release, yet a rollout. Release
    // 1.0.0 has a policy of its own (everyone at once), which is for boxes
    // moving to it: these boxes stay on it, the fleet's waves apply.
    let repo = rig.files.repo();
    let own = std::fs::read_to_string(repo.path().join("releases/1.0.0.yaml")).unwrap();
    repo.file(
        "releases/1.0.0.yaml",
        format!("{own}rollout:\n  waves:\n    - name: at-once\n"),
    );
    repo.file("fleet.yaml", fleet_yaml("1.0.0", Some(70)));
    rig.files.repo().commit("volume 70");
    let out = rig.c.sync(&rig.admin);
    assert_eq!(out["result"], "published", "{out}");
    let changed: Vec<&str> = out["sites_changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changed, BETA, "only the beta bundles are published: {out}");
    let r = rig.rollout();
    assert_eq!(r["state"], "moving", "{r:#}");
    assert_eq!(r["policy"]["content"], "waves", "{r:#}");
    assert_eq!(r["policy_file"], "fleet.yaml", "{r:#}");
    assert!(
        r["targets"][0]
            .as_str()
            .unwrap()
            .starts_with("release 1.0.0 · serial "),
        "{r:#}"
    );
    assert_eq!(
        waves_of(&r),
        [
            ("beta".into(), true, false),
            ("everyone".into(), false, false)
        ]
    );
    assert_eq!(serials(&rig), before, "s1 and s2 keep their whole bundle");

    // The beta boxes apply it, the wave passes; during the bake time the
    // others still show 80.
    rig.wait(Duration::from_secs(60), "beta passed", |r| {
        waves_of(&r.rollout())[0].2
    });
    let passed = Instant::now();
    for s in BETA {
        assert_eq!(volume(&rig, s), 70, "{s}");
    }
    for s in OTHERS {
        assert_eq!(volume(&rig, s), 80, "{s} is held back during the bake");
    }
    let (web, cookies, _) = operator_session(&rig.c.url);
    let page = web
        .get(format!("{}/releases", rig.c.url))
        .header("cookie", &cookies)
        .send()
        .unwrap()
        .text()
        .unwrap();
    for s in OTHERS {
        assert!(
            page.contains(&format!("{s} (vague pas encore ouverte)")),
            "{page}"
        );
    }

    // A controller restarted during the bake keeps holding them back,
    // then the second wave opens and the rollout completes.
    rig.restart_controller();
    assert!(
        passed.elapsed() < Duration::from_secs(10),
        "restart within the bake"
    );
    assert_eq!(serials(&rig), before, "still held back after the restart");
    rig.wait(Duration::from_secs(60), "rollout complete", |r| {
        r.rollout()["state"] == "complete"
    });
    for s in all {
        assert_eq!(volume(&rig, s), 70, "{s}");
    }
    let after = serials(&rig);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "{after:?} {before:?}"
    );
}

/// With content in waves, a configuration the app does not take (its
/// reload fails on one beta box) halts the rollout: the halt names the box
/// and what its app said, and the boxes beyond the beta keep their whole
/// bundle past the bake time.
#[test]
fn with_content_in_waves_a_change_the_app_does_not_take_halts_the_rollout() {
    let mut rig = Rig::with_commit_status(Some(80));
    let all: Vec<&str> = BETA.iter().chain(OTHERS.iter()).copied().collect();
    rig.wait_running(&all, "1.0.0", Duration::from_secs(60));
    rig.wait(Duration::from_secs(30), "volume 80 everywhere", |r| {
        all.iter().all(|s| volume(r, s) == 80)
    });
    // From now on b2's app refuses what it is given.
    rig.stop("b2");
    let config = rig.boxes[rig.index("b2")].1.config.clone();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "reload_command = [\"true\"]",
        "reload_command = [\"sh\", \"-c\", \"echo configuration refused >&2; exit 1\"]",
    );
    assert!(text.contains("configuration refused"), "{text}");
    std::fs::write(&config, text).unwrap();
    rig.start("b2");
    let serial = |rig: &Rig, s: &str| {
        rig.api(&format!("/api/sites/{s}"))["site"]["desired"]["serial"]
            .as_u64()
            .unwrap_or_default()
    };
    let before: Vec<u64> = OTHERS.iter().map(|s| serial(&rig, s)).collect();

    rig.files
        .repo()
        .file("fleet.yaml", fleet_yaml("1.0.0", Some(70)));
    rig.files.repo().commit("volume 70");
    let commit = rig.files.repo().head();
    let out = rig.c.sync(&rig.admin);
    assert_eq!(out["result"], "published", "{out}");
    rig.wait(Duration::from_secs(60), "halted", |r| {
        r.rollout()["state"] == "halted"
    });
    let halted = Instant::now();
    // The git host hears it: the commit's one status, final, failed.
    if let Some(rec) = &rig.status {
        let r = rec.wait_for("rollout halted: 1 of 3 boxes in opened waves failed to apply it");
        assert_eq!(r["path"], format!("/repos/neopro/fleet/statuses/{commit}"));
        assert_eq!(r["body"]["state"], "failure", "{r}");
        let said = r["body"]["description"].as_str().unwrap();
        assert!(
            said.starts_with(
                "rollout halted: 1 of 3 boxes in opened waves failed to apply it (limit 10%) · "
            ) && said.contains(" · 2 in waves not opened")
                && said.ends_with(" · 1 failed"),
            "{r}"
        );
    }
    let r = rig.rollout();
    let halt = &r["halted"];
    assert_eq!(
        halt["reason"], "1 of 3 boxes in opened waves failed to apply it (limit 10%)",
        "{r:#}"
    );
    assert_eq!(halt["sites"][0]["site"], "b2", "{r:#}");
    assert_eq!(halt["sites"][0]["kind"], "failed", "{r:#}");
    assert!(
        halt["sites"][0]["output"]
            .as_str()
            .unwrap()
            .contains("reload_command failed: configuration refused"),
        "{r:#}"
    );
    assert_eq!(volume(&rig, "b2"), 70, "the files are in place on b2");
    // Past the bake time (12 s) the second wave is still shut.
    std::thread::sleep(Duration::from_secs(14).saturating_sub(halted.elapsed()));
    let r = rig.rollout();
    assert_eq!(r["state"], "halted", "{r:#}");
    assert_eq!(waves_of(&r)[1], ("everyone".into(), false, false), "{r:#}");
    for (s, b) in OTHERS.iter().zip(&before) {
        assert_eq!(volume(&rig, s), 80, "{s} keeps its configuration");
        assert_eq!(serial(&rig, s), *b, "{s} keeps its whole bundle");
    }
}

/// After a halt, the next commit decides: reverting the pin starts a new
/// rollout that takes the beta boxes back to the previous release (the box
/// that had switched switches back; the two that rolled back already run
/// it), supersedes the halted one and completes; the boxes beyond the beta
/// never left the previous release.
#[test]
fn a_revert_after_a_halt_supersedes_it_and_brings_the_beta_back() {
    let rig = Rig::new(None);
    let all: Vec<&str> = BETA.iter().chain(OTHERS.iter()).copied().collect();
    rig.wait_running(&all, "1.0.0", Duration::from_secs(60));
    touch(&rig.root("b1"), "sick");
    touch(&rig.root("b2"), "sick");
    rig.pin("3.0.0");
    let halted_commit = rig.files.repo().head();
    rig.wait(Duration::from_secs(60), "halted", |r| {
        r.rollout()["state"] == "halted"
    });
    rig.wait_running(&["b3"], "3.0.0", Duration::from_secs(60));

    rig.files
        .repo()
        .file("fleet.yaml", fleet_yaml("1.0.0", None));
    rig.files.repo().commit("revert to 1.0.0");
    let revert = rig.files.repo().head();
    let out = rig.c.sync(&rig.admin);
    assert_eq!(out["result"], "published", "{out}");
    let api = rig.api("/api/rollout");
    assert_eq!(api["current"]["commit"], revert.as_str(), "{api:#}");
    assert_eq!(api["previous"]["commit"], halted_commit.as_str(), "{api:#}");
    assert_eq!(api["previous"]["state"], "superseded", "{api:#}");
    rig.wait(
        Duration::from_secs(60),
        "the revert's rollout complete",
        |r| r.rollout()["state"] == "complete",
    );
    rig.wait_running(&BETA, "1.0.0", Duration::from_secs(60));
    for s in all {
        assert_eq!(rig.desired(s), "1.0.0", "{s}");
        assert_eq!(rig.running(s), "1.0.0", "{s}");
    }
}

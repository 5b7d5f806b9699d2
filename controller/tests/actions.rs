//! Remote actions end to end: `touchline serve`, `touchline action` and a
//! real `touchline-agent` whose reboot, restart and journal commands are a
//! recording script (no test reboots or restarts anything of the machine
//! it runs on). Forged, replayed, other-site, expired and forbidden
//! requests are put in the controller's store by hand, as a compromised
//! controller database or network would serve them, and the box refuses
//! each with its reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use touchline_controller::actions::ActionRecord;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_schemas::action::{ACTION_FORMAT, ActionArgs, ActionRequest, ActionState};
use touchline_schemas::manifest::RemoteAction;
use touchline_schemas::{SigningKey, SiteId};
use touchline_testkit::agent_box::AgentBox;
use touchline_testkit::{ControllerFiles, Killed, RunningController, bin};

const SITE: &str = "cesson-handball";

/// The recording script: appends its arguments to `record`; `reboot`
/// writes a new boot id; `journal` prints its arguments and three lines;
/// `restart broken-app` fails with status 3.
fn recorder(dir: &Path) -> PathBuf {
    let p = dir.join("host.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{rec}'\ncase \"$1\" in\n  reboot) echo \"boot-$(date +%s%N)\" > '{boot}' ;;\n  journal) shift; echo \"journalctl $*\"; for i in 1 2 3; do echo \"2026-12-03T14:00:0$i+0100 pi neopro-app[42]: line $i\"; done ;;\n  restart) if [ \"$2\" = broken-app ]; then echo 'Job for broken-app.service failed.' >&2; exit 3; fi ;;\nesac\n",
            rec = dir.join("record").display(),
            boot = dir.join("boot_id").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("boot_id"), "boot-first\n").unwrap();
    p
}

struct Rig {
    files: ControllerFiles,
    c: RunningController,
    admin: String,
    agent: AgentBox,
}

impl Rig {
    fn new() -> Self {
        let files = ControllerFiles::example();
        files.add_example_content();
        let c = files.start();
        let admin = files.local_admin_token();
        c.sync(&admin);
        let token = files.site_token(SITE, false);
        let root = files.path("box");
        std::fs::create_dir_all(&root).unwrap();
        let host = recorder(&root);
        let h = host.display();
        let agent = AgentBox::new(
            &root,
            SITE,
            &files.path("key.pub"),
            Some((&c.url, &token)),
            &format!(
                "space_reserve_bytes = 0\nservices = [\"neopro-app\", \"broken-app\"]\nstop_command = [\"true\"]\nstart_command = [\"true\"]\nreboot_command = [\"{h}\", \"reboot\"]\nrestart_command = [\"{h}\", \"restart\"]\njournal_command = [\"{h}\", \"journal\"]\nreload_command = [\"{h}\", \"reload\"]\nboot_id_path = \"{}\"\nupdate_lock = \"{}\"\n",
                root.join("boot_id").display(),
                root.join("update.lock").display(),
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
        }
    }

    fn data(&self) -> PathBuf {
        self.files.data()
    }

    fn record(&self) -> String {
        std::fs::read_to_string(self.agent.path("record")).unwrap_or_default()
    }

    /// `touchline action --data … <site> <args>`.
    fn action(&self, args: &[&str]) -> Output {
        Command::new(bin("touchline"))
            .arg("action")
            .arg("--data")
            .arg(self.data())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    }

    fn api(&self, path: &str) -> Value {
        let r = self.c.get(path, Some(&self.admin));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .c
            .http
            .post(format!("{}{path}", self.c.url))
            .bearer_auth(&self.admin)
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// Stops the controller, lets `edit` change its store as a compromised
    /// database or a hand with the store would (given the signing key), and
    /// starts it again on the same address (the box's config names it).
    fn restart_with(&mut self, edit: impl FnOnce(&RedbStore, &SigningKey)) {
        let key = touchline_controller::keys::load(&self.files.key()).unwrap();
        let addr = self.c.url.trim_start_matches("http://").to_owned();
        let _ = self.c.process.0.kill();
        let _ = self.c.process.0.wait();
        {
            let store = RedbStore::open(&self.files.data()).unwrap();
            edit(&store, &key);
        }
        self.c = self.files.start_on(&addr);
        self.admin = self.files.local_admin_token();
    }

    fn daemon(&self) -> Killed {
        Killed(
            Command::new(bin("touchline-agent"))
                .args(["run", "--config"])
                .arg(&self.agent.config)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Waits until action `id` of the site is in a final state.
    fn wait_final(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let a = self.api(&format!("/api/sites/{SITE}/actions/{id}"));
            if matches!(
                a["state"].as_str(),
                Some("done" | "failed" | "refused" | "expired")
            ) {
                return a;
            }
            assert!(Instant::now() < deadline, "not final in time: {a}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn each_action_runs_on_an_online_box_within_seconds_and_reports_its_result() {
    let rig = Rig::new();
    let _daemon = rig.daemon();
    // The daemon's long-poll is a minute; an action answers it at once.
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    let out = rig.action(&[SITE, "system-info"]);
    let took = t.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        info["kernel"].is_string() && info["uptime_secs"].is_u64(),
        "{info}"
    );
    assert_eq!(info["boot_id"], "boot-first");
    assert!(
        info["disks"].as_array().is_some_and(|d| !d.is_empty()),
        "{info}"
    );
    assert!(
        took < Duration::from_secs(2),
        "request → done took {took:?}"
    );
    assert!(text(&out).contains("received"), "{}", text(&out));

    let out = rig.action(&[SITE, "restart-service", "neopro-app"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        rig.record().contains("restart neopro-app\n"),
        "{}",
        rig.record()
    );

    // A failing restart: its exit status and output come back.
    let out = rig.action(&[SITE, "restart-service", "broken-app"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Job for broken-app.service failed."),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("exit status 3"), "{}", text(&out));

    let out = rig.action(&[SITE, "logs", "neopro-app", "--lines", "3", "--since", "-1h"]);
    assert!(out.status.success(), "{}", text(&out));
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains(
            "journalctl --unit=neopro-app --lines=3 --no-pager --output=short-iso --since=-1h"
        ),
        "{logs}"
    );
    assert!(logs.contains("neopro-app[42]: line 3"), "{logs}");

    let out = rig.action(&[SITE, "report-now"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = rig.action(&[SITE, "resync"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("files hashed again"), "{}", text(&out));

    // A reboot is reported before it happens, then confirmed by the new
    // boot id (the recording script wrote one).
    let out = rig.action(&[SITE, "reboot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("running: rebooting now"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("rebooted (new boot id)"),
        "{}",
        text(&out)
    );
    assert!(rig.record().contains("reboot\n"));

    // A service that is not the box's: refused by the box.
    let out = rig.action(&[SITE, "restart-service", "ssh"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "refused: service `ssh` is not one of this box's services (neopro-app, broken-app"
        ),
        "{}",
        text(&out)
    );
    assert!(!rig.record().contains("restart ssh"));

    // Operator-provided text is never a shell: refused before it is signed.
    let out = rig.action(&[SITE, "restart-service", "app;reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not a unit name"), "{}", text(&out));

    // The list shows them, newest first; the audit log has who and what.
    let list = rig.api(&format!("/api/sites/{SITE}/actions"));
    let states: Vec<&str> = list["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "refused", "done", "done", "done", "done", "failed", "done", "done"
        ]
    );
    let audit = rig.api("/api/audit?action=remote%20action");
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "local-admin" && e["result"] == "queued"),
        "{audit}"
    );
    assert!(
        entries.iter().any(|e| e["actor"] == format!("box:{SITE}")
            && e["result"].as_str().unwrap_or("").starts_with("failed")),
        "{audit}"
    );
}

#[test]
fn the_allow_list_is_enforced_by_the_controller_and_by_the_box() {
    let mut rig = Rig::new();
    // The controller: a site whose list leaves reboot out.
    rig.files
        .repo()
        .edit(
            &format!("sites/{SITE}.yaml"),
            "overrides:\n",
            "overrides:\n  agent:\n    allowed_actions: [system_info, get_logs]\n",
        )
        .commit("cesson: no remote reboot");
    rig.c.sync(&rig.admin);
    let out = rig.action(&[SITE, "reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`reboot` is not allowed on site `cesson-handball` (agent.allowed_actions: get_logs, system_info)"),
        "{}",
        text(&out)
    );
    // Several sites at once: each answers on its own.
    let (status, bulk) = rig.post(
        "/api/actions",
        &json!({"sites": [SITE, "brest-basket"], "action": "reboot"}),
    );
    assert_eq!(status, 202, "{bulk}");
    assert_eq!(bulk["queued"], 1, "{bulk}");
    assert!(
        bulk["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("is not allowed on site `cesson-handball`"),
        "{bulk}"
    );
    assert_eq!(bulk["results"][1]["state"], "queued", "{bulk}");
    // A viewer cannot request anything.
    let (status, body) = {
        let r = rig
            .c
            .http
            .post(format!("{}/api/sites/{SITE}/actions", rig.c.url))
            .bearer_auth(touchline_testkit::VIEWER)
            .json(&json!({"action": "system-info"}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert!(status == 401 || status == 403, "{status} {body}");

    // The box: its signed bundle (the new one, after a pass) forbids reboot;
    // a request the controller signed anyway is refused there.
    let out = rig.agent.once();
    assert!(out.status.success());
    let mut id = String::new();
    rig.restart_with(|store, key| {
        let now = jiff::Timestamp::now();
        id = put(
            store,
            key,
            SITE,
            RemoteAction::Reboot,
            now,
            900,
            "a-forbidden",
        );
    });
    let out = rig.agent.once();
    assert!(out.status.success());
    let a = rig.api(&format!("/api/sites/{SITE}/actions/{id}"));
    assert_eq!(a["state"], "refused", "{a}");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("`reboot` is not allowed on this box"),
        "{a}"
    );
    assert!(
        !std::fs::read_to_string(rig.agent.path("record"))
            .unwrap_or_default()
            .contains("reboot")
    );
}

/// Reads the stored record of action `id` of the site, changes it, writes it.
fn edit_record(store: &RedbStore, id: &str, change: impl FnOnce(&mut ActionRecord)) {
    let key = format!("action/{SITE}/{id}");
    let mut r: ActionRecord = serde_json::from_str(&store.meta(&key).unwrap().unwrap()).unwrap();
    change(&mut r);
    store
        .set_meta(&key, &serde_json::to_string(&r).unwrap())
        .unwrap();
}

/// Stores a queued action for `site` signed by `key` as the controller
/// would (issued at `now`, living `life` seconds); its id.
fn put(
    store: &RedbStore,
    key: &SigningKey,
    site: &str,
    action: RemoteAction,
    now: jiff::Timestamp,
    life: i64,
    id: &str,
) -> String {
    put_for(store, key, SITE, site, action, now, life, id)
}

/// The same, filed under `filed` (the box that gets it) but signed for
/// `site`.
#[allow(clippy::too_many_arguments)]
fn put_for(
    store: &RedbStore,
    key: &SigningKey,
    filed: &str,
    site: &str,
    action: RemoteAction,
    issued: jiff::Timestamp,
    life: i64,
    id: &str,
) -> String {
    let req = ActionRequest {
        format: ACTION_FORMAT,
        id: id.into(),
        site: SiteId::new(site).unwrap(),
        action,
        args: ActionArgs::default(),
        issued_at: issued,
        expires_at: issued + jiff::SignedDuration::from_secs(life),
        nonce: format!("nonce-{id}"),
        force: false,
    };
    let (body, signature) = req.sign(key).unwrap();
    let now = jiff::Timestamp::now();
    let record = ActionRecord {
        id: id.into(),
        site: SiteId::new(filed).unwrap(),
        action,
        args: ActionArgs::default(),
        force: false,
        requested_by: "test".into(),
        source: None,
        requested_at: now,
        // The controller's own expiry: later than the signed one, so it is
        // the box that decides.
        expires_at: now + jiff::SignedDuration::from_secs(3600),
        state: ActionState::Queued,
        delivered_at: None,
        updates: Vec::new(),
        exit_status: None,
        output: None,
        truncated: false,
        request: String::from_utf8(body).unwrap(),
        signature,
    };
    store
        .set_meta(
            &format!("action/{filed}/{id}"),
            &serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
    id.into()
}

#[test]
fn forged_replayed_other_site_and_expired_requests_are_refused_by_the_box_with_the_reason() {
    let mut rig = Rig::new();
    // One real action first, to replay it.
    let out = rig.action(&[SITE, "system-info", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let real = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(rig.agent.once().status.success());
    assert_eq!(
        rig.wait_final(&real, Duration::from_secs(5))["state"],
        "done"
    );

    let (mut forged, mut other, mut expired) = (String::new(), String::new(), String::new());
    rig.restart_with(|store, key| {
        let now = jiff::Timestamp::now();
        let stranger = SigningKey::generate();
        forged = put(
            store,
            &stranger,
            SITE,
            RemoteAction::RestartService,
            now,
            900,
            "b-forged",
        );
        other = put_for(
            store,
            key,
            SITE,
            "brest-basket",
            RemoteAction::SystemInfo,
            now,
            900,
            "c-other",
        );
        expired = put(
            store,
            key,
            SITE,
            RemoteAction::SystemInfo,
            now - jiff::SignedDuration::from_secs(1200),
            900,
            "d-expired",
        );
        // The replay: the real request, queued again under its own id.
        edit_record(store, &real, |r| {
            r.state = ActionState::Queued;
            r.delivered_at = None;
        });
    });
    let before = std::fs::read_to_string(rig.agent.path("record")).unwrap_or_default();
    let out = rig.agent.once();
    assert!(out.status.success(), "{}", text(&out));
    let get = |id: &str| rig.api(&format!("/api/sites/{SITE}/actions/{id}"));
    for (id, reason) in [
        (forged.as_str(), "not signed by a trusted key"),
        (
            other.as_str(),
            "the action is for site `brest-basket`, not this box's",
        ),
        (expired.as_str(), "the action expired at"),
        (real.as_str(), "a replay is not run again"),
    ] {
        let a = get(id);
        assert_eq!(a["state"], "refused", "{id}: {a}");
        assert!(a["message"].as_str().unwrap().contains(reason), "{id}: {a}");
    }
    // Nothing ran.
    assert_eq!(
        std::fs::read_to_string(rig.agent.path("record")).unwrap_or_default(),
        before
    );
}

#[test]
fn an_offline_box_gets_its_action_when_back_and_an_action_past_its_expiry_shows_expired() {
    let mut rig = Rig::new();
    // No agent runs: queued.
    let out = rig.action(&[SITE, "report-now", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let a = rig.api(&format!("/api/sites/{SITE}/actions/{id}"));
    assert_eq!(a["state"], "queued");
    // The box comes back.
    assert!(rig.agent.once().status.success());
    let a = rig.wait_final(&id, Duration::from_secs(5));
    assert_eq!(a["state"], "done", "{a}");
    // The agent versions per site, as the boxes report them.
    let rel = rig.api("/api/releases");
    let agents = rel["agents"].as_array().unwrap();
    assert_eq!(agents[0]["version"], env!("CARGO_PKG_VERSION"), "{rel}");
    assert_eq!(agents[0]["sites"], json!([SITE]), "{rel}");
    assert_eq!(
        agents.last().unwrap()["version"],
        "unknown",
        "sites never heard from"
    );
    let states: Vec<&str> = a["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["received", "done"]);

    // One the box never took before its expiry.
    rig.restart_with(|store, key| {
        put(
            store,
            key,
            SITE,
            RemoteAction::SystemInfo,
            jiff::Timestamp::now(),
            900,
            "e-late",
        );
        edit_record(store, "e-late", |r| {
            r.expires_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        });
    });
    let a = rig.api(&format!("/api/sites/{SITE}/actions/e-late"));
    assert_eq!(a["state"], "expired", "{a}");
    assert!(rig.agent.once().status.success());
    let a = rig.api(&format!("/api/sites/{SITE}/actions/e-late"));
    assert_eq!(a["state"], "expired", "{a}");
    assert!(
        a["updates"].as_array().unwrap().is_empty(),
        "never delivered: {a}"
    );
}

#[test]
fn a_reboot_requested_mid_match_waits_for_the_update_lock_unless_forced() {
    if touchline_testkit::tools::require_tool("flock", "apt-get install util-linux").is_none() {
        return;
    }
    let rig = Rig::new();
    let lock = rig.agent.path("update.lock");
    std::fs::write(&lock, "").unwrap();
    // The app holds the lock: a match is on.
    let mut holder = Killed(
        Command::new("flock")
            .arg("--close")
            .arg(&lock)
            .args(["sleep", "60"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = rig.action(&[SITE, "reboot", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(rig.agent.once().status.success());
    let a = rig.api(&format!("/api/sites/{SITE}/actions/{id}"));
    assert_eq!(a["state"], "waiting", "{a}");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("waiting for the update lock"),
        "{a}"
    );
    assert!(!rig.record().contains("reboot"), "{}", rig.record());
    // Still held: still waiting, on the next pass too.
    assert!(rig.agent.once().status.success());
    assert!(!rig.record().contains("reboot"));

    // Forced: it goes now, and the audit log says it was forced.
    let out = rig.action(&[
        SITE,
        "restart-service",
        "neopro-app",
        "--force",
        "--no-wait",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let forced = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(rig.agent.once().status.success());
    assert_eq!(
        rig.wait_final(&forced, Duration::from_secs(5))["state"],
        "done"
    );
    assert!(rig.record().contains("restart neopro-app"));
    let audit = rig.api("/api/audit?action=forced");
    assert_eq!(audit["count"], 1, "{audit}");

    // The match ends: the waiting reboot runs at the next pass.
    holder.0.kill().unwrap();
    let _ = holder.0.wait();
    assert!(rig.agent.once().status.success());
    let a = rig.wait_final(&id, Duration::from_secs(5));
    assert_eq!(a["state"], "done", "{a}");
    assert!(rig.record().contains("reboot\n"));
    // CSV export of the same log.
    let r = rig.c.get("/api/audit.csv?action=remote", Some(&rig.admin));
    let csv = r.text().unwrap();
    assert!(
        csv.starts_with("at,actor,action,target,source,result\r\n"),
        "{csv}"
    );
    assert!(csv.contains("remote action (forced)"), "{csv}");
}

/// What a box (or a stolen site token) posts about an action is checked:
/// the token before the body, the body bounded (also once decompressed),
/// every case of `tests/data/bad-http/action-updates/` refused with its
/// reason, and the action left as it was.
#[test]
fn hostile_action_updates_are_refused_with_their_reason_and_change_nothing() {
    use std::io::Write;
    let files = ControllerFiles::example();
    files.add_example_content();
    let c = files.start();
    let admin = files.local_admin_token();
    c.sync(&admin);
    let token = files.site_token(SITE, false);
    let other = files.site_token("brest-basket", false);
    let r = c
        .http
        .post(format!("{}/api/sites/{SITE}/actions", c.url))
        .bearer_auth(&admin)
        .json(&json!({"action": "system-info"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("{}/v1/sites/{SITE}/actions/{id}", c.url);
    let post = |token: Option<&str>, encoding: Option<&str>, body: Vec<u8>| {
        let mut r = c
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    // The token first: a request that announces a large body and sends
    // none is answered 401 without the controller waiting for the body.
    {
        use std::io::{Read, Write as _};
        let addr = c.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /v1/sites/{SITE}/actions/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n"
        )
        .unwrap();
        let mut answer = [0u8; 64];
        let n = s.read(&mut answer).unwrap();
        let head = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    }
    let (status, body) = post(Some(&other), None, b"{}".to_vec());
    assert_eq!(status, 403, "{body}");
    // The corpus.
    let dir = touchline_testkit::data("bad-http/action-updates");
    let mut cases = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let expect = std::fs::read_to_string(p.with_extension("expect")).unwrap();
        let mut lines = expect.lines();
        let want_status: u16 = lines.next().unwrap().parse().unwrap();
        let want = lines.next().unwrap();
        let (status, body) = post(Some(&token), None, std::fs::read(&p).unwrap());
        assert_eq!(status, want_status, "{}: {body}", p.display());
        assert!(body.contains(want), "{}: {body}", p.display());
        cases += 1;
    }
    assert!(cases >= 8, "{cases} cases");
    // A compression bomb: 64 MiB of zeros in ~64 KiB of gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(b"{\"state\":\"done\",\"at\":\"2026-12-03T14:00:00Z\",\"output\":\"")
        .unwrap();
    gz.write_all(&vec![b'0'; 64 * 1024 * 1024]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1024 * 1024);
    let (status, body) = post(Some(&token), Some("gzip"), bomb);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("once decompressed"), "{body}");
    let (status, body) = post(Some(&token), Some("gzip"), b"not gzip".to_vec());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not decompress"), "{body}");
    let (status, body) = post(Some(&token), Some("br"), b"{}".to_vec());
    assert_eq!(status, 415, "{body}");
    // An id this site does not have.
    let r = c
        .http
        .post(format!("{}/v1/sites/{SITE}/actions/nope", c.url))
        .bearer_auth(&token)
        .body(r#"{"state":"done","at":"2026-12-03T14:00:00Z"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    // Nothing changed.
    let a: Value = c
        .get(&format!("/api/sites/{SITE}/actions/{id}"), Some(&admin))
        .json()
        .unwrap();
    assert_eq!(a["state"], "queued", "{a}");
    assert!(a["updates"].as_array().unwrap().is_empty(), "{a}");
    // A gzip body that is fine is taken.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"state":"received","at":"2026-12-03T14:00:00Z"}"#)
        .unwrap();
    let (status, body) = post(Some(&token), Some("gzip"), gz.finish().unwrap());
    assert_eq!(status, 200, "{body}");
}

/// Match-safe apply: while the app holds the update lock (a real `flock`
/// holder), a configuration change is downloaded and staged but neither
/// `configuration.json` nor the reload command is touched; it goes at the
/// first pass after the lock is released.
#[test]
fn a_config_change_waits_for_the_update_lock_and_goes_when_it_is_released() {
    if touchline_testkit::tools::require_tool("flock", "apt-get install util-linux").is_none() {
        return;
    }
    let rig = Rig::new();
    let config = rig.agent.path("app/configuration.json");
    let before = std::fs::read_to_string(&config).unwrap();
    let volume =
        |text: &str| serde_json::from_str::<Value>(text).unwrap()["display"]["volume"].clone();
    assert_eq!(volume(&before), 60, "{before}");
    let reloads = |r: &str| r.lines().filter(|l| *l == "reload").count();
    let reloads_before = reloads(&rig.record());
    let lock = rig.agent.path("update.lock");
    std::fs::write(&lock, "").unwrap();
    let mut holder = Killed(
        Command::new("flock")
            .arg("--close")
            .arg(&lock)
            .args(["sleep", "60"])
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    rig.files
        .repo()
        .edit("groups/handball.yaml", "volume: 60", "volume: 55")
        .commit("quieter");
    rig.c.sync(&rig.admin);
    let out = rig.agent.once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("configuration.json wait for the update lock"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert_eq!(
        reloads(&rig.record()),
        reloads_before,
        "no reload mid-match"
    );
    let st = rig.agent.status_json();
    assert_eq!(st["phase"], "waiting", "{st}");
    // The wait counts from the first pass that waited, across restarts.
    let since = |o: &Output| {
        let t = text(o);
        t.split(" since ")
            .nth(1)
            .map(|r| r.chars().take(23).collect::<String>())
            .unwrap_or_default()
    };
    std::thread::sleep(Duration::from_millis(1100));
    let again = rig.agent.once();
    assert_eq!(again.status.code(), Some(1));
    assert!(!since(&out).is_empty());
    assert_eq!(since(&again), since(&out), "{}", text(&again));

    holder.0.kill().unwrap();
    let _ = holder.0.wait();
    let out = rig.agent.once();
    assert!(out.status.success(), "{}", text(&out));
    let after = std::fs::read_to_string(&config).unwrap();
    assert_eq!(volume(&after), 55, "{after}");
    assert_eq!(reloads(&rig.record()), reloads_before + 1);
}

/// `touchline-agent self-test` (what a new agent proves before it replaces
/// the running one): config, state read only, the accepted bundle against
/// the trusted keys, the controller. Each failure is named; nothing in the
/// state directory is written.
#[test]
fn self_test_checks_config_state_keys_and_controller_and_writes_nothing() {
    let rig = Rig::new();
    let self_test = |cfg: &Path| {
        Command::new(bin("touchline-agent"))
            .args(["self-test", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let state = rig.agent.path("state");
    let before = touchline_testkit::tree(&state);
    let out = self_test(&rig.agent.config);
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        "OK   state:",
        "OK   accepted bundle: verifies with the trusted keys",
        "OK   trusted key: the served bundle is signed by",
    ] {
        assert!(text(&out).contains(line), "{line}: {}", text(&out));
    }
    assert_eq!(touchline_testkit::tree(&state), before, "read only");

    // A box whose clock is a day off (no clock battery): `diagnose` fails
    // it, `self-test` only warns — the agent copes with a wrong clock, and
    // such a box must still take an agent fix.
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(26)).to_string();
    let skewed = |cmd: &str| {
        Command::new(bin("touchline-agent"))
            .args([cmd, "--config"])
            .arg(&rig.agent.config)
            .env("RUST_LOG", "warn")
            .env("TOUCHLINE_TEST_CLOCK", &tomorrow)
            .output()
            .unwrap()
    };
    let out = skewed("self-test");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("WARN clock vs controller: -"),
        "{}",
        text(&out)
    );
    let out = skewed("diagnose");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("FAIL clock vs controller: -"),
        "{}",
        text(&out)
    );

    // Keys that did not sign what the box holds.
    let stranger = rig.agent.path("stranger.pub");
    std::fs::write(&stranger, SigningKey::generate().public_key_openssh()).unwrap();
    let cfg = std::fs::read_to_string(&rig.agent.config).unwrap();
    let other = rig.agent.path("other.toml");
    std::fs::write(
        &other,
        cfg.replace(
            &rig.files.path("key.pub").display().to_string(),
            &stranger.display().to_string(),
        ),
    )
    .unwrap();
    let out = self_test(&other);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("FAIL accepted bundle: does not verify with the trusted keys"),
        "{}",
        text(&out)
    );
    // A state file that does not decode.
    std::fs::write(state.join("state.json"), "{not json").unwrap();
    let out = self_test(&rig.agent.config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL state:"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(state.join("state.json")).unwrap(),
        "{not json",
        "not repaired by a self-test"
    );
    // No controller.
    drop(rig.c);
    let out = self_test(&rig.agent.config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A config that does not load: 2.
    let out = self_test(&rig.agent.path("missing.toml"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Killed at each step of taking an action, the box converges at its next
/// start: killed once it has remembered the request, it runs it once at
/// the next pass (the redelivered request is recognised, not refused);
/// killed while the command would run, it reports `failed` and never runs
/// it again.
#[test]
fn an_agent_killed_while_it_takes_an_action_runs_it_at_most_once() {
    let rig = Rig::new();
    let once_crashing = |at: &str| {
        Command::new(bin("touchline-agent"))
            .args(["once", "--config"])
            .arg(&rig.agent.config)
            .env("RUST_LOG", "warn")
            .env("TOUCHLINE_TEST_CRASH_AT", format!("{at}:1"))
            .output()
            .unwrap()
    };
    let restarts = |r: &str| r.lines().filter(|l| *l == "restart neopro-app").count();

    let out = rig.action(&[SITE, "restart-service", "neopro-app", "--no-wait"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = once_crashing("action-received");
    assert!(!out.status.success(), "aborted: {}", text(&out));
    assert_eq!(restarts(&rig.record()), 0);
    assert_eq!(
        rig.api(&format!("/api/sites/{SITE}/actions/{id}"))["state"],
        "queued"
    );
    assert!(rig.agent.once().status.success());
    let a = rig.wait_final(&id, Duration::from_secs(5));
    assert_eq!(a["state"], "done", "{a}");
    assert_eq!(restarts(&rig.record()), 1, "exactly once");
    // Nothing runs it again.
    assert!(rig.agent.once().status.success());
    assert_eq!(restarts(&rig.record()), 1);

    let out = rig.action(&[SITE, "restart-service", "neopro-app", "--no-wait"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let out = once_crashing("action-running");
    assert!(!out.status.success(), "aborted: {}", text(&out));
    assert!(rig.agent.once().status.success());
    let a = rig.wait_final(&id, Duration::from_secs(5));
    assert_eq!(a["state"], "failed", "{a}");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("the agent stopped while this ran"),
        "{a}"
    );
    assert_eq!(restarts(&rig.record()), 1, "not run again");
}

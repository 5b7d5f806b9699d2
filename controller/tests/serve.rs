//! `touchline serve` end to end: the real binary, a real git repository, real
//! HTTP on 127.0.0.1 with a free port.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use touchline_schemas::{Bundle, TrustedKeys};
use touchline_testkit::{ControllerFiles, OPERATOR, RunningController, VIEWER, git};

const WEBHOOK_SECRET: &str = "s3cret-webhook";

/// The example fleet (with a webhook secret and `extra` in the config), its
/// key and data.
struct World {
    files: ControllerFiles,
}

impl World {
    fn new(extra_config: &str) -> Self {
        let files = ControllerFiles::example();
        files.config(&format!(
            "webhook_secret = \"{WEBHOOK_SECRET}\"\n{extra_config}"
        ));
        Self { files }
    }

    fn repo(&self) -> PathBuf {
        self.files.repo_dir()
    }

    fn data(&self) -> PathBuf {
        self.files.data()
    }

    fn site_token(&self, site: &str, rotate: bool) -> String {
        self.files.site_token(site, rotate)
    }

    fn start(&self) -> RunningController {
        self.files.start()
    }

    fn edit(&self, rel: &str, from: &str, to: &str, msg: &str) -> String {
        self.files.repo().edit(rel, from, to).commit(msg)
    }
}

/// What these tests ask of a running controller.
trait ServerExt {
    fn bundle(&self, site: &str, token: &str) -> (Vec<u8>, String);
    fn json(&self, path: &str) -> Value;
    fn stop(self);
}

impl ServerExt for RunningController {
    fn bundle(&self, site: &str, token: &str) -> (Vec<u8>, String) {
        let r = self.get(&format!("/v1/sites/{site}/bundle"), Some(token));
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        (r.bytes().unwrap().to_vec(), etag)
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path, Some(VIEWER));
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().unwrap()
    }

    fn stop(mut self) {
        // SIGTERM: a clean shutdown.
        let _ = Command::new("kill")
            .arg(self.process.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.process.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("controller did not stop within 10 s of SIGTERM");
    }
}

#[test]
fn a_commit_becomes_a_new_signed_bundle_and_unchanged_sites_keep_their_etag() {
    let w = World::new("");
    let cesson = w.site_token("cesson-handball", false);
    let vannes = w.site_token("vannes-rugby", false);
    let s = w.start();
    let (body, etag) = s.bundle("cesson-handball", &cesson);
    let b = Bundle::from_slice(&body).unwrap();
    assert_eq!(b.serial, 1);
    // The signature verifies with the controller's public key.
    let sig = s.get("/v1/sites/cesson-handball/bundle.sig", Some(&cesson));
    assert_eq!(sig.headers()["etag"].to_str().unwrap(), etag);
    let pubkey = std::fs::read_to_string(w.files.dir().join("key.pub")).unwrap();
    TrustedKeys::parse(&pubkey)
        .unwrap()
        .verify(&body, &sig.bytes().unwrap())
        .unwrap();
    // 304 on If-None-Match.
    let r = s
        .http
        .get(format!("{}/v1/sites/cesson-handball/bundle", s.url))
        .bearer_auth(&cesson)
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let (_, vannes_etag) = s.bundle("vannes-rugby", &vannes);
    let commit = w.edit(
        "sites/cesson-handball.yaml",
        "secondary: \"#000000\"",
        "secondary: \"#ffffff\"",
        "cesson: white",
    );
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "published");
    assert_eq!(out["sites_changed"], json!(["cesson-handball"]));
    let (body2, etag2) = s.bundle("cesson-handball", &cesson);
    assert_ne!(etag2, etag);
    let b2 = Bundle::from_slice(&body2).unwrap();
    assert_eq!(b2.serial, 2);
    assert_eq!(b2.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(b2.config["club"]["colors"]["secondary"], "#ffffff");
    // A site the commit did not change keeps its bundle.
    assert_eq!(s.bundle("vannes-rugby", &vannes).1, vannes_etag);
    // Nothing new: unchanged.
    assert_eq!(s.sync(OPERATOR)["result"], "unchanged");
}

/// A commit's diagnostics as `/api/commits` lists them.
fn diagnostics(commit: &Value) -> Vec<&str> {
    commit["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect()
}

#[test]
fn invalid_commits_and_force_pushes_are_refused_and_the_old_bundle_stays() {
    let w = World::new("");
    let tok = w.site_token("massy-rugby", false);
    let s = w.start();
    let (_, etag) = s.bundle("massy-rugby", &tok);
    let good = git(&w.repo(), &["rev-parse", "HEAD"]);

    let bad = w.edit("groups/rugby.yaml", "priority: 10", "prioriti: 10", "typo");
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "refused");
    assert_eq!(out["commit"], bad);
    let commits = s.json("/api/commits");
    let top = &commits["commits"][0];
    assert_eq!(top["id"], bad);
    assert_eq!(top["state"], "refused");
    let diags = diagnostics(top);
    assert!(
        diags
            .iter()
            .any(|d| d.starts_with("groups/rugby.yaml:") && d.contains("unknown field `prioriti`")),
        "{diags:?}"
    );
    assert_eq!(commits["last_good"], good);
    assert_eq!(
        s.bundle("massy-rugby", &tok).1,
        etag,
        "the old bundle keeps being served"
    );

    // Force-push the branch back to a commit that does not descend from the last good one.
    git(&w.repo(), &["reset", "-q", "--hard", &good]);
    git(&w.repo(), &["checkout", "-q", "--orphan", "rewritten"]);
    git(&w.repo(), &["commit", "-q", "-m", "rewritten history"]);
    git(&w.repo(), &["branch", "-q", "-f", "main", "rewritten"]);
    let forced = git(&w.repo(), &["rev-parse", "main"]);
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "refused");
    let reason = out["reason"].as_str().unwrap();
    assert!(
        reason.contains("not a fast-forward") && reason.contains(&forced) && reason.contains(&good),
        "{reason}"
    );
    assert_eq!(s.bundle("massy-rugby", &tok).1, etag);
}

/// `touchline validate` cannot know the controller's own `offline_after`;
/// the controller checks each commit against it: a poll interval of 3m
/// with no `alerts.offline_after` in the manifests (the controller's 5m
/// applies) is accepted with a warning that says where each value comes
/// from.
#[test]
fn a_commit_whose_poll_interval_meets_the_controllers_offline_after_is_accepted_with_a_warning() {
    let w = World::new("offline_after = \"5m\"");
    let s = w.start();
    w.files
        .repo()
        .edit("fleet.yaml", "  offline_after: 5m\n", "");
    w.edit(
        "fleet.yaml",
        "poll_interval: 60s",
        "poll_interval: 3m",
        "poll every 3 minutes",
    );
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "published", "{out}");
    let top = &s.json("/api/commits")["commits"][0];
    assert_eq!(top["state"], "accepted");
    let diags = diagnostics(top);
    assert!(
        diags.iter().any(|d| d.starts_with("fleet.yaml:23:")
            && d.contains(
                "warning: poll_interval 3m (fleet.yaml:23) and offline_after 5m (the controller's config): a box is overdue only when silent for two poll intervals (6m)"
            )),
        "{diags:?}"
    );
}

#[test]
fn long_poll_wakes_within_a_second_of_a_commit() {
    let w = World::new("");
    let tok = w.site_token("ivry-handball", false);
    let s = w.start();
    let (_, etag) = s.bundle("ivry-handball", &tok);
    let url = format!("{}/v1/sites/ivry-handball/bundle?wait=30", s.url);
    let tok2 = tok.clone();
    let etag2 = etag.clone();
    let waiter = std::thread::spawn(move || {
        let c = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let r = c
            .get(url)
            .bearer_auth(tok2)
            .header("If-None-Match", etag2)
            .send()
            .unwrap();
        (
            Instant::now(),
            r.status(),
            r.headers()["etag"].to_str().unwrap().to_owned(),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    w.edit(
        "groups/handball.yaml",
        "volume: 60",
        "volume: 55",
        "quieter halls",
    );
    s.sync(OPERATOR);
    let published = Instant::now();
    let (woke, status, new_etag) = waiter.join().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_ne!(new_etag, etag);
    let lag = woke.saturating_duration_since(published);
    assert!(
        lag < Duration::from_secs(1),
        "woke {lag:?} after publishing"
    );

    // With no change, the long-poll answers 304 at its timeout.
    let t = Instant::now();
    let r = s
        .http
        .get(format!("{}/v1/sites/ivry-handball/bundle?wait=1", s.url))
        .bearer_auth(&tok)
        .header("If-None-Match", &new_etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(t.elapsed() >= Duration::from_millis(900));
    // wait over the limit is refused.
    let r = s.get("/v1/sites/ivry-handball/bundle?wait=301", Some(&tok));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn tokens_are_checked_per_site() {
    let w = World::new("");
    let a = w.site_token("nantes-handball", false);
    let b = w.site_token("angers-football", false);
    let s = w.start();
    let path = "/v1/sites/nantes-handball/bundle";
    assert_eq!(s.get(path, None).status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.get(path, Some("not-a-token")).status(),
        StatusCode::UNAUTHORIZED
    );
    let r = s.get(path, Some(&b));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"], "this token belongs to another site");
    assert_eq!(s.get(path, Some(&a)).status(), StatusCode::OK);
    // The token is checked before the site id: a valid token names its own
    // site only, so another name (known or not) is the same 403, and what
    // exists is not told to anyone holding a token.
    let r = s.get("/v1/sites/no-such-site/bundle", Some(&a));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"], "this token belongs to another site");
    assert_eq!(
        s.get("/v1/sites/..%2F..%2Fetc/bundle", Some(&a)).status(),
        StatusCode::NOT_FOUND
    );
    // Operator endpoints refuse site tokens and missing tokens.
    assert_eq!(
        s.get("/api/sites", Some(&a)).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get("/api/sites", None).status(), StatusCode::UNAUTHORIZED);
    // A viewer cannot sync.
    let r = s
        .http
        .post(format!("{}/api/sync", s.url))
        .bearer_auth(VIEWER)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Minting while the controller runs goes through it; --rotate replaces.
    let out = common::touchline()
        .args(["site", "token", "--data"])
        .arg(w.data())
        .arg("nantes-handball")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has a token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = w.site_token("nantes-handball", true);
    assert_eq!(s.get(path, Some(&a)).status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.get(path, Some(&rotated)).status(), StatusCode::OK);
}

#[test]
fn content_is_served_by_hash_with_ranges() {
    let w = World::new("");
    let tok = w.site_token("brest-basket", false);
    let file = w.files.dir().join("clip.mp4");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let out = common::touchline()
        .args(["content", "add", "--data"])
        .arg(w.data())
        .arg(&file)
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let hash = touchline_schemas::Sha256::digest(&bytes).to_hex();
    assert_eq!(line, format!("{hash} 100000\n"));
    // A token reads what its bundle names: the clip goes into basketball's.
    w.edit(
        "videos/catalog.yaml",
        "videos:\n",
        &format!("videos:\n  - id: clip\n    title: Clip\n    file: clip.mp4\n    category: Tests\n    subcategory: Range\n    sha256: {hash}\n    size: 100000\n    duration: 10\n"),
        "clip in the catalog",
    );
    let basketball = |from: &str, to: &str, msg: &str| {
        w.edit("groups/basketball.yaml", from, to, msg);
    };
    basketball(
        "    - training-basket-pick-and-roll\n",
        "    - training-basket-pick-and-roll\n    - clip\n",
        "basketball plays the clip",
    );
    let s = w.start();
    let path = format!("/v1/content/{hash}");
    let r = s.get(&path, Some(&tok));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(r.bytes().unwrap().to_vec(), bytes);
    let ranged = |range: &str| {
        s.http
            .get(format!("{}{path}", s.url))
            .bearer_auth(&tok)
            .header("Range", range)
            .send()
            .unwrap()
    };
    let r = ranged("bytes=1000-1999");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(r.bytes().unwrap().to_vec(), bytes[1000..2000].to_vec());
    let r = ranged("bytes=99990-");
    assert_eq!(r.bytes().unwrap().to_vec(), bytes[99990..].to_vec());
    let r = ranged("bytes=100000-");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let r = s
        .http
        .head(format!("{}{path}", s.url))
        .bearer_auth(&tok)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "100000");
    // Malformed hashes never reach the filesystem; unknown ones are 404.
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "ABC",
        &hash.to_uppercase(),
        &format!("{hash}0"),
    ] {
        let r = s.get(&format!("/v1/content/{bad}"), Some(&tok));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        s.get(&format!("/v1/content/{}", "0".repeat(64)), Some(&tok))
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get(&path, None).status(), StatusCode::UNAUTHORIZED);
    // Dropped from the bundle: still readable while it is the previous
    // bundle (a box may be fetching what it verified before the commit),
    // no longer after the next change.
    let admin = w.files.local_admin_token();
    let other = w.site_token("vannes-rugby", false);
    assert_eq!(s.get(&path, Some(&other)).status(), StatusCode::NOT_FOUND);
    basketball("    - clip\n", "", "basketball drops the clip");
    s.sync(&admin);
    assert_eq!(s.get(&path, Some(&tok)).status(), StatusCode::OK);
    basketball("volume: 60", "volume: 61", "basketball louder");
    s.sync(&admin);
    let r = s.get(&path, Some(&tok));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .unwrap()
            .contains("neither its current nor its previous bundle names it"),
        "the clip is out of scope"
    );
}

fn report(seq: u64, phase: &str, applied: u64) -> Value {
    json!({"seq": seq, "at": "2026-11-22T10:00:00Z", "status": {"phase": phase, "applied_serial": applied, "desired_serial": applied},
           "metrics": {"cpu_percent": 12.5, "temperature_c": 61.0, "disk_used_bytes": 10, "disk_total_bytes": 100}})
}

#[test]
fn reports_are_idempotent_durable_and_bad_bodies_store_nothing() {
    let w = World::new("");
    let tok = w.site_token("levallois-basket", false);
    let s = w.start();
    let post = |body: &[u8]| {
        s.http
            .post(format!("{}/v1/sites/levallois-basket/reports", s.url))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .unwrap()
    };
    let batch = json!({"format": 1, "site": "levallois-basket", "reports": [report(1, "starting", 0), report(2, "converged", 1)]});
    let r = post(batch.to_string().as_bytes());
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"accepted": 2, "duplicates": 0, "last_seq": 2})
    );
    let r = post(batch.to_string().as_bytes());
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"accepted": 0, "duplicates": 2, "last_seq": 2})
    );

    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, ""),
        (
            json!({"format": 1, "site": "levallois-basket", "reports": [{"seq": "three"}]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "reports[0].seq",
        ),
        (
            json!({"format": 1, "site": "levallois-basket", "reports": [report(3, "exploded", 1)]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "reports[0].status.phase",
        ),
        (
            json!({"format": 1, "site": "other-site", "reports": [report(3, "converged", 1)]})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "site",
        ),
        (
            json!({"format": 9, "site": "levallois-basket", "reports": []})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            vec![b' '; 1024 * 1024 + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    for (body, status, field) in cases {
        let r = post(&body);
        assert_eq!(r.status(), status);
        let err: Value = r.json().unwrap();
        assert!(err["error"].is_string(), "{err}");
        if !field.is_empty() {
            assert_eq!(err["detail"]["field"], field, "{err}");
        }
    }
    let site = s.json("/api/sites/levallois-basket");
    assert_eq!(
        site["report"]["seq"], 2,
        "nothing from the bad bodies was stored"
    );

    // kill -9 right after the 2xx: nothing acknowledged is lost.
    let batch =
        json!({"format": 1, "site": "levallois-basket", "reports": [report(3, "degraded", 1)]});
    assert_eq!(post(batch.to_string().as_bytes()).status(), StatusCode::OK);
    let mut s = s;
    s.process.0.kill().unwrap();
    s.process.0.wait().unwrap();
    drop(s);
    let s = w.start();
    let site = s.json("/api/sites/levallois-basket");
    assert_eq!(site["report"]["seq"], 3);
    assert_eq!(site["site"]["status"], "degraded");
    let hist = s.json(
        "/api/sites/levallois-basket/history?from=2026-11-22T00:00:00Z&to=2026-11-23T00:00:00Z",
    );
    // One point per stored report with metrics (seq 1, 2, 3); the retried
    // batch added none.
    assert_eq!(hist["points"].as_array().unwrap().len(), 3, "{hist}");
    let csv = s.get("/api/sites/levallois-basket/history?from=2026-11-22T00:00:00Z&to=2026-11-23T00:00:00Z&format=csv", Some(VIEWER)).text().unwrap();
    assert!(csv.starts_with("at,cpu_percent,"), "{csv}");
}

/// Posts one report of `levallois-basket` with its token; asserts 200.
fn post_report(s: &RunningController, tok: &str, r: Value) {
    let batch = json!({"format": 1, "site": "levallois-basket", "reports": [r]});
    let r = s
        .http
        .post(format!("{}/v1/sites/levallois-basket/reports", s.url))
        .bearer_auth(tok)
        .json(&batch)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A commit counts as applied on a box only when the box runs all of it:
/// files in place with the release waiting for the window is pending, with
/// that reason (regression: it counted as applied).
#[test]
fn a_commit_whose_release_waits_for_the_window_is_not_applied() {
    let w = World::new("");
    let tok = w.site_token("levallois-basket", false);
    let s = w.start();
    let site = s.json("/api/sites/levallois-basket");
    let serial = site["site"]["desired"]["serial"].as_u64().unwrap();
    let release = site["site"]["desired"]["release"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |r: Value| post_report(&s, &tok, r);
    let pending_of = |s: &RunningController| {
        let c = s.json("/api/commits");
        let latest = c["commits"][0].clone();
        let mine: Vec<Value> = latest["pending"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["site"] == "levallois-basket")
            .cloned()
            .collect();
        (latest["converged"].as_u64().unwrap(), mine)
    };
    let mut waiting = report(1, "waiting", serial);
    waiting["status"]["release"] = json!("0.0.1");
    waiting["status"]["software"] = json!({"installed": ["0.0.1", release], "current": "0.0.1", "desired": release, "waiting": "maintenance window 03:00-05:00 (Europe/Paris)"});
    post(waiting);
    let (converged, mine) = pending_of(&s);
    assert_eq!(
        converged, 0,
        "files in place, release not switched: not applied"
    );
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["state"], "waiting");
    assert_eq!(
        mine[0]["reason"],
        format!("release {release}: maintenance window 03:00-05:00 (Europe/Paris)")
    );
    let mut done = report(2, "converged", serial);
    done["status"]["release"] = json!(release);
    post(done);
    let (converged, mine) = pending_of(&s);
    assert_eq!(converged, 1);
    assert!(mine.is_empty());
}

/// `/metrics` counts sites from memory: a posted report moves its site at
/// once (no store read per scrape), and the count survives a restart.
#[test]
fn metrics_follow_posted_reports_and_survive_a_restart() {
    let w = World::new("");
    let tok = w.site_token("levallois-basket", false);
    let s = w.start();
    let post = |r: Value| post_report(&s, &tok, r);
    let scrape = |s: &RunningController| s.get("/metrics", None).text().unwrap();
    let m = scrape(&s);
    assert!(m.contains("touchline_sites{status=\"offline\"} 12"), "{m}");
    post(report(1, "degraded", 0));
    let m = scrape(&s);
    assert!(m.contains("touchline_sites{status=\"degraded\"} 1"), "{m}");
    assert!(m.contains("touchline_sites{status=\"offline\"} 11"), "{m}");
    let mut converged = report(2, "converged", 1);
    converged["status"]["release"] = json!("2.4.1");
    post(converged);
    let m = scrape(&s);
    assert!(m.contains("touchline_sites{status=\"online\"} 1"), "{m}");
    assert!(!m.contains("status=\"degraded\"} 1"), "{m}");
    assert!(
        m.contains("touchline_sites_by_version{version=\"2.4.1\"} 1"),
        "{m}"
    );
    s.stop();
    let s = w.start();
    let m = scrape(&s);
    assert!(m.contains("touchline_sites{status=\"online\"} 1"), "{m}");
    assert!(
        m.contains("touchline_sites_by_version{version=\"2.4.1\"} 1"),
        "{m}"
    );
}

#[test]
fn the_fleet_history_exports_every_site_streamed_as_jsonl_or_csv() {
    let w = World::new("");
    let sites = ["levallois-basket", "la-roche-rugby"];
    let tokens: Vec<String> = sites.iter().map(|s| w.site_token(s, false)).collect();
    let s = w.start();
    for (i, (site, tok)) in sites.iter().zip(&tokens).enumerate() {
        let reports: Vec<Value> = (1..=3u64)
            .map(|seq| {
                let mut r = report(seq, "converged", 1);
                r["at"] = json!(format!("2026-11-22T1{i}:0{seq}:00Z"));
                r["metrics"]["cpu_percent"] = json!(10 * (i + 1));
                r
            })
            .collect();
        let r = s
            .http
            .post(format!("{}/v1/sites/{site}/reports", s.url))
            .bearer_auth(tok)
            .json(&json!({"format": 1, "site": site, "reports": reports}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let range = "from=2026-11-22T00:00:00Z&to=2026-11-23T00:00:00Z";
    // JSON Lines (the default): every point of every site, site by site in
    // site order, each line a whole object with its site.
    let r = s.get(&format!("/api/history?{range}"), Some(VIEWER));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/jsonl; charset=utf-8"
    );
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not buffered"
    );
    let lines: Vec<Value> = r
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, f64)> = lines
        .iter()
        .map(|v| {
            (
                v["site"].as_str().unwrap().to_owned(),
                v["cpu_percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("la-roche-rugby".to_owned(), 20.0),
            ("la-roche-rugby".to_owned(), 20.0),
            ("la-roche-rugby".to_owned(), 20.0),
            ("levallois-basket".to_owned(), 10.0),
            ("levallois-basket".to_owned(), 10.0),
            ("levallois-basket".to_owned(), 10.0),
        ]
    );
    // CSV: a site column first; the range cuts.
    let csv = s
        .get(
            "/api/history?from=2026-11-22T10:02:00Z&to=2026-11-22T11:02:00Z&format=csv",
            Some(VIEWER),
        )
        .text()
        .unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "site,at,cpu_percent,memory_percent,temperature_c,temperature_max_c,load1,disk_used_bytes,disk_total_bytes,uptime_secs,samples"
    );
    assert_eq!(
        rows[1..],
        [
            "la-roche-rugby,2026-11-22T11:01:00Z,20,,61,61,,10,100,,1",
            "levallois-basket,2026-11-22T10:02:00Z,10,,61,61,,10,100,,1",
            "levallois-basket,2026-11-22T10:03:00Z,10,,61,61,,10,100,,1",
        ]
    );
    // Bad queries: a clear 400; no token: 401.
    for (q, want) in [
        (
            "format=json",
            "unknown format `json` for the fleet's history: use csv or jsonl",
        ),
        ("from=yesterday", "`from` must be an RFC 3339 time"),
        (
            "from=2026-11-23T00:00:00Z&to=2026-11-22T00:00:00Z",
            "`from` (2026-11-23T00:00:00Z) is after `to` (2026-11-22T00:00:00Z)",
        ),
    ] {
        let r = s.get(&format!("/api/history?{q}"), Some(VIEWER));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        let err: Value = r.json().unwrap();
        assert!(err["error"].as_str().unwrap().contains(want), "{q}: {err}");
    }
    assert_eq!(
        s.get(&format!("/api/history?{range}"), None).status(),
        StatusCode::UNAUTHORIZED
    );
    // One site's export: the same formats plus JSON; others are named.
    let r = s.get(
        &format!("/api/sites/la-roche-rugby/history?{range}&format=xml"),
        Some(VIEWER),
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let err: Value = r.json().unwrap();
    assert_eq!(err["error"], "unknown format `xml`: use json, csv or jsonl");
    let r = s.get(
        &format!("/api/sites/la-roche-rugby/history?{range}&format=jsonl"),
        Some(VIEWER),
    );
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"la-roche-rugby-history.jsonl\""
    );
    assert_eq!(r.text().unwrap().lines().count(), 3);
}

/// `/api/stats` judges each site against its own thresholds: a group that
/// lowers the temperature warning to 60 °C makes its 65 °C box a warning,
/// while the same 65 °C elsewhere (the fleet's 75 °C) is not.
#[test]
fn stats_judge_each_site_against_its_groups_alert_thresholds() {
    let w = World::new("");
    let s = w.start();
    w.files.repo().file(
        "groups/bretagne.yaml",
        format!(
            "{}alerts:\n  temperature_warning: 60\n",
            std::fs::read_to_string(w.repo().join("groups/bretagne.yaml")).unwrap()
        ),
    );
    w.files.repo().commit("bretagne: warn from 60 °C");
    assert_eq!(s.sync(OPERATOR)["result"], "published");
    for site in ["cesson-handball", "massy-rugby"] {
        let mut r = report(1, "converged", 2);
        r["metrics"]["temperature_c"] = json!(65.0);
        let got = s
            .http
            .post(format!("{}/v1/sites/{site}/reports", s.url))
            .bearer_auth(w.site_token(site, false))
            .json(&json!({"format": 1, "site": site, "reports": [r]}))
            .send()
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
    }
    let stats = s.json("/api/stats");
    assert_eq!(
        stats["warningsSites"], 1,
        "only cesson-handball, in bretagne: {stats:#}"
    );
    assert_eq!(stats["criticalSites"], 0, "{stats:#}");
    assert_eq!(stats["averageMetrics"]["temperature"], 65.0, "{stats:#}");
}

#[test]
fn restart_keeps_bundles_tokens_and_commits() {
    let w = World::new("");
    let tok = w.site_token("la-roche-rugby", false);
    let s = w.start();
    let (_, etag) = s.bundle("la-roche-rugby", &tok);
    s.stop();
    let s = w.start();
    assert_eq!(s.bundle("la-roche-rugby", &tok).1, etag);
    assert_eq!(
        s.json("/api/commits")["commits"].as_array().unwrap().len(),
        1
    );
    let stats = s.json("/api/stats");
    assert_eq!(stats["totalSites"], 12);
    // No site reported; the one that just polled its bundle counts as seen
    // (a box's long-poll is its liveness signal between reports).
    assert_eq!(stats["offlineSites"], 11);
    let site = s.json("/api/sites/la-roche-rugby");
    assert_eq!(site["site"]["status"], "online", "{site}");
    assert!(site["site"]["last_seen"].is_string(), "{site}");
    let metrics = s.get("/metrics", None).text().unwrap();
    assert!(
        metrics.contains("touchline_sites{status=\"offline\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("touchline_bundle_serial 1"), "{metrics}");
}

#[test]
fn webhook_syncs_only_with_a_valid_hmac() {
    use hmac::{Hmac, KeyInit, Mac};
    let w = World::new("");
    let s = w.start();
    w.edit("fleet.yaml", "volume: 80", "volume: 75", "a bit quieter");
    let body = br#"{"ref":"refs/heads/main"}"#;
    let post = |sig: &str| {
        s.http
            .post(format!("{}/api/sync", s.url))
            .header("X-Hub-Signature-256", sig)
            .body(body.to_vec())
            .send()
            .unwrap()
    };
    assert_eq!(post("sha256=00").status(), StatusCode::UNAUTHORIZED);
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let r = post(&good);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().unwrap()["result"], "published");
}

fn ssh_keygen(args: &[&str]) {
    let st = Command::new("ssh-keygen")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen {args:?}");
}

#[test]
fn unsigned_commits_are_refused_when_signatures_are_required() {
    if touchline_testkit::require_tool("ssh-keygen", "apt-get install openssh-client").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let alice = tmp.path().join("alice");
    ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "alice",
        "-f",
        alice.to_str().unwrap(),
    ]);
    let pubkey = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    let w = World::new(&format!(
        "require_signed_commits = true\nallowed_commit_signers = [\"{}\"]\n",
        pubkey.trim()
    ));
    // Re-sign the initial commit with alice's key.
    let repo = w.repo();
    git(&repo, &["config", "gpg.format", "ssh"]);
    git(
        &repo,
        &["config", "user.signingkey", alice.to_str().unwrap()],
    );
    git(&repo, &["commit", "-q", "--amend", "-S", "--no-edit"]);
    let tok = w.site_token("rennes-football", false);
    let s = w.start();
    let (_, etag) = s.bundle("rennes-football", &tok);

    // An unsigned commit is refused.
    w.edit(
        "groups/football.yaml",
        "period_minutes: 45",
        "period_minutes: 40",
        "unsigned change",
    );
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "refused", "{out}");
    assert!(
        out["reason"].as_str().unwrap().contains("is not signed"),
        "{out}"
    );
    assert_eq!(s.bundle("rennes-football", &tok).1, etag);

    // Signed by a key that is not allowed: refused.
    let mallory = tmp.path().join("mallory");
    ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "mallory",
        "-f",
        mallory.to_str().unwrap(),
    ]);
    git(
        &repo,
        &["config", "user.signingkey", mallory.to_str().unwrap()],
    );
    git(&repo, &["commit", "-q", "--amend", "-S", "--no-edit"]);
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "refused", "{out}");
    assert!(
        out["reason"].as_str().unwrap().contains("untrusted key"),
        "{out}"
    );

    // Signed by alice: accepted.
    git(
        &repo,
        &["config", "user.signingkey", alice.to_str().unwrap()],
    );
    git(&repo, &["commit", "-q", "--amend", "-S", "--no-edit"]);
    let out = s.sync(OPERATOR);
    assert_eq!(out["result"], "published", "{out}");
    assert_ne!(s.bundle("rennes-football", &tok).1, etag);
}

#[test]
fn the_corpus_of_bad_report_batches_is_refused_with_the_field_named() {
    let w = World::new("");
    let site = "paris13-football";
    let tok = w.site_token(site, false);
    let s = w.start();
    let post = |body: Vec<u8>| {
        s.http
            .post(format!("{}/v1/sites/{site}/reports", s.url))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    let ok = json!({"format": 1, "site": site, "reports": [report(1, "converged", 1)]});
    assert_eq!(post(ok.to_string().into_bytes()).status(), StatusCode::OK);
    let mut failures = Vec::new();
    for case in touchline_testkit::corpus::bad_reports(site) {
        let r = post(case.body.clone());
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap();
        failures.extend(case.mismatch(status, &v));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Too many reports in one batch.
    let many: Vec<Value> = (2..1003).map(|n| report(n, "converged", 1)).collect();
    let r = post(
        json!({"format": 1, "site": site, "reports": many})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().unwrap()["error"],
        "1001 reports in one batch; at most 1000"
    );
    // Nothing of the refused bodies was stored.
    let detail = s.json(&format!("/api/sites/{site}"));
    assert_eq!(detail["report"]["seq"], 1, "{detail}");
}

#[test]
fn kill_9_during_publishing_never_leaves_a_half_published_commit() {
    let w = World::new("");
    let tokens: Vec<(String, String)> = ["cesson-handball", "vannes-rugby", "paris13-football"]
        .iter()
        .map(|s| (s.to_string(), w.site_token(s, false)))
        .collect();
    let pubkey = std::fs::read_to_string(w.files.dir().join("key.pub")).unwrap();
    let trusted = TrustedKeys::parse(&pubkey).unwrap();
    let mut interrupted = 0;
    for round in 0..8u64 {
        let s = w.start();
        // A change to every site, then a sync killed after a varying delay.
        let commit = w.edit(
            "fleet.yaml",
            &format!("sponsor_rotation_seconds: {}", 30 + round),
            &format!("sponsor_rotation_seconds: {}", 31 + round),
            &format!("round {round}"),
        );
        let url = s.url.clone();
        let syncer = std::thread::spawn(move || {
            Client::new()
                .post(format!("{url}/api/sync"))
                .bearer_auth(OPERATOR)
                .send()
                .is_ok()
        });
        std::thread::sleep(Duration::from_millis(round * 15));
        let mut s = s;
        s.process.0.kill().unwrap();
        s.process.0.wait().unwrap();
        if !syncer.join().unwrap() {
            interrupted += 1;
        }
        drop(s);

        // Restart: every bundle served verifies, and the commit ends up
        // published exactly once with every site on it.
        let s = w.start();
        let out = s.sync(OPERATOR);
        assert!(
            out["result"] == "unchanged" || out["result"] == "published",
            "{out}"
        );
        for (site, tok) in &tokens {
            let (body, _) = s.bundle(site, tok);
            let sig = s
                .get(&format!("/v1/sites/{site}/bundle.sig"), Some(tok))
                .bytes()
                .unwrap();
            trusted.verify(&body, &sig).unwrap();
            let b = Bundle::from_slice(&body).unwrap();
            assert_eq!(
                b.commit.as_deref(),
                Some(commit.as_str()),
                "round {round}: {site}"
            );
            assert_eq!(b.config["display"]["sponsor_rotation_seconds"], 31 + round);
        }
        let commits = s.json("/api/commits");
        let mine = commits["commits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == commit.as_str())
            .count();
        assert_eq!(mine, 1, "round {round}: {commits}");
        assert_eq!(commits["last_good"], commit);
        s.stop();
    }
    eprintln!("{interrupted} of 8 syncs were killed before answering");
    assert!(
        interrupted > 0,
        "no sync was interrupted: the kills came too late to test anything"
    );
}

/// The controller logs like the agent: JSON lines with
/// `TOUCHLINE_LOG_FORMAT=json`, each sync in a `sync` span carrying the
/// commit and its serial.
#[test]
fn a_sync_logs_json_lines_inside_a_span_with_the_commit() {
    let w = World::new("");
    let head = w.files.repo().head();
    let mut child = w
        .files
        .serve_command("127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("TOUCHLINE_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("listening on "), "{first}");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let published = lines
        .iter()
        .find(|l| l["fields"]["message"] == "published")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(published["span"]["name"], "sync");
    assert_eq!(published["span"]["commit"], head.as_str());
    assert_eq!(published["span"]["serial"], 1);
}

//! The alert engine and its notifications on an injected clock: the
//! library's `evaluate`, `deliver` and `digest` are called with the times the
//! test chooses (so a 1-hour cooldown and a daily digest take no time),
//! against the real store, the example fleet from a real git repository,
//! and a real webhook receiver on loopback that is down at first.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use touchline_controller::config::Config;
use touchline_controller::content::ContentStore;
use touchline_controller::fleet::Fleet;
use touchline_controller::git::Follower;
use touchline_controller::notify;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_schemas::SiteId;
use touchline_schemas::report::{Metrics, Phase, Report, Status};

use common::webhook::receiver;
use touchline_testkit::ControllerFiles;
use touchline_testkit::free_port;

struct World {
    files: ControllerFiles,
    config: Config,
}

impl World {
    fn new(port: u16) -> Self {
        let files = ControllerFiles::example();
        let config = Config::parse(
            &format!("webhooks = [\"http://127.0.0.1:{port}/hook\"]\ndigest_at = \"08:00\"\n"),
            "test.toml",
        )
        .unwrap();
        Self { files, config }
    }

    /// Opens the controller's state (as `touchline serve` does) and syncs.
    fn open(&self, now: Timestamp) -> Arc<Fleet> {
        let data = self.files.data();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data).unwrap());
        let fleet = Fleet::open(
            store,
            ContentStore::open(&data).unwrap(),
            self.config.clone(),
            touchline_controller::keys::load(&self.files.key()).unwrap(),
            Box::new(
                Follower::open(&data, self.files.repo_dir().to_str().unwrap(), "main").unwrap(),
            ),
        )
        .unwrap()
        .started(now);
        fleet.sync(now).unwrap();
        Arc::new(fleet)
    }
}

/// Cesson reports at `at` with temperature `temp`; then the alerts are
/// evaluated at that time.
fn report(fleet: &Fleet, seq: u64, at: Timestamp, temp: f64) {
    let site = SiteId::new("cesson-handball").unwrap();
    let r = Report {
        seq,
        at,
        status: Status {
            agent_release: None,
            phase: Phase::Converged,
            desired_serial: Some(1),
            applied_serial: Some(1),
            release: None,
            software: None,
            conditions: vec![],
            last_error: None,
            agent_version: None,
        },
        metrics: Some(Metrics {
            temperature_c: Some(temp),
            disk_used_bytes: Some(8_000_000_000),
            disk_total_bytes: Some(32_000_000_000),
            ..Metrics::default()
        }),
    };
    fleet.store.ingest(&site, None, &[r], at).unwrap();
    notify::evaluate(fleet, at).unwrap();
}

fn outbox(fleet: &Fleet) -> Vec<Value> {
    fleet
        .store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|(_, item)| serde_json::to_value(item.unwrap()).unwrap())
        .collect()
}

fn temperature(fleet: &Fleet) -> Value {
    serde_json::to_value(notify::api(fleet).unwrap()).unwrap()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["site"] == "cesson-handball" && a["rule"] == "temperature")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_resolve_outbox_retry_and_the_daily_digest_follow_the_clock() {
    let port = free_port();
    let w = World::new(port);
    // 07:00 in Paris.
    let t0: Timestamp = "2026-11-23T06:00:00Z".parse().unwrap();
    let at = |mins: i64| t0 + SignedDuration::from_mins(mins);
    let fleet = w.open(t0);
    let sender = notify::NetSender::new(reqwest::Client::new(), fleet.config.email.clone());

    // 82 °C: pending for the fleet's hold (2 minutes), then firing.
    report(&fleet, 1, at(0), 82.0);
    assert_eq!(temperature(&fleet)["state"], "pending");
    report(&fleet, 2, at(1), 82.0);
    assert_eq!(temperature(&fleet)["state"], "pending");
    assert!(outbox(&fleet).is_empty());
    report(&fleet, 3, at(2), 82.0);
    assert_eq!(temperature(&fleet)["state"], "firing");
    assert_eq!(temperature(&fleet)["level"], "critical");
    assert_eq!(outbox(&fleet).len(), 1);

    // The receiver is down: the attempt fails, is kept, and waits 2 s.
    assert_eq!(notify::deliver(&fleet, &sender, at(2)).await, 0);
    let item = &outbox(&fleet)[0];
    assert_eq!(item["attempts"], 1);
    assert_eq!(
        item["next_at"],
        json!((at(2) + SignedDuration::from_secs(2)).to_string())
    );
    assert!(
        item["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{item}"
    );
    // A second failure doubles the wait.
    assert_eq!(
        notify::deliver(&fleet, &sender, at(2) + SignedDuration::from_secs(2)).await,
        0
    );
    assert_eq!(outbox(&fleet)[0]["attempts"], 2);
    assert_eq!(
        outbox(&fleet)[0]["next_at"],
        json!((at(2) + SignedDuration::from_secs(6)).to_string())
    );

    // A restart keeps the item (nothing lost) ...
    drop(fleet);
    let fleet = w.open(at(2));
    assert_eq!(outbox(&fleet).len(), 1);
    // ... the receiver comes up; before its time nothing is sent, at its
    // time it is sent once, and the outbox empties (nothing duplicated).
    let got = receiver(TcpListener::bind(("127.0.0.1", port)).unwrap());
    assert_eq!(
        notify::deliver(&fleet, &sender, at(2) + SignedDuration::from_secs(5)).await,
        0
    );
    assert!(got.lock().unwrap().is_empty());
    assert_eq!(
        notify::deliver(&fleet, &sender, at(2) + SignedDuration::from_secs(6)).await,
        1
    );
    assert!(outbox(&fleet).is_empty());
    assert_eq!(
        notify::deliver(&fleet, &sender, at(3)).await,
        0,
        "delivered once"
    );
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0]["text"],
            "[Touchline CRITICAL] Cesson — Glaz Arena — température 82,0 °C"
        );
    }

    // Back to 60 °C: resolves once gone for the hold, and that is told.
    report(&fleet, 4, at(3), 60.0);
    assert_eq!(temperature(&fleet)["state"], "firing", "damped");
    report(&fleet, 5, at(5), 60.0);
    assert_eq!(temperature(&fleet)["state"], "resolved");
    notify::deliver(&fleet, &sender, at(5)).await;
    assert_eq!(got.lock().unwrap()[1]["alert"]["state"], "resolved");

    // Hot again 10 minutes later, inside the 1-hour cooldown: it fires,
    // nobody is told; its resolve is not told either.
    report(&fleet, 6, at(10), 83.0);
    report(&fleet, 7, at(12), 83.0);
    assert_eq!(temperature(&fleet)["state"], "firing");
    report(&fleet, 8, at(13), 60.0);
    report(&fleet, 9, at(15), 60.0);
    assert_eq!(temperature(&fleet)["state"], "resolved");
    assert!(outbox(&fleet).is_empty());
    notify::deliver(&fleet, &sender, at(15)).await;
    assert_eq!(got.lock().unwrap().len(), 2, "cooldown");

    // 70 minutes after the first notice the cooldown is over: told again.
    report(&fleet, 10, at(70), 84.0);
    report(&fleet, 11, at(72), 84.0);
    notify::deliver(&fleet, &sender, at(72)).await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2]["alert"]["state"], "firing");
        assert_eq!(got[2]["alert"]["value"], "84,0 °C");
    }

    // Silent for the fleet's 5 minutes: offline fires (no extra hold), and
    // resolves at the next report.
    let offline = |fleet: &Fleet| {
        serde_json::to_value(notify::api(fleet).unwrap()).unwrap()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["site"] == "cesson-handball" && a["rule"] == "offline")
            .map(|a| a["state"].clone())
    };
    notify::evaluate(&fleet, at(76)).unwrap();
    assert_eq!(offline(&fleet), None, "4 minutes: not offline");
    notify::evaluate(&fleet, at(77) + SignedDuration::from_secs(1)).unwrap();
    assert_eq!(offline(&fleet), Some(json!("firing")), "5 minutes: offline");
    notify::deliver(&fleet, &sender, at(78)).await;
    assert_eq!(got.lock().unwrap()[3]["alert"]["rule"], "offline");
    report(&fleet, 12, at(79), 84.0);
    assert_eq!(offline(&fleet), Some(json!("resolved")));
    notify::deliver(&fleet, &sender, at(79)).await;
    assert_eq!(got.lock().unwrap()[4]["alert"]["state"], "resolved");

    // Every transition is an event of the site, in both languages (the
    // page shows its reader's).
    let stored: Vec<_> = fleet
        .store
        .events(&SiteId::new("cesson-handball").unwrap(), 50)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == touchline_controller::store::EventKind::Alert)
        .collect();
    assert!(
        stored[0]
            .message
            .starts_with("alert resolved: offline for "),
        "{stored:#?}"
    );
    let events: Vec<String> = stored
        .iter()
        .map(|e| format!("{} {}", e.at, e.text(touchline_controller::i18n::Lang::Fr)))
        .collect();
    assert_eq!(events.len(), 7, "{events:#?}");
    assert!(
        events[0].starts_with(&format!("{} alerte résolue : hors ligne", at(79))),
        "{events:#?}"
    );
    assert!(
        events[1].contains(" alerte critique : hors ligne depuis "),
        "{events:#?}"
    );
    assert_eq!(
        events[2],
        format!("{} alerte critique : température 84,0 °C", at(72))
    );
    assert!(
        events[3].starts_with(&format!("{} alerte résolue : ", at(15))),
        "{events:#?}"
    );
    assert_eq!(
        events[6],
        format!("{} alerte critique : température 82,0 °C", at(2))
    );

    // The daily digest at 08:00 Paris: not at 07:59, once at 08:20 (the
    // first evaluation after 08:00), not again that day, again the next.
    assert!(!notify::digest(&fleet, at(59)).unwrap());
    assert!(notify::digest(&fleet, at(80)).unwrap());
    assert!(!notify::digest(&fleet, at(81)).unwrap());
    drop(fleet);
    let fleet = w.open(at(82));
    assert!(
        !notify::digest(&fleet, at(82)).unwrap(),
        "a restart does not send the day's digest again"
    );
    notify::deliver(&fleet, &sender, at(82)).await;
    let digest = got.lock().unwrap()[5].clone();
    assert!(
        digest["text"]
            .as_str()
            .unwrap()
            .starts_with("[Touchline] Résumé du 23/11/2026 — NEOPRO — clubs partenaires : 1 alerte(s) active(s), 11 site(s) hors ligne sur 12"),
        "{digest}"
    );
    assert!(
        digest["text"]
            .as_str()
            .unwrap()
            .contains("- CRITIQUE Cesson — Glaz Arena : température 84,0 °C (depuis 23/11 08:12)"),
        "{digest}"
    );
    assert_eq!(digest["digest"]["sites"], 12);
    assert_eq!(digest["digest"]["offline"], 11);
    assert_eq!(digest["digest"]["firing"][0]["site"], "cesson-handball");
    assert_eq!(digest["digest"]["fired_24h"], 2, "temperature and offline");
    let next_day = at(24 * 60 + 61);
    report(&fleet, 13, next_day, 60.0);
    assert!(notify::digest(&fleet, next_day).unwrap());
    notify::deliver(&fleet, &sender, next_day).await;
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 7, "the next day's digest");
    assert!(
        got[6]["text"]
            .as_str()
            .unwrap()
            .starts_with("[Touchline] Résumé du 24/11/2026"),
        "{}",
        got[6]
    );
}

//! What a rollout costs the controller at 10,000 sites, releases only in
//! waves (`content: at_once`, the default) against everything in waves
//! (`content: waves`).
//!
//! For each mode, a synthetic fleet (`--sites`, default 10,000; the beta
//! group is one site in 50) with the policy `beta`, then `all`, is synced
//! into a real `Fleet` (redb store, content store, signing), every site
//! having reported its release and serial 1. Then, timed:
//!
//! - `sync`: a commit that changes every site's `configuration.json`
//!   (render, derive the rollout, sign and store what changes). Releases
//!   only: every bundle changes at once. Content in waves: only the beta
//!   bundles are published, the others are held back.
//! - `open`: content in waves, the beta boxes report the new serial, and
//!   one rollout step passes the beta wave and opens `all`, which renders,
//!   signs and stores the bundles of every other site.
//!
//! Run: `cargo bench -p touchline-controller --bench rollout`
//! (`-- --sites N`). The controller's log of each sync (its phases in ms)
//! goes to stderr.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use touchline_controller::config::Config;
use touchline_controller::content::ContentStore;
use touchline_controller::fleet::{Fleet, SyncOutcome};
use touchline_controller::follow::DirSource;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::rollout::Step;
use touchline_controller::store::Store;
use touchline_schemas::{SigningKey, SiteId};

/// Every site reports its release, with the files of `serial` applied.
fn report_all(store: &dyn Store, sites: usize, serial: u64, only_beta: bool, now: jiff::Timestamp) {
    for n in (0..sites).filter(|n| !only_beta || n % 50 == 0) {
        let site = SiteId::new(&format!("site-{n:05}")).unwrap();
        let mut r = touchline_testkit::synthetic::reports(serial, 1, now);
        let release = if n % 50 == 0 { "1.1.0" } else { "1.0.0" };
        r[0].status.release = Some(release.parse().unwrap());
        r[0].status.applied_serial = Some(serial);
        r[0].status.desired_serial = Some(serial);
        store.ingest(&site, None, &r, now).unwrap();
    }
}

fn fleet_yaml(dir: &Path, volume: u32, content: &str) {
    let path = dir.join("fleet.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut text = text
        .split("rollout:")
        .next()
        .unwrap()
        .replace("volume: 80", &format!("volume: {volume}"))
        .replace("volume: 70", &format!("volume: {volume}"));
    text.push_str(&format!(
        "rollout:\n  waves:\n    - name: beta\n      group: beta\n    - name: all\n  content: {content}\n"
    ));
    std::fs::write(path, text).unwrap();
}

struct Figures {
    changed: usize,
    sync: f64,
    open: Option<(f64, usize)>,
}

fn run(sites: usize, content: &str) -> Figures {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    touchline_testkit::synthetic::generate(
        &manifests,
        &touchline_testkit::synthetic::Size::bench(sites),
    );
    fleet_yaml(&manifests, 80, content);
    let data = tmp.path().join("data");
    let store = RedbStore::open(&data).unwrap();
    let now = jiff::Timestamp::now();
    report_all(&store, sites, 1, false, now);
    let store: Arc<dyn Store> = Arc::new(store);
    let fleet = Fleet::open(
        store.clone(),
        ContentStore::open(&data).unwrap(),
        Config::parse("sync_interval = \"1h\"\n", "bench.toml").unwrap(),
        SigningKey::generate(),
        Box::new(DirSource::new(&manifests)),
    )
    .unwrap();
    fleet.sync(now).unwrap();

    fleet_yaml(&manifests, 70, content);
    let t = Instant::now();
    let out = fleet.sync(now).unwrap();
    let sync = t.elapsed().as_secs_f64();
    let SyncOutcome::Published { changed, .. } = out else {
        panic!("not published: {out:?}");
    };
    let open = (content == "waves").then(|| {
        let r = fleet.rollout().unwrap();
        report_all(store.as_ref(), sites, r.latest_serial, true, now);
        let before = fleet.bundles();
        let t = Instant::now();
        let steps = fleet.advance_rollout(now).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(steps.contains(&Step::Opened(1)), "{steps:?}");
        let after = fleet.bundles();
        let fresh = after
            .iter()
            .filter(|(s, p)| before.get(*s).is_none_or(|b| b.serial != p.serial))
            .count();
        (secs, fresh)
    });
    Figures {
        changed: changed.len(),
        sync,
        open,
    }
}

fn main() {
    // The controller's own breakdown of each sync (`published`: fetch,
    // validate, render, sign, persist), on stderr.
    touchline_log::init("warn,touchline_controller::fleet=info");
    let sites = usize::try_from(touchline_testkit::bench_arg("--sites", 10_000)).unwrap();
    let at_once = run(sites, "at_once");
    let waves = run(sites, "waves");
    println!("| {sites} sites, a commit changing every configuration.json | published | time |");
    println!("| --- | --- | --- |");
    println!(
        "| sync, releases in waves (content at once) | {} | {:.2} s |",
        at_once.changed, at_once.sync
    );
    println!(
        "| sync, content in waves (others held back) | {} | {:.2} s |",
        waves.changed, waves.sync
    );
    if let Some((secs, fresh)) = waves.open {
        println!("| step opening the wave `all`, content in waves | {fresh} | {secs:.2} s |");
    }
}

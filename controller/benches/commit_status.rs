//! What one commit-status tick costs at 10,000 sites: the controller
//! computes the latest accepted commit's progress (every site's bundle
//! against its latest report) every 5 s while a status is configured, and
//! the overview computes the same for its five latest commits.
//!
//! A synthetic fleet (`--sites`, default 10,000) is synced into a real
//! `Fleet` (redb store, content store, signing), every site having sent
//! one report; then `--runs` (default 5) timings of each:
//!
//! - `progress`: [`commit_status::current`], the computation alone;
//! - `tick`: [`commit_status::tick`] with a `[commit_status]` configured
//!   (the computation, the comparison with the last status and, when it
//!   changed, the outbox write);
//! - `overview`: [`status::commits`] for 5 commits, the overview's table.
//!
//! Printed with the sync (render + sign every site) timed once, for scale,
//! and the parts: reading every latest report, every site's reachability,
//! and what parsing every bundle whole would cost (the progress counted
//! from each bundle's head, kept when it is published, instead).
//!
//! Run: `cargo bench -p touchline-controller --bench commit_status`
//! (`-- --sites N --runs N`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use touchline_controller::config::Config;
use touchline_controller::content::ContentStore;
use touchline_controller::fleet::Fleet;
use touchline_controller::follow::DirSource;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_controller::{commit_status, status};
use touchline_schemas::{SigningKey, SiteId};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(runs: u64, mut f: impl FnMut()) -> (f64, f64) {
    let all: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let best = all.iter().copied().fold(f64::INFINITY, f64::min);
    (median(all), best)
}

fn main() {
    let arg = touchline_testkit::bench_arg;
    let sites = usize::try_from(arg("--sites", 10_000)).unwrap();
    let runs = arg("--runs", 5).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    touchline_testkit::synthetic::generate(
        &manifests,
        &touchline_testkit::synthetic::Size::bench(sites),
    );
    let data = tmp.path().join("data");
    let store = RedbStore::open(&data).unwrap();
    let now = jiff::Timestamp::now();
    let t = Instant::now();
    for n in 0..sites {
        let site = SiteId::new(&format!("site-{n:05}")).unwrap();
        let r = touchline_testkit::synthetic::reports(0, 1, now);
        store.ingest(&site, None, &r, now).unwrap();
    }
    println!(
        "{sites} sites, one report each, stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let token = tmp.path().join("status.token");
    std::fs::write(&token, "tok\n").unwrap();
    let config = Config::parse(
        &format!(
            "sync_interval = \"1h\"\n[commit_status]\nkind = \"github\"\napi_url = \"http://127.0.0.1:9\"\nrepository = \"neopro/fleet\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
        "bench.toml",
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let fleet = Fleet::open(
        store,
        ContentStore::open(&data).unwrap(),
        config,
        SigningKey::generate(),
        Box::new(DirSource::new(manifests)),
    )
    .unwrap();
    let t = Instant::now();
    fleet.sync(now).unwrap();
    let sync = t.elapsed().as_secs_f64();
    println!("sync (render + sign every site): {sync:.2} s");
    let shown = commit_status::current(&fleet, now).unwrap();
    let progress = shown.progress.as_ref().unwrap();
    println!("status: {:?} {}", progress.state, progress.description);

    let (p_med, p_best) = time(runs, || {
        commit_status::current(&fleet, now).unwrap();
    });
    let mut first = true;
    let (t_med, t_best) = time(runs, || {
        let sent = commit_status::tick(&fleet, now).unwrap();
        // Only the first tick has something new to queue.
        assert_eq!(sent, first);
        first = false;
    });
    let (l_med, l_best) = time(runs, || {
        fleet.store.latest_all().unwrap();
    });
    let (b_med, b_best) = time(runs, || {
        for (_, p) in fleet.bundles() {
            touchline_schemas::Bundle::from_slice(&p.body).unwrap();
        }
    });
    let (r_med, r_best) = time(runs, || {
        for site in fleet.bundle_heads().keys() {
            fleet.reachable(site, now);
        }
    });
    let (o_med, o_best) = time(runs, || {
        status::commits(&fleet, 5).unwrap();
    });
    println!();
    println!(
        "| {sites} sites, {runs} runs | median | best | share of one core at one tick every 5 s |"
    );
    println!("| --- | --- | --- | --- |");
    for (what, med, best) in [
        ("progress (commit_status::current)", p_med, p_best),
        ("tick (progress + compare + queue)", t_med, t_best),
        ("overview commits table (5 commits)", o_med, o_best),
        (
            "of which: every latest report read (store.latest_all)",
            l_med,
            l_best,
        ),
        (
            "every bundle parsed whole (Bundle::from_slice), which the progress no longer does",
            b_med,
            b_best,
        ),
        (
            "of which: every site's reachability (its thresholds, its last contact)",
            r_med,
            r_best,
        ),
    ] {
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {:.1} % |",
            med * 1000.0,
            best * 1000.0,
            med / 5.0 * 100.0
        );
    }
}

//! Metrics history for a year: how big the controller's store gets for a
//! fleet that reports every 5 minutes, with the default downsampling tiers
//! (raw for 48 h, 5-minute points for 30 days, hourly for a year).
//!
//! The year is simulated through the `Store` API: day by day, every site's
//! 288 reports in one batch, then the housekeeping the controller runs
//! hourly, as of the end of that day. Printed: reports ingested, points
//! kept per site, the store file's size and how the history table uses
//! it, what the points alone would take without downsampling (a lower
//! bound: keys and values only), and history queries of one site (24 h, 7 d, 30 d,
//! 365 d) on the resulting store.
//!
//! Run: `cargo bench -p touchline-controller --bench history`
//! (`-- --sites N --days D`; defaults 150 and 365).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use touchline_controller::config::Config;
use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_schemas::SiteId;

fn main() {
    let arg = touchline_testkit::bench_arg;
    let sites = usize::try_from(arg("--sites", 150)).unwrap();
    let days = arg("--days", 365);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = Config::default();
    let retention = SignedDuration::from_secs(config.history_retention.as_secs() as i64);
    let tiers: Vec<String> = config
        .history_tiers
        .iter()
        .map(|t| format!("after {}: {}", t.after, t.bucket))
        .collect();
    println!(
        "tiers: raw, then {}; retention {}",
        tiers.join(", "),
        config.history_retention
    );
    // Midnight, so that days are whole days.
    let end: Timestamp = "2026-11-23T00:00:00Z".parse().unwrap();
    let store = RedbStore::open(&data).unwrap();
    let t = Instant::now();
    let reports = touchline_testkit::synthetic::simulate_history(
        &store,
        sites,
        days,
        end,
        retention,
        &config.history_tiers,
        2,
    );
    let took = t.elapsed().as_secs_f64();
    println!(
        "simulated {reports} reports ({sites} sites x {days} days x 288) in {took:.1} s ({:.0} reports/s)",
        reports as f64 / took
    );
    let site = SiteId::new("site-00000").unwrap();
    let all = store
        .history(
            &site,
            Timestamp::UNIX_EPOCH,
            end + SignedDuration::from_hours(1),
        )
        .unwrap();
    let per_site = all.len() as u64;
    let size = store.size_on_disk(&data);
    let per_point = size as f64 / (per_site * sites as u64) as f64;
    println!(
        "points kept per site: {per_site} (of {} reports); store on disk {:.1} MB ({:.0} bytes a point, everything included)",
        days * 288,
        size as f64 / 1e6,
        per_point
    );
    let (stored, meta, frag) = store.history_table_bytes().unwrap();
    println!(
        "history table: {:.1} MB of keys and values ({:.0} bytes a point), {:.1} MB B-tree metadata, {:.1} MB fragmentation; the rest of the file is free pages redb reuses for new points",
        stored as f64 / 1e6,
        stored as f64 / (per_site * sites as u64) as f64,
        meta as f64 / 1e6,
        frag as f64 / 1e6
    );
    println!(
        "without downsampling: {reports} points, at least {:.1} MB of keys and values alone ({:.1}x the points kept)",
        stored as f64 / (per_site * sites as u64) as f64 * reports as f64 / 1e6,
        reports as f64 / (per_site * sites as u64) as f64
    );
    for (label, hours) in [
        ("24 h", 24),
        ("7 d", 24 * 7),
        ("30 d", 24 * 30),
        ("365 d", 24 * 365),
    ] {
        let from = end - SignedDuration::from_hours(hours);
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let t = Instant::now();
            n = store.history(&site, from, end).unwrap().len();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "history of one site, {label}: {n} points in {:.2} ms (median of 5)",
            times[2]
        );
    }
}

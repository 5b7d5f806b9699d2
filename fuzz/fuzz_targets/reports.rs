//! A report batch as the controller reads it: decode, sanitize, fold into
//! the stored state twice (the second time is a retry: all duplicates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use touchline_controller::store::fold_reports;
use touchline_schemas::SiteId;
use touchline_schemas::report::ReportBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(mut batch) = serde_json::from_slice::<ReportBatch>(data) else {
        return;
    };
    for r in &mut batch.reports {
        let _ = r.sanitize();
        // What survives sanitizing is within the caps.
        assert!(r.status.conditions.len() <= touchline_schemas::report::MAX_ENTRIES);
    }
    batch.reports.sort_by_key(|r| r.seq);
    let site = SiteId::new("cesson-handball").expect("valid id");
    let now = jiff::Timestamp::from_second(1_795_000_000).expect("valid time");
    let epoch = batch.epoch.as_deref();
    let first = fold_reports(&site, None, epoch, &batch.reports, now);
    let o = first.outcome;
    assert_eq!(o.accepted + o.duplicates, batch.reports.len());
    let again = fold_reports(&site, first.state, epoch, &batch.reports, now);
    if o.accepted > 0 {
        assert_eq!(again.outcome.accepted, 0, "a retried batch stores nothing");
    }
});

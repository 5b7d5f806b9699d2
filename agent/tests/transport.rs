//! The content store over a fake transport: a cut download resumes from
//! its checkpoint with `If-Range`, a changed source starts over, wrong
//! bytes are refused and leave nothing behind — in memory, no socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use touchline_agent::fetch::{FetchError, Limits, Source, Store, Wanted};
use touchline_agent::state::Paths;
use touchline_schemas::Sha256;
use touchline_testkit::memory_transport::{MemoryTransport, OpenCall};
use touchline_testkit::mirrors::pseudo_random;

const URL: &str = "https://mirror.example/clip";

fn store(dir: &std::path::Path) -> Store {
    let paths = Paths {
        root: dir.to_path_buf(),
    };
    paths.create().unwrap();
    Store::new(paths)
}

fn limits() -> Limits {
    Limits {
        max_rate: 0,
        min_rate: 0,
        window: Duration::from_secs(30),
    }
}

fn source() -> Vec<Source> {
    vec![Source::Http {
        url: URL.into(),
        token: None,
    }]
}

fn open(from: u64, validator: Option<&str>) -> OpenCall {
    OpenCall {
        source: URL.into(),
        from,
        validator: validator.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_cut_download_resumes_from_its_checkpoint_with_if_range() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let bytes = pseudo_random(1024 * 1024, 3);
    let w = Wanted {
        sha256: Sha256::digest(&bytes),
        size: bytes.len() as u64,
    };
    let t = MemoryTransport::default();
    t.serve(URL, bytes.clone(), Some("\"v1\""))
        .cut_next_after(300_000);
    let e = s
        .fetch(&t, w, &source(), limits(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::AllFailed(m) if m.contains("connection reset by peer")),
        "{e}"
    );
    assert_eq!(s.partial_bytes(&w), 300_000, "checkpointed where it broke");
    assert!(!s.has(&w));
    s.fetch(&t, w, &source(), limits(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        t.opens(),
        vec![open(0, None), open(300_000, Some("\"v1\""))]
    );
    assert_eq!(std::fs::read(s.blob(&w.sha256)).unwrap(), bytes);
    assert_eq!(s.partial_bytes(&w), 0, "the checkpoint is gone");
}

#[tokio::test]
async fn a_source_whose_bytes_changed_is_read_again_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let bytes = pseudo_random(512 * 1024, 4);
    let w = Wanted {
        sha256: Sha256::digest(&bytes),
        size: bytes.len() as u64,
    };
    let t = MemoryTransport::default();
    t.serve(URL, bytes.clone(), Some("\"v1\""))
        .cut_next_after(200_000);
    assert!(
        s.fetch(&t, w, &source(), limits(), &mut |_| {})
            .await
            .is_err()
    );
    // The mirror re-published the file: another validator, If-Range fails.
    t.serve(URL, bytes.clone(), Some("\"v2\""));
    s.fetch(&t, w, &source(), limits(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(t.opens()[1], open(200_000, Some("\"v1\"")));
    assert_eq!(std::fs::read(s.blob(&w.sha256)).unwrap(), bytes);
}

#[tokio::test]
async fn wrong_bytes_are_refused_and_leave_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path());
    let good = pseudo_random(100_000, 5);
    let w = Wanted {
        sha256: Sha256::digest(&good),
        size: good.len() as u64,
    };
    let t = MemoryTransport::default();
    t.serve(URL, vec![b'x'; good.len()], Some("\"v1\""));
    let e = s
        .fetch(&t, w, &source(), limits(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sha256 mismatch"), "{e}");
    assert_eq!(s.partial_bytes(&w), 0);
    assert!(!s.has(&w));
    // A source announcing another length is refused before any byte lands.
    t.serve(URL, pseudo_random(100_001, 5), None);
    let e = s
        .fetch(&t, w, &source(), limits(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Content-Length says 100001 bytes, the bundle says 100000"),
        "{e}"
    );
}

//! A broken status store file: `touchline serve` refuses to start with a
//! message that says how to restore it, and never panics (nor starts on an
//! empty store, which would answer 401 to every box).
#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};

use touchline_testkit::ControllerFiles;

fn serve_fails(files: &ControllerFiles) -> String {
    let out = files
        .serve_command("127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("restore it from a backup (stop the controller, copy the backup over it)"),
        "{stderr}"
    );
    stderr
}

#[test]
fn an_empty_or_corrupt_store_is_refused_with_how_to_restore_it() {
    let files = ControllerFiles::example();
    // A real store first.
    drop(files.start());
    let db = files.data().join("status.redb");
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 4096);

    std::fs::write(&db, b"").unwrap();
    let stderr = serve_fails(&files);
    assert!(
        stderr.contains("status.redb` is empty (0 bytes)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "nothing written over it"
    );

    // Random bytes over the header and in the middle.
    for offset in [0u64, good.len() as u64 / 2] {
        std::fs::write(&db, &good).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        f.write_all(&noise).unwrap();
        drop(f);
        // A page redb never reads at open may let it start: then it is
        // killed after a while; either way it never panics.
        let log = files.path("corrupt.log");
        let mut child = files
            .serve_command("127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if started.elapsed() > std::time::Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert!(!stderr.contains("panicked"), "offset {offset}: {stderr}");
        if let Some(st) = status {
            assert_eq!(st.code(), Some(1), "offset {offset}: {stderr}");
            assert!(stderr.contains("status store"), "offset {offset}: {stderr}");
        }
    }
}

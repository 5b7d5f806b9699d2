//! A release package (tar.gz or tar.zst, by the first byte) unpacked into a
//! temp root: refused or unpacked, never a panic, and nothing is ever
//! written outside the destination.
#![no_main]

use libfuzzer_sys::fuzz_target;
use touchline_agent::unpack::{Limits, unpack};
use touchline_schemas::manifest::PackageFormat;

fuzz_target!(|data: &[u8]| {
    let Some((&which, package)) = data.split_first() else {
        return;
    };
    let format = if which & 1 == 0 {
        PackageFormat::TarGz
    } else {
        PackageFormat::TarZst
    };
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let file = tmp.path().join("package");
    if std::fs::write(&file, package).is_err() {
        return;
    }
    let dest = tmp.path().join("root/new");
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 256,
    };
    let result = unpack(&file, format, &dest, limits);
    // Only the package and what is under root/ exist.
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        top.iter().all(|n| n == "package" || n == "root"),
        "{top:?} after {result:?}"
    );
    if result.is_err() {
        assert!(!dest.exists(), "a refused package leaves nothing");
    }
});

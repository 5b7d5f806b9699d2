//! `controller/dist/touchline.service` passes `systemd-analyze verify`
//! with no warning of its own, and holds the limits 10,000 boxes need.
//! Outside CI the test is skipped with a printed reason when the tool is
//! missing.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_controller_unit_verifies_and_allows_enough_open_files() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/touchline.service"),
    )
    .unwrap();
    assert!(unit.contains("\nLimitNOFILE=65536\n"));
    assert!(unit.contains("\nEnvironment=MALLOC_ARENA_MAX=2\n"));
    assert!(unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("StateDirectory=touchline-controller"));
    let Some(analyze) =
        touchline_testkit::require_tool("systemd-analyze", "apt-get install systemd")
    else {
        return;
    };
    // verify checks that ExecStart exists and the environment file: point
    // them at the built binary and a file of the test.
    let tmp = tempfile::tempdir().unwrap();
    let env = tmp.path().join("touchline.env");
    std::fs::write(
        &env,
        "TOUCHLINE_REPO=/srv/fleet.git\nTOUCHLINE_LISTEN=127.0.0.1:8080\n",
    )
    .unwrap();
    let unit = unit
        .replace("/usr/bin/touchline", env!("CARGO_BIN_EXE_touchline"))
        .replace("/etc/default/touchline", &env.display().to_string());
    let verify = |text: &str| {
        let path = tmp.path().join("touchline.service");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = verify(&unit);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("touchline.service"))
        .collect();
    assert!(ok && ours.is_empty(), "systemd-analyze verify: {stderr}");
    let (_, stderr) = verify(&unit.replace("LimitNOFILE=", "LimitNOFILES="));
    assert!(stderr.contains("Unknown key 'LimitNOFILES'"), "{stderr}");
}

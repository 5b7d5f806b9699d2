//! The Debian packages, built by `packaging/build-debs` from the workspace's
//! binaries: `lintian` finds no error (and only the warnings we keep), and
//! each package installs, upgrades, is removed and purged in a throwaway
//! Debian 12 root (`packaging/debian-root`, a debootstrapped bookworm
//! copied for this test), never on this machine. The units pass
//! `systemd-analyze verify --root` inside that root.
//!
//! Needs root (chroot), dpkg-deb, lintian, debootstrap and systemd-analyze:
//! outside CI a missing one skips the test with the reason.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use touchline_testkit::{bin, in_ci, repo_root, require_tool, run};

/// The lintian warnings we keep (docs/install.md says why).
const KEPT_WARNINGS: &[&str] = &[
    "W: touchline-agent: no-manual-page [usr/bin/touchline-agent]",
    "W: touchline: no-manual-page [usr/bin/touchline]",
];

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds both packages at `version` into `out`; their paths (agent, controller).
fn build(bins: &Path, out: &Path, version: &str) -> (PathBuf, PathBuf) {
    run(Command::new(repo_root().join("packaging/build-debs"))
        .args(["--bin-dir"])
        .arg(bins)
        .arg("--out")
        .arg(out)
        .args(["--version", version]));
    let arch = String::from_utf8(run(Command::new("dpkg").arg("--print-architecture")).stdout)
        .unwrap()
        .trim()
        .to_owned();
    (
        out.join(format!("touchline-agent_{version}_{arch}.deb")),
        out.join(format!("touchline_{version}_{arch}.deb")),
    )
}

/// A command run inside the root.
fn chroot(root: &Path, args: &[&str]) -> Output {
    let o = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(o.status.success(), "chroot {args:?}: {}", text(&o));
    o
}

fn dpkg(root: &Path, args: &[&str], deb: Option<&Path>) {
    let mut all: Vec<String> = vec!["dpkg".into()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    if let Some(d) = deb {
        let inside = Path::new("/tmp").join(d.file_name().unwrap());
        std::fs::copy(d, root.join(inside.strip_prefix("/").unwrap())).unwrap();
        all.push(inside.display().to_string());
    }
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    chroot(root, &refs);
}

fn status(root: &Path, package: &str) -> String {
    let o = Command::new("chroot")
        .arg(root)
        .args([
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev} ${Version}",
            package,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The unit's enablement symlink.
fn wants(root: &Path, unit: &str) -> PathBuf {
    at(
        root,
        &format!("/etc/systemd/system/multi-user.target.wants/{unit}"),
    )
}

fn verify_unit(root: &Path, unit: &str) {
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/lib/systemd/system/{unit}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "verify {unit}: {}", text(&o));
    assert!(text(&o).trim().is_empty(), "verify {unit}: {}", text(&o));
}

/// Whether the tools the package tests need are here (else a skip
/// message, or a failure in CI).
fn ready() -> bool {
    let tools = [
        ("dpkg-deb", "apt-get install dpkg"),
        ("lintian", "apt-get install lintian"),
        ("debootstrap", "apt-get install debootstrap"),
        ("systemd-analyze", "apt-get install systemd"),
        ("chroot", "apt-get install coreutils"),
    ];
    if tools
        .iter()
        .any(|(t, hint)| require_tool(t, hint).is_none())
    {
        return false;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(!in_ci(), "the package test needs root in CI (chroot)");
        eprintln!("SKIPPED: installing into a Debian root needs root (chroot)");
        return false;
    }
    true
}

/// A fresh copy of the cached bookworm root at `to`.
fn fresh_root(to: &Path) {
    let cached =
        String::from_utf8(run(&mut Command::new(repo_root().join("packaging/debian-root"))).stdout)
            .unwrap()
            .trim()
            .to_owned();
    run(Command::new("cp").arg("-a").arg(&cached).arg(to));
}

#[test]
fn packages_pass_lintian_and_install_upgrade_remove_and_purge_in_a_debian_root() {
    if !ready() {
        return;
    }
    let bins = bin("touchline").parent().unwrap().to_path_buf();
    bin("touchline-agent");
    let tmp = tempfile::tempdir().unwrap();
    let (agent, controller) = build(&bins, &tmp.path().join("v1"), "0.1.0");
    let (agent2, controller2) = build(&bins, &tmp.path().join("v2"), "0.1.0+2");

    // lintian: no error, no warning but the kept ones.
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&agent)
        .arg(&controller)
        .output()
        .unwrap();
    let report = text(&lint);
    let lines: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("E: ")),
        "lintian errors:\n{report}"
    );
    let mut warnings: Vec<&str> = lines.clone();
    warnings.sort_unstable();
    assert_eq!(warnings, KEPT_WARNINGS, "lintian:\n{report}");

    // A fresh copy of the cached bookworm root.
    let root = tmp.path().join("root");
    fresh_root(&root);

    // Install.
    dpkg(&root, &["-i"], Some(&agent));
    dpkg(&root, &["-i"], Some(&controller));
    assert_eq!(status(&root, "touchline-agent"), "ii  0.1.0");
    assert_eq!(status(&root, "touchline"), "ii  0.1.0");
    for f in ["/usr/bin/touchline-agent", "/usr/bin/touchline"] {
        let mode = std::fs::metadata(at(&root, f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{f}");
    }
    // The binaries run on Debian 12's libraries.
    let v = chroot(&root, &["touchline-agent", "--version"]);
    assert!(text(&v).contains("0.1.0"), "{}", text(&v));
    chroot(&root, &["touchline", "--version"]);
    let skeleton = std::fs::read_to_string(at(&root, "/etc/touchline/agent.toml")).unwrap();
    assert!(
        skeleton
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')),
        "the agent's conffile is a commented skeleton:\n{skeleton}"
    );
    assert!(skeleton.contains("# controller_url = "));
    assert!(at(&root, "/var/lib/touchline").is_dir());
    let owned = text(&chroot(&root, &["dpkg", "-L", "touchline-agent"]));
    for path in [
        "/usr/bin/touchline-agent",
        "/lib/systemd/system/touchline-agent.service",
        "/etc/touchline/agent.toml",
        "/var/lib/touchline",
        "/usr/share/doc/touchline-agent/agent.md",
    ] {
        assert!(owned.lines().any(|l| l == path), "{path} in:\n{owned}");
    }
    for unit in ["touchline-agent.service", "touchline.service"] {
        assert_eq!(
            std::fs::read_link(wants(&root, unit)).unwrap(),
            Path::new("/lib/systemd/system").join(unit),
            "{unit} enabled"
        );
        verify_unit(&root, unit);
    }
    // The controller's user and its key, made once.
    let passwd = std::fs::read_to_string(at(&root, "/etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("touchline:"))
        .expect("the touchline system user");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    let key = at(&root, "/etc/touchline/controller.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    let key_bytes = std::fs::read(&key).unwrap();
    assert!(
        std::fs::read_to_string(at(&root, "/etc/default/touchline"))
            .unwrap()
            .contains("\nTOUCHLINE_REPO=\n")
    );

    // Upgrade: an edited conffile and the key are kept.
    let edited = format!("{skeleton}controller_url = \"https://fleet.example.org\"\n");
    std::fs::write(at(&root, "/etc/touchline/agent.toml"), &edited).unwrap();
    std::fs::write(at(&root, "/var/lib/touchline/accepted.json"), "{}").unwrap();
    dpkg(&root, &["-i"], Some(&agent2));
    dpkg(&root, &["-i"], Some(&controller2));
    assert_eq!(status(&root, "touchline-agent"), "ii  0.1.0+2");
    assert_eq!(status(&root, "touchline"), "ii  0.1.0+2");
    assert_eq!(
        std::fs::read_to_string(at(&root, "/etc/touchline/agent.toml")).unwrap(),
        edited
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_bytes,
        "the key survives an upgrade"
    );
    assert!(at(&root, "/var/lib/touchline/accepted.json").exists());

    // Remove: the binary goes, the conffile and the state stay.
    dpkg(&root, &["-r", "touchline-agent"], None);
    assert_eq!(status(&root, "touchline-agent"), "rc  0.1.0+2");
    assert!(!at(&root, "/usr/bin/touchline-agent").exists());
    // The unit goes; its enablement stays until purge (as debhelper does:
    // a reinstall keeps the admin's choice), dangling meanwhile.
    assert!(!at(&root, "/lib/systemd/system/touchline-agent.service").exists());
    assert!(at(&root, "/etc/touchline/agent.toml").exists());
    assert!(at(&root, "/var/lib/touchline/accepted.json").exists());
    // Purge: the conffile and the state go.
    dpkg(&root, &["-P", "touchline-agent"], None);
    assert_eq!(status(&root, "touchline-agent"), "");
    assert!(!at(&root, "/etc/touchline/agent.toml").exists());
    assert!(!at(&root, "/var/lib/touchline").exists());
    assert!(std::fs::symlink_metadata(wants(&root, "touchline-agent.service")).is_err());

    dpkg(&root, &["-r", "touchline"], None);
    assert!(!at(&root, "/usr/bin/touchline").exists());
    assert!(key.exists(), "remove keeps the signing key");
    dpkg(&root, &["-P", "touchline"], None);
    assert_eq!(status(&root, "touchline"), "");
    assert!(std::fs::symlink_metadata(wants(&root, "touchline.service")).is_err());
    for gone in [
        "/etc/touchline/controller.key",
        "/etc/touchline/controller.toml",
        "/etc/default/touchline",
        "/var/lib/touchline-controller",
        "/etc/touchline",
    ] {
        assert!(!at(&root, gone).exists(), "{gone} after purge");
    }
    assert!(
        !std::fs::read_to_string(at(&root, "/etc/passwd"))
            .unwrap()
            .contains("\ntouchline:"),
        "purge removes the system user"
    );
}

/// What the controller's `/install.sh` does on a new box: in a Debian
/// root, `curl … /install.sh | sh -s -- <code>` against a real `touchline
/// serve` installs the agent package from the controller's content store
/// (sha256 checked), enrolls with the code (the NEOPRO site.conf carried
/// over), and the box's first `once` converges.
#[test]
fn install_sh_installs_enrolls_and_converges_a_box_in_a_debian_root() {
    if !ready() {
        return;
    }
    let bins = bin("touchline").parent().unwrap().to_path_buf();
    bin("touchline-agent");
    let tmp = tempfile::tempdir().unwrap();
    let (agent, _) = build(&bins, &tmp.path().join("debs"), "0.1.0");
    let root = tmp.path().join("root");
    fresh_root(&root);
    // The box is a NEOPRO box: its site.conf names its paths.
    std::fs::create_dir_all(at(&root, "/etc/neopro")).unwrap();
    std::fs::write(
        at(&root, "/etc/neopro/site.conf"),
        "SITE_ID=angers-football\nSITE_API_KEY=old\nVIDEOS_PATH=/home/pi/neopro/videos\nCONFIG_PATH=/home/pi/neopro/webapp/configuration.json\n",
    )
    .unwrap();

    let files = touchline_testkit::ControllerFiles::example();
    files.add_example_content();
    files.config(&format!(
        "[enrollment]\nagent_packages = [\"{}\"]\n[enrollment.agent]\nspace_reserve_bytes = 0\n",
        agent.display()
    ));
    let c = files.start();
    let script = c.get("/install.sh", None).text().unwrap();
    assert!(script.starts_with("#!/bin/sh"), "{script}");
    let minted = run(Command::new(bin("touchline"))
        .args(["site", "enroll", "--data"])
        .arg(files.data())
        .arg("angers-football"));
    let code = String::from_utf8(minted.stdout).unwrap().trim().to_owned();

    let install = Command::new("chroot")
        .arg(&root)
        .args([
            "sh",
            "-c",
            &format!("curl -fsSL {}/install.sh | sh -s -- {code}", c.url),
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    let said = text(&install);
    assert!(install.status.success(), "install.sh: {said}");
    assert!(said.contains("enrolled as site angers-football"), "{said}");
    assert_eq!(status(&root, "touchline-agent"), "ii  0.1.0");
    let cfg = std::fs::read_to_string(at(&root, "/etc/touchline/agent.toml")).unwrap();
    assert!(
        cfg.contains("videos_dir = \"/home/pi/neopro/videos\""),
        "{cfg}"
    );
    let token = at(&root, "/etc/touchline/token");
    assert_eq!(token.metadata().unwrap().mode() & 0o777, 0o600);

    // The box's first pass (services are not in this root: none queried).
    let once = Command::new("chroot")
        .arg(&root)
        .args([
            "touchline-agent",
            "once",
            "--config",
            "/etc/touchline/agent.toml",
        ])
        .env("TOUCHLINE_SERVICES", "")
        .output()
        .unwrap();
    assert!(once.status.success(), "once: {}", text(&once));
    let videos = touchline_testkit::tree(&at(&root, "/home/pi/neopro/videos"));
    assert!(!videos.is_empty(), "the videos arrived");
    assert!(at(&root, "/home/pi/neopro/webapp/configuration.json").is_file());

    // A tampered package is refused by the script, and nothing installed.
    let root2 = tmp.path().join("root2");
    fresh_root(&root2);
    let mut bytes = std::fs::read(&agent).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(tmp.path().join("debs/tampered.deb"), &bytes).unwrap();
    let fake = script.replace(
        "\"$url/v1/agent-packages/$file\"",
        "file:///tmp/tampered.deb",
    );
    assert_ne!(fake, script);
    std::fs::write(at(&root2, "/tmp/tampered.deb"), &bytes).unwrap();
    std::fs::write(at(&root2, "/tmp/install.sh"), &fake).unwrap();
    let refused = Command::new("chroot")
        .arg(&root2)
        .args(["sh", "/tmp/install.sh", &code])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("does not match its sha256: not installed"),
        "{}",
        text(&refused)
    );
    assert_eq!(status(&root2, "touchline-agent"), "");
}

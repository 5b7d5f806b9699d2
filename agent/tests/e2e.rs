//! End to end, with the real binaries: `touchline serve` and
//! `touchline-agent`, real git, real HTTP on 127.0.0.1, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "support/fake_app.rs"]
mod fake_app;

use touchline_schemas::bundle::{AgentSettings, BUNDLE_FORMAT, BundleFile};
use touchline_schemas::{Bundle, Sha256, SigningKey, SiteId, TargetPath};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_touchline-agent"))
}

/// The controller binary, next to the agent's (built by `cargo test
/// --workspace`; built here when the agent's tests run alone).
fn controller_bin() -> PathBuf {
    let bin = agent_bin().with_file_name("touchline");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "touchline-controller", "--bin", "touchline"])
            .current_dir(repo_root())
            .status()
            .unwrap();
        assert!(st.success(), "building the controller");
    }
    bin
}

fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn git(dir: &Path, args: &[&str]) {
    run(Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every regular file under `dir` (relative path → content hash).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if let Ok(bytes) = std::fs::read(e.path()) {
                // (A file removed between listing and reading is skipped.)
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, Sha256::digest(&bytes).to_hex());
            }
        }
    }
    out
}

struct Controller {
    child: Child,
    url: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A controller with the example fleet, its content, and a box root.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let w = Self { tmp };
        let repo = w.repo();
        copy_tree(&repo_root().join("fleet-manifests"), &repo);
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "fleet"]);
        let t = controller_bin();
        run(Command::new(&t)
            .args(["keygen", "--out"])
            .arg(w.path("key")));
        let content = w.path("content");
        run(Command::new(&t)
            .args(["content", "generate-example", "--out"])
            .arg(&content)
            .arg(&repo));
        let files: Vec<PathBuf> = tree(&content).keys().map(|k| content.join(k)).collect();
        run(Command::new(&t)
            .args(["content", "add", "--data"])
            .arg(w.path("data"))
            .args(&files));
        std::fs::write(w.path("controller.toml"), "sync_interval = \"1h\"\n").unwrap();
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    fn token(&self, site: &str) -> String {
        let out = run(Command::new(controller_bin())
            .args(["site", "token", "--data"])
            .arg(self.path("data"))
            .arg(site));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start(&self, listen: &str) -> Controller {
        let mut child = Command::new(controller_bin())
            .arg("serve")
            .arg("--repo")
            .arg(self.repo())
            .arg("--data")
            .arg(self.path("data"))
            .arg("--key")
            .arg(self.path("key"))
            .args(["--listen", listen, "--config"])
            .arg(self.path("controller.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        Controller { child, url }
    }

    fn sync(&self, c: &Controller) {
        // The sync endpoint needs an operator token: the local admin token
        // the controller writes into its data dir.
        let admin = std::fs::read_to_string(self.path("data").join("local-admin.token")).unwrap();
        let r = http()
            .post(format!("{}/api/sync", c.url))
            .bearer_auth(admin.trim())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text());
    }

    /// A box (its own fake root) for `site`, fed by `url`.
    fn agent_config(&self, name: &str, site: &str, url: Option<&str>, extra: &str) -> PathBuf {
        let root = self.path(name);
        std::fs::create_dir_all(&root).unwrap();
        let mut cfg = format!(
            "site_id = \"{site}\"\ntrusted_keys = \"{}\"\nstate_dir = \"{}\"\nvideos_dir = \"{}\"\nconfig_path = \"{}\"\n{extra}\n",
            self.path("key.pub").display(),
            root.join("state").display(),
            root.join("videos").display(),
            root.join("app/configuration.json").display(),
        );
        if let Some(u) = url {
            cfg.push_str(&format!(
                "controller_url = \"{u}\"\ntoken = \"{}\"\n",
                self.token(site)
            ));
        }
        let path = root.join("agent.toml");
        std::fs::write(&path, cfg).unwrap();
        path
    }
}

fn agent(args: &[&str], config: &Path) -> Output {
    Command::new(agent_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("TOUCHLINE_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn bundle_of(c: &Controller, site: &str, token: &str) -> Bundle {
    let body = http()
        .get(format!("{}/v1/sites/{site}/bundle", c.url))
        .bearer_auth(token)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    Bundle::from_slice(&body).unwrap()
}

#[test]
fn once_converges_follows_commits_and_leaves_the_clubs_files_alone() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let cfg = w.agent_config("box", "angers-football", Some(&c.url), "");
    let root = w.path("box");
    let videos = root.join("videos");
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));

    let check = |b: &Bundle| {
        let on_disk = tree(&videos);
        let want: BTreeMap<String, String> = b
            .files
            .iter()
            .map(|f| (f.path.to_string(), f.sha256.to_hex()))
            .collect();
        let managed: BTreeMap<String, String> = on_disk
            .iter()
            .filter(|(k, _)| !k.starts_with("club/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(managed, want, "videos on disk match the bundle by hash");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("app/configuration.json")).unwrap())
                .unwrap();
        for (k, v) in &b.config {
            assert_eq!(&config[k], v, "configuration.json key {k}");
        }
        config
    };
    let tok = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("token = \"")
                .map(|t| t.trim_end_matches('"').to_owned())
        })
        .unwrap();
    let first = bundle_of(&c, "angers-football", &tok);
    check(&first);

    // The club's own video and its own configuration key.
    std::fs::create_dir_all(videos.join("club")).unwrap();
    std::fs::write(videos.join("club/tournoi.mp4"), b"our tournament").unwrap();
    let conf_path = root.join("app/configuration.json");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf_path).unwrap()).unwrap();
    conf["local_playlist"] = serde_json::json!(["club/tournoi.mp4"]);
    std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();

    // A no-op pass hashes nothing and rewrites no video.
    let stamps = |d: &Path| -> BTreeMap<String, (u64, i64)> {
        tree(d)
            .keys()
            .map(|k| {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(d.join(k)).unwrap();
                (k.clone(), (m.ino(), m.mtime_nsec()))
            })
            .collect()
    };
    let before = stamps(&videos);
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stamps(&videos),
        before,
        "no video rewritten by a no-op pass"
    );

    // Commit: the football group drops one video, adds another, and
    // changes a configuration value.
    let group = w.repo().join("groups/football.yaml");
    let text = std::fs::read_to_string(&group)
        .unwrap()
        .replace("- training-football-pressing", "- training-rugby-melee")
        .replace("period_minutes: 45", "period_minutes: 40");
    std::fs::write(&group, text).unwrap();
    git(
        &w.repo(),
        &["commit", "-qam", "football: new drill, shorter periods"],
    );
    w.sync(&c);
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = bundle_of(&c, "angers-football", &tok);
    assert!(second.serial > first.serial);
    let config = check(&second);
    assert_eq!(config["scoreboard"]["period_minutes"], 40);
    assert!(
        !tree(&videos).keys().any(|k| k.contains("pressing")),
        "the removed video is gone"
    );
    assert!(tree(&videos).keys().any(|k| k.contains("melee")));
    assert_eq!(
        std::fs::read(videos.join("club/tournoi.mp4")).unwrap(),
        b"our tournament",
        "the club's file is untouched"
    );
    assert_eq!(
        config["local_playlist"],
        serde_json::json!(["club/tournoi.mp4"]),
        "the club's configuration key is kept"
    );

    // A managed video deleted and another edited locally come back.
    let victim = second.files[0].path.to_string();
    std::fs::remove_file(videos.join(&victim)).unwrap();
    let edited = second.files[1].path.to_string();
    std::fs::write(videos.join(&edited), b"scribbled over").unwrap();
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    check(&second);

    // status says converged; the controller has the box's report.
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["converged"], true, "{st}");
    assert_eq!(st["applied_serial"], second.serial);
    assert_eq!(st["queued_reports"], 0);

    // Controller gone: once exits 1 with the reason; nothing changes.
    let before = tree(&root.join("videos"));
    drop(c);
    let out = agent(&["once"], &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("controller unreachable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&root.join("videos")), before);
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["offline_since"].is_string(), "{st}");
    assert_eq!(st["queued_reports"], 1, "the report waits on disk");
}

/// Signs bundles for apply-dir tests.
struct Signer {
    key: SigningKey,
}

impl Signer {
    fn write(&self, dir: &Path, b: &Bundle) {
        self.write_raw(dir, &b.to_canonical_json());
    }
    fn write_raw(&self, dir: &Path, body: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("bundle.json"), body).unwrap();
        std::fs::write(dir.join("bundle.json.sig"), self.key.sign(body).unwrap()).unwrap();
    }
}

fn sample_bundle(site: &str, serial: u64, files: &[(&str, &[u8])], urls: &[String]) -> Bundle {
    let now = jiff::Timestamp::now();
    Bundle {
        agent: AgentSettings::default(),
        commit: None,
        config: serde_json::json!({"volume": serial, "club": {"name": "Test"}})
            .as_object()
            .unwrap()
            .clone(),
        expires_at: now + jiff::SignedDuration::from_hours(24 * 7),
        files: files
            .iter()
            .map(|(p, bytes)| BundleFile {
                path: TargetPath::new(p).unwrap(),
                sha256: Sha256::digest(bytes),
                size: bytes.len() as u64,
                urls: urls
                    .iter()
                    .map(|u| format!("{u}/{}", Sha256::digest(bytes).to_hex()))
                    .collect(),
            })
            .collect(),
        format: BUNDLE_FORMAT,
        issued_at: now,
        serial,
        site: SiteId::new(site).unwrap(),
        software: None,
    }
}

/// A box with no controller, fed by bundle directories.
fn offline_box(tmp: &Path, extra: &str) -> (PathBuf, Signer) {
    let key = SigningKey::generate();
    std::fs::write(tmp.join("trusted"), key.public_key_openssh()).unwrap();
    let cfg = tmp.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "site_id = \"cesson-handball\"\ntrusted_keys = \"{}\"\nstate_dir = \"{}\"\nvideos_dir = \"{}\"\nconfig_path = \"{}\"\nspace_reserve_bytes = 0\n{extra}\n",
            tmp.join("trusted").display(),
            tmp.join("state").display(),
            tmp.join("videos").display(),
            tmp.join("app/configuration.json").display(),
        ),
    )
    .unwrap();
    (cfg, Signer { key })
}

fn with_content(dir: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir.join("content")).unwrap();
    for (_, bytes) in files {
        std::fs::write(
            dir.join("content").join(Sha256::digest(bytes).to_hex()),
            bytes,
        )
        .unwrap();
    }
}

/// The box's files and state, to prove a refusal changed nothing.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut t = tree(&root.join("videos"));
    for f in ["app/configuration.json", "state/accepted.json"] {
        if let Ok(b) = std::fs::read(root.join(f)) {
            t.insert(f.to_owned(), Sha256::digest(&b).to_hex());
        }
    }
    t
}

#[test]
fn bad_bundles_are_refused_with_the_reason_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"aaaa"), ("Sponsors/b.mp4", b"bbbb")];
    let good = tmp.path().join("good");
    signer.write(&good, &sample_bundle("cesson-handball", 5, files, &[]));
    with_content(&good, files);
    let out = agent(&["apply-dir", good.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = snapshot(tmp.path());
    assert_eq!(before.len(), 4);

    let other = SigningKey::generate();
    type Case<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "flipped byte",
            Box::new(|d: &Path| {
                let mut body = sample_bundle("cesson-handball", 6, files, &[]).to_canonical_json();
                signer.write_raw(d, &body);
                let i = body.len() / 2;
                body[i] ^= 1;
                std::fs::write(d.join("bundle.json"), body).unwrap();
            }),
            "bundle signature rejected",
        ),
        (
            "untrusted key",
            Box::new(|d: &Path| {
                Signer { key: other.clone() }
                    .write(d, &sample_bundle("cesson-handball", 6, files, &[]));
            }),
            "bundle signature rejected",
        ),
        (
            "another site",
            Box::new(|d: &Path| signer.write(d, &sample_bundle("brest-basket", 6, files, &[]))),
            "bundle is for site `brest-basket`, this box is `cesson-handball`",
        ),
        (
            "older serial",
            Box::new(|d: &Path| signer.write(d, &sample_bundle("cesson-handball", 4, files, &[]))),
            "bundle serial 4 is older than serial 5 already accepted",
        ),
        (
            "expired",
            Box::new(|d: &Path| {
                let mut b = sample_bundle("cesson-handball", 6, files, &[]);
                b.issued_at = "2026-01-01T00:00:00Z".parse().unwrap();
                b.expires_at = "2026-01-08T00:00:00Z".parse().unwrap();
                signer.write(d, &b);
            }),
            "bundle expired at 2026-01-08T00:00:00Z",
        ),
        (
            "path traversal",
            Box::new(|d: &Path| {
                let body = String::from_utf8(
                    sample_bundle("cesson-handball", 6, files, &[]).to_canonical_json(),
                )
                .unwrap()
                .replace("Sponsors/a.mp4", "../../etc/passwd");
                signer.write_raw(d, body.as_bytes());
            }),
            "bundle is not valid",
        ),
        (
            "oversize",
            Box::new(|d: &Path| {
                let mut b = sample_bundle("cesson-handball", 6, files, &[]);
                b.config
                    .insert("padding".into(), "x".repeat(5 * 1024 * 1024).into());
                signer.write(d, &b);
            }),
            "over the 4194304-byte limit",
        ),
    ];
    for (name, make, want) in cases {
        let dir = tmp.path().join(name.replace(' ', "-"));
        make(&dir);
        with_content(&dir, files);
        let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
        assert_eq!(snapshot(tmp.path()), before, "{name}: nothing changed");
        let st = agent(&["status"], &cfg);
        assert!(
            String::from_utf8_lossy(&st.stdout).contains(want),
            "{name}: status shows the reason: {}",
            String::from_utf8_lossy(&st.stdout)
        );
    }
}

/// A hostile mirror: `/wrong/<h>` right length, wrong bytes;
/// `/endless/<h>` no length, never ends; `/liar/<h>` a false
/// Content-Length; `/tarpit/<h>` one byte a second.
fn hostile_mirror(good: Vec<u8>) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut s) = conn else { continue };
            let good = good.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    req.push(b[0]);
                }
                let line = String::from_utf8_lossy(&req).to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let n = good.len();
                if path.starts_with("/wrong/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(&vec![b'x'; n]);
                } else if path.starts_with("/endless/") {
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                    while s.write_all(&[b'y'; 4096]).is_ok() {}
                } else if path.starts_with("/liar/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        n * 10
                    );
                    let _ = s.write_all(&good);
                } else if path.starts_with("/tarpit/") {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    for byte in &good {
                        if s.write_all(&[*byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(700));
                    }
                }
            });
        }
    });
    (url, stop)
}

#[test]
fn hostile_mirrors_are_refused_with_a_precise_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(
        tmp.path(),
        "min_download_rate = 1000\ndownload_watchdog = \"2s\"\nread_timeout = \"5s\"",
    );
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let files: &[(&str, &[u8])] = &[("Sponsors/big.mp4", &content)];
    let (mirror, stop) = hostile_mirror(content.clone());
    let cases = [
        ("wrong", "sha256 mismatch"),
        ("endless", "more than the 200000 bytes the bundle says"),
        (
            "liar",
            "Content-Length says 2000000 bytes, the bundle says 200000",
        ),
        ("tarpit", "too slow"),
    ];
    for (serial, (mode, want)) in cases.iter().enumerate() {
        let dir = tmp.path().join(mode);
        signer.write(
            &dir,
            &sample_bundle(
                "cesson-handball",
                serial as u64 + 1,
                files,
                &[format!("{mirror}/{mode}")],
            ),
        );
        let started = Instant::now();
        let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{mode}: {}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode} did not hold the agent"
        );
        assert!(
            tree(&tmp.path().join("videos")).is_empty(),
            "{mode}: nothing placed"
        );
        assert!(!tmp.path().join("app/configuration.json").exists());
        // No partial file of a rejected download stays in the store.
        let store: BTreeSet<String> = tree(&tmp.path().join("state/cas/sha256"))
            .into_keys()
            .collect();
        assert!(store.is_empty(), "{mode}: {store:?}");
    }
    stop.store(true, Ordering::Relaxed);
}

/// A mirror with ETag and Range support whose first answer breaks off
/// after `cut` bytes. Records the `Range` / `If-Range` of each request.
fn flaky_mirror(good: Vec<u8>, cut: usize) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                req.push(b[0]);
            }
            let text = String::from_utf8_lossy(&req).to_lowercase();
            let header = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let range = header("range:");
            let if_range = header("if-range:");
            seen2
                .lock()
                .unwrap()
                .push(format!("{range:?} {if_range:?}"));
            let len = good.len();
            match (range, if_range.as_deref()) {
                (Some(r), Some("\"v1\"")) => {
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    let _ = write!(
                        s,
                        "HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        len - 1,
                        len - from
                    );
                    let _ = s.write_all(&good[from..]);
                }
                _ => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let end = if n == 0 { cut } else { len };
                    let _ = s.write_all(&good[..end]);
                }
            }
        }
    });
    (url, seen)
}

#[test]
fn an_interrupted_download_resumes_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "read_timeout = \"3s\"");
    // 80 MB, cut at 70 MB: the error itself takes a checkpoint.
    let content: Vec<u8> = (0..80 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let cut = 70 * 1024 * 1024;
    let (mirror, seen) = flaky_mirror(content.clone(), cut);
    let files: &[(&str, &[u8])] = &[("Sponsors/long.mp4", &content)];
    let dir = tmp.path().join("usb");
    signer.write(
        &dir,
        &sample_bundle("cesson-handball", 1, files, &[format!("{mirror}/f")]),
    );
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert_eq!(out.status.code(), Some(1), "the first attempt breaks off");
    let st = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let pending = st["pending_downloads"][0]["bytes"].as_u64().unwrap();
    assert!(pending >= 64 * 1024 * 1024, "checkpointed bytes kept: {st}");
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], "None None");
    assert_eq!(
        seen[1],
        format!("Some(\"bytes={cut}-\") Some(\"\\\"v1\\\"\")"),
        "resumed where the connection broke (a checkpoint is taken on the error), with If-Range"
    );
    assert_eq!(
        Sha256::digest(&std::fs::read(tmp.path().join("videos/Sponsors/long.mp4")).unwrap()),
        Sha256::digest(&content)
    );
}

#[test]
fn kill_9_at_random_points_never_exposes_a_half_written_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // Two versions of a 24-file tree of 256 KB files, alternating.
    let make = |v: u8| -> Vec<(String, Vec<u8>)> {
        (0..24u8)
            .map(|i| {
                let path = format!("Sponsors/S{}/clip-{i:02}.mp4", i % 3);
                let bytes: Vec<u8> = (0..256 * 1024u32)
                    .map(|k| (k as u8) ^ i ^ v.wrapping_mul(31))
                    .collect();
                (path, bytes)
            })
            .collect()
    };
    let versions = [make(1), make(2)];
    let mut valid: BTreeSet<String> = BTreeSet::new();
    for v in &versions {
        for (_, b) in v {
            valid.insert(Sha256::digest(b).to_hex());
        }
    }
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("v{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let videos = tmp.path().join("videos");
    let conf = tmp.path().join("app/configuration.json");
    // The watcher reads what the local app would read, all the time.
    let watcher = {
        let stop = stop.clone();
        let valid = valid.clone();
        let videos = videos.clone();
        let conf = conf.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (rel, hash) in tree(&videos) {
                    let name = rel.rsplit('/').next().unwrap_or_default();
                    if name.starts_with('.') {
                        continue; // the agent's hidden temp names
                    }
                    assert!(valid.contains(&hash), "half-written or foreign file {rel}");
                    checks += 1;
                }
                if let Ok(b) = std::fs::read(&conf) {
                    serde_json::from_slice::<serde_json::Value>(&b)
                        .expect("configuration.json is whole");
                    checks += 1;
                }
            }
            checks
        })
    };
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut kills = 0;
    for round in 0..80u64 {
        let v = (round % 2) as usize;
        let files: Vec<(&str, &[u8])> = versions[v]
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let dir = &dirs[v];
        let _ = std::fs::remove_dir_all(dir);
        signer.write(
            dir,
            &sample_bundle("cesson-handball", round + 1, &files, &[]),
        );
        with_content(dir, &files);
        let mut child = Command::new(agent_bin())
            .args(["apply-dir"])
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "off")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // After each kill, a restart converges (on every other round, so
        // that the next kill also lands in the middle of a change).
        if round % 2 == 1 {
            let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
            assert!(
                out.status.success(),
                "round {round}: restart after kill -9 did not converge: {}",
                stderr(&out)
            );
        }
    }
    // After the last kill, a clean run converges on the last bundle.
    let last = &dirs[1];
    let out = agent(&["apply-dir", last.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    stop.store(true, Ordering::Relaxed);
    let checks = watcher.join().expect("the watcher saw only whole files");
    let want: BTreeMap<String, String> = versions[1]
        .iter()
        .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
        .collect();
    assert_eq!(tree(&videos), want);
    assert!(kills >= 50, "only {kills} runs were killed mid-way");
    assert!(checks > 0);
    println!("{kills} kills, {checks} file reads by the watcher");
}

#[test]
fn a_clock_in_1970_or_2031_still_applies_a_valid_bundle() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    for (name, site, clock) in [
        ("box1970", "brest-basket", "1970-01-01T00:00:05Z"),
        ("box2031", "le-mans-basket", "2031-06-01T12:00:00Z"),
    ] {
        let cfg = w.agent_config(name, site, Some(&c.url), "");
        let out = Command::new(agent_bin())
            .args(["once", "--config"])
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CLOCK", clock)
            .env("TOUCHLINE_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(!tree(&w.path(name).join("videos")).is_empty(), "{name}");
    }
    // An expired bundle is refused whatever the clock, and the box keeps
    // what it has.
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let files: &[(&str, &[u8])] = &[("a.mp4", b"a")];
    let ok = tmp.path().join("ok");
    signer.write(&ok, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&ok, files);
    assert!(
        agent(&["apply-dir", ok.to_str().unwrap()], &cfg)
            .status
            .success()
    );
    let before = snapshot(tmp.path());
    let old = tmp.path().join("old");
    let mut b = sample_bundle("cesson-handball", 2, files, &[]);
    b.issued_at = "2025-01-01T00:00:00Z".parse().unwrap();
    b.expires_at = "2025-01-08T00:00:00Z".parse().unwrap();
    signer.write(&old, &b);
    for clock in ["1970-01-01T00:00:05Z", "2025-01-02T00:00:00Z"] {
        let out = Command::new(agent_bin())
            .args(["apply-dir"])
            .arg(&old)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CLOCK", clock)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("bundle expired at 2025-01-08T00:00:00Z"),
            "{}",
            stderr(&out)
        );
        assert_eq!(snapshot(tmp.path()), before);
    }
}

#[test]
fn not_enough_space_is_a_clear_condition_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A reserve larger than any disk: the free-space check must refuse.
    let (cfg, signer) = offline_box(tmp.path(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "space_reserve_bytes = 0",
        "space_reserve_bytes = 900000000000000000",
    );
    std::fs::write(&cfg, text).unwrap();
    let files: &[(&str, &[u8])] = &[("Sponsors/a.mp4", b"0123456789")];
    let dir = tmp.path().join("usb");
    signer.write(&dir, &sample_bundle("cesson-handball", 1, files, &[]));
    with_content(&dir, files);
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: need 900000.0 TB, have "),
        "{err}"
    );
    assert!(tree(&tmp.path().join("videos")).is_empty());
    assert!(
        tree(&tmp.path().join("state/cas")).is_empty(),
        "nothing downloaded"
    );
    let st = agent(&["status"], &cfg);
    assert!(String::from_utf8_lossy(&st.stdout).contains("[error] disk: not enough space"));
}

#[test]
fn offline_for_a_long_stretch_keeps_the_files_and_delivers_queued_reports_in_order() {
    let w = World::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let c = w.start(&listen);
    let cfg = w.agent_config(
        "box",
        "nantes-handball",
        Some(&c.url),
        "heartbeat_interval = \"1s\"\nmetrics_interval = \"1s\"",
    );
    assert!(agent(&["once"], &cfg).status.success());
    let videos = w.path("box/videos");
    let before = tree(&videos);
    assert!(!before.is_empty());
    let mut daemon = Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // The controller goes away for a long stretch (simulated: every
    // metrics interval is one report).
    drop(c);
    std::thread::sleep(Duration::from_secs(8));
    let out = agent(&["status", "--json"], &cfg);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["offline_since"].is_string(),
        "status says offline since T: {st}"
    );
    let queued = st["queued_reports"].as_u64().unwrap();
    assert!(queued >= 4, "reports queue up while offline: {st}");
    assert_eq!(tree(&videos), before, "the box keeps its files");
    // Back: the queue drains, in order, nothing twice.
    let c = w.start(&listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = agent(&["status", "--json"], &cfg);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if st["queued_reports"] == 0 && st["offline_since"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let admin = std::fs::read_to_string(w.path("data").join("local-admin.token")).unwrap();
    let hist: serde_json::Value = serde_json::from_slice(
        &http()
            .get(format!(
                "{}/api/sites/nantes-handball/history?from=2000-01-01T00:00:00Z",
                c.url
            ))
            .bearer_auth(admin.trim())
            .send()
            .unwrap()
            .bytes()
            .unwrap(),
    )
    .unwrap();
    let points = hist["points"].as_array().unwrap();
    let times: Vec<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(times, sorted, "history in order, no duplicates");
    assert!(
        points.len() as u64 > queued,
        "every queued metrics report arrived: {} points, {queued} were queued",
        points.len()
    );
}

#[test]
fn diagnose_says_ok_or_what_to_do() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let cfg = w.agent_config("box", "ivry-handball", Some(&c.url), "");
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    for check in [
        "OK   config",
        "OK   clock",
        "OK   dns",
        "OK   tcp",
        "OK   http",
        "OK   token: accepted",
        "OK   trusted key",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("token = ") {
                "token = \"wrong\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, bad).unwrap();
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL token: refused: mint one with `touchline site token"),
        "{text}"
    );
}

#[test]
fn a_file_already_on_the_box_with_the_right_content_is_adopted_not_fetched() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // Placed by hand before the agent (the old SSH way).
    let videos = tmp.path().join("videos/Sponsors");
    std::fs::create_dir_all(&videos).unwrap();
    std::fs::write(videos.join("old.mp4"), b"already here").unwrap();
    let ino = std::fs::metadata(videos.join("old.mp4")).unwrap().ino();
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"already here"),
        ("Sponsors/new.mp4", b"new"),
    ];
    let dir = tmp.path().join("usb");
    signer.write(&dir, &sample_bundle("cesson-handball", 1, files, &[]));
    // The stick carries only the new file: the old one needs no source.
    with_content(&dir, &files[1..]);
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(videos.join("old.mp4")).unwrap().ino(),
        ino,
        "not replaced"
    );
    assert_eq!(std::fs::read(videos.join("new.mp4")).unwrap(), b"new");
    // Adopted: the agent manages it now (a later bundle without it removes it).
    signer.write(&dir, &sample_bundle("cesson-handball", 2, &files[1..], &[]));
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!videos.join("old.mp4").exists());
    assert!(videos.join("new.mp4").exists());
}

#[test]
fn a_crash_right_after_any_placement_converges_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    let version = |v: u8| -> Vec<(String, Vec<u8>)> {
        (0..6u8)
            .map(|i| (format!("Sponsors/c{i}.mp4"), vec![v, i, v, i]))
            .collect()
    };
    let mut serial = 0u64;
    let mut write = |v: u8| -> (PathBuf, Vec<(String, Vec<u8>)>) {
        serial += 1;
        let files = version(v);
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        let dir = tmp.path().join(format!("s{serial}"));
        signer.write(&dir, &sample_bundle("cesson-handball", serial, &refs, &[]));
        with_content(&dir, &refs);
        (dir, files)
    };
    for n in 1..=6u64 {
        // A change is cut short (abort, like a power cut) right after its
        // n-th rename into place…
        // (The box holds version 2 after each round: version 1 is a change.)
        let (cut, _) = write(1);
        let out = Command::new(agent_bin())
            .args(["apply-dir"])
            .arg(&cut)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_TEST_CRASH_AT", format!("place:{n}"))
            .env("TOUCHLINE_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "crash point place:{n} reached");
        // …and the next bundle, with other content at the same paths,
        // must still converge after the restart.
        let (next, files) = write(2);
        let out = agent(&["apply-dir", next.to_str().unwrap()], &cfg);
        assert!(
            out.status.success(),
            "crash after place {n}: {}",
            stderr(&out)
        );
        let want: BTreeMap<String, String> = files
            .iter()
            .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
            .collect();
        assert_eq!(
            tree(&tmp.path().join("videos")),
            want,
            "crash after place {n}"
        );
    }
}

/// A tmpfs of `size` mounted on `dir` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts, or says why it cannot (not root, no mount permission).
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_path_buf()))
        } else {
            Err(stderr(&out))
        }
    }

    /// Writes a club file until the filesystem is full.
    fn fill(&self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        let block = vec![7u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A mirror that sends the first `first` bytes of its first answer, then
/// waits for `go` before sending the rest; later answers are whole.
fn gated_mirror(good: Vec<u8>, first: usize) -> (String, Arc<AtomicBool>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (reached, go) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (reached2, go2) = (reached.clone(), go.clone());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                req.push(b[0]);
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                good.len()
            );
            if n == 0 {
                let _ = s.write_all(&good[..first]);
                let _ = s.flush();
                reached2.store(true, Ordering::SeqCst);
                while !go2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = s.write_all(&good[first..]);
            } else {
                let _ = s.write_all(&good);
            }
        }
    });
    (url, reached, go)
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// Waits for `flag` (the mirror has sent its first part), up to 30 s.
fn wait_for(flag: &AtomicBool) {
    let t0 = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the agent never asked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the agent write what it received.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_disk_that_fills_up_mid_download_or_mid_copy_is_a_clear_condition_and_keeps_the_old_state() {
    let outside = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&outside.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs here ({})", why.trim());
            return;
        }
    };
    let root = disk.0.clone();
    let (cfg, signer) = offline_box(&root, "");
    let old: &[(&str, &[u8])] = &[("Sponsors/old.mp4", b"the sponsor reel")];
    let usb = outside.path().join("usb1");
    signer.write(&usb, &sample_bundle("cesson-handball", 1, old, &[]));
    with_content(&usb, old);
    let out = agent(&["apply-dir", usb.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    // The files the app reads (the new bundle itself is accepted: valid,
    // just not applicable yet).
    let mut before = snapshot(&root);
    before.remove("state/accepted.json");

    // 1. The club uploads a video while the agent downloads an 8 MB one:
    //    the disk fills up in the middle of the download.
    let big = pseudo_random(8 * 1024 * 1024, 1);
    let (mirror, reached, go) = gated_mirror(big.clone(), 3 * 1024 * 1024);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/big.mp4", &big),
    ];
    let usb2 = outside.path().join("usb2");
    signer.write(
        &usb2,
        &sample_bundle("cesson-handball", 2, files, &[format!("{mirror}/f")]),
    );
    let running = Command::new(agent_bin())
        .args(["apply-dir", usb2.to_str().unwrap(), "--config"])
        .arg(&cfg)
        .env("TOUCHLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&reached);
    let upload = root.join("videos/Club/upload.mp4");
    disk.fill(&upload);
    go.store(true, Ordering::SeqCst);
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: download of ")
            && err.contains("No space left on device")
            && err.contains("the partial file was removed"),
        "{err}"
    );
    let mut now = snapshot(&root);
    assert!(now.remove("Club/upload.mp4").is_some());
    now.remove("state/accepted.json");
    assert_eq!(now, before, "the old state is intact");
    assert!(
        tree(&root.join("state/cas/partial")).is_empty(),
        "the partial download is removed"
    );
    let st = agent(&["status"], &cfg);
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        st.contains("[error] disk: not enough space: download of"),
        "{st}"
    );
    // The club frees space: the next pass converges.
    std::fs::remove_file(&upload).unwrap();
    let out = agent(&["apply-dir", usb2.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(root.join("videos/Sponsors/big.mp4")).unwrap(),
        big
    );
    let st = agent(&["status"], &cfg);
    assert!(!String::from_utf8_lossy(&st.stdout).contains("disk:"));

    // 2. Videos on their own small filesystem (a USB disk): no hard links,
    //    so every placement is a copy, and its space is checked too.
    let vdisk = Tmpfs::mount(&outside.path().join("vdisk"), "8m").unwrap();
    let box2 = outside.path().join("box2");
    std::fs::create_dir_all(&box2).unwrap();
    let (cfg2, signer2) = offline_box(&box2, "");
    let text = std::fs::read_to_string(&cfg2).unwrap().replace(
        &format!("videos_dir = \"{}\"", box2.join("videos").display()),
        &format!("videos_dir = \"{}\"", vdisk.0.join("videos").display()),
    );
    std::fs::write(&cfg2, text).unwrap();
    let usb3 = outside.path().join("usb3");
    signer2.write(&usb3, &sample_bundle("cesson-handball", 1, old, &[]));
    with_content(&usb3, old);
    assert!(
        agent(&["apply-dir", usb3.to_str().unwrap()], &cfg2)
            .status
            .success()
    );
    let before = tree(&vdisk.0);
    // 2a. More than the videos filesystem holds: refused before anything.
    let huge = pseudo_random(9 * 1024 * 1024, 2);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/huge.mp4", &huge),
    ];
    let usb4 = outside.path().join("usb4");
    signer2.write(&usb4, &sample_bundle("cesson-handball", 2, files, &[]));
    with_content(&usb4, files);
    let out = agent(&["apply-dir", usb4.to_str().unwrap()], &cfg2);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: need 9.4 MB, have ")
            && err.contains("(copies into the videos directory, on the filesystem of "),
        "{err}"
    );
    assert!(
        !box2
            .join("state/cas/sha256")
            .join(Sha256::digest(&huge).to_hex())
            .exists(),
        "nothing downloaded"
    );
    assert_eq!(tree(&vdisk.0), before);
    // 2b. It fits when checked, then the club fills the disk while the
    //     agent downloads the second file: the copy fails half-way.
    let a = pseudo_random(3 * 1024 * 1024, 3);
    let b = pseudo_random(3 * 1024 * 1024, 4);
    let (mirror, reached, go) = gated_mirror(b.clone(), 1024 * 1024);
    let files: &[(&str, &[u8])] = &[
        ("Sponsors/old.mp4", b"the sponsor reel"),
        ("Sponsors/a.mp4", &a),
        ("Sponsors/b.mp4", &b),
    ];
    let usb5 = outside.path().join("usb5");
    let mut bundle = sample_bundle("cesson-handball", 3, files, &[format!("{mirror}/f")]);
    bundle.files.iter_mut().for_each(|f| {
        if f.sha256 != Sha256::digest(&b) {
            f.urls.clear();
        }
    });
    signer2.write(&usb5, &bundle);
    with_content(&usb5, &files[..2]);
    let running = Command::new(agent_bin())
        .args(["apply-dir", usb5.to_str().unwrap(), "--config"])
        .arg(&cfg2)
        .env("TOUCHLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&reached);
    // Leave 4 MB: room for a.mp4, not for b.mp4 after it.
    let upload = vdisk.0.join("videos/Club/upload.mp4");
    disk_fill_leaving(&upload, &vdisk.0, 4 * 1024 * 1024);
    go.store(true, Ordering::SeqCst);
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not enough space: copying to `")
            && err.contains(".b.mp4.touchline-tmp`: No space left on device"),
        "{err}"
    );
    let now = tree(&vdisk.0);
    assert!(
        now.keys().all(|k| !k.ends_with(".touchline-tmp")),
        "no temp file left: {now:?}"
    );
    assert_eq!(
        now.get("videos/Sponsors/old.mp4"),
        before.get("videos/Sponsors/old.mp4")
    );
    assert!(!now.contains_key("videos/Sponsors/b.mp4"));
    std::fs::remove_file(&upload).unwrap();
    let out = agent(&["apply-dir", usb5.to_str().unwrap()], &cfg2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(vdisk.0.join("videos/Sponsors/b.mp4")).unwrap(),
        b
    );
}

/// Writes a club file so that about `leave` bytes stay free on `fs`.
fn disk_fill_leaving(path: &Path, fs: &Path, leave: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = rustix::fs::statvfs(fs).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let n = free.saturating_sub(leave);
    std::fs::write(path, vec![9u8; n as usize]).unwrap();
}

/// A mirror of `files` (served at `/<sha256>`, with an ETag and `Range`
/// support) that sends 64 KB every `pause`: downloads take a while.
fn slow_mirror(files: Vec<Vec<u8>>, pause: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let files: Arc<BTreeMap<String, Vec<u8>>> = Arc::new(
        files
            .into_iter()
            .map(|b| (Sha256::digest(&b).to_hex(), b))
            .collect(),
    );
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let files = files.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    req.push(b[0]);
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/");
                let Some(body) = files.get(path.trim_start_matches('/')) else {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let from = text
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("range: bytes=")
                            .map(str::to_owned)
                    })
                    .and_then(|r| r.trim_end_matches('-').trim().parse::<usize>().ok())
                    .filter(|_| text.to_lowercase().contains("if-range: \"x\""))
                    .unwrap_or(0);
                let len = body.len();
                let head = if from > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\n",
                        len - 1
                    )
                } else {
                    "HTTP/1.1 200 OK\r\n".to_owned()
                };
                let _ = write!(
                    s,
                    "{head}ETag: \"x\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    len - from
                );
                for piece in body[from..].chunks(64 * 1024) {
                    if s.write_all(piece).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            });
        }
    });
    url
}

#[test]
fn kill_9_during_downloads_never_leaves_a_bad_file_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, signer) = offline_box(tmp.path(), "");
    // 6 files of 1 MB at 64 KB / 10 ms: a whole pass takes about a second.
    let files: Vec<(String, Vec<u8>)> = (0..6u32)
        .map(|i| {
            (
                format!("Sponsors/dl-{i}.mp4"),
                pseudo_random(1024 * 1024, 100 + i),
            )
        })
        .collect();
    let mirror = slow_mirror(
        files.iter().map(|f| f.1.clone()).collect(),
        Duration::from_millis(10),
    );
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let dir = tmp.path().join("usb");
    signer.write(
        &dir,
        &sample_bundle("cesson-handball", 1, &refs, std::slice::from_ref(&mirror)),
    );
    let cas = tmp.path().join("state/cas/sha256");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    for round in 0..30 {
        let mut child = Command::new(agent_bin())
            .args(["apply-dir"])
            .arg(&dir)
            .arg("--config")
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "off")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 600));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the moment: every file in the store is what its name
        // says, and the videos directory holds only whole, signed files.
        for (name, hash) in tree(&cas) {
            assert_eq!(name, hash, "round {round}: a store file is not its hash");
        }
        for (rel, hash) in tree(&tmp.path().join("videos")) {
            assert!(
                files
                    .iter()
                    .any(|(p, b)| *p == rel && Sha256::digest(b).to_hex() == hash),
                "round {round}: unexpected {rel}"
            );
        }
        // Start over now and then, so that kills land early in a pass too.
        if round % 3 == 2 {
            let _ = std::fs::remove_dir_all(tmp.path().join("state"));
            let _ = std::fs::remove_dir_all(tmp.path().join("videos"));
        }
    }
    let out = agent(&["apply-dir", dir.to_str().unwrap()], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let want: BTreeMap<String, String> = files
        .iter()
        .map(|(p, b)| (p.clone(), Sha256::digest(b).to_hex()))
        .collect();
    assert_eq!(tree(&tmp.path().join("videos")), want);
    assert!(tree(&tmp.path().join("state/cas/partial")).is_empty());
    assert!(kills >= 20, "only {kills} runs were killed mid-way");
    println!("{kills} kills during downloads");
}

/// Commits `files` (path, content) in `repo`.
fn commit_files(repo: &Path, files: &[(&str, String)], msg: &str) {
    for (rel, content) in files {
        let p = repo.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", msg]);
}

#[test]
fn a_release_pinned_in_git_is_installed_health_checked_rolled_back_and_reported() {
    if !fake_app::python_or_skip() {
        return;
    }
    let w = World::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Two releases: 9.0.0 healthy, 9.1.0 without /health. Their packages
    // go into the controller's content store like any content.
    let mut release_files = Vec::new();
    for (v, app) in [
        ("9.0.0", fake_app::App::Healthy),
        ("9.1.0", fake_app::App::NoHealth),
    ] {
        let pkg = fake_app::package(v, app);
        let file = w.path(&format!("{v}.tar.gz"));
        std::fs::write(&file, &pkg).unwrap();
        run(Command::new(controller_bin())
            .args(["content", "add", "--data"])
            .arg(w.path("data"))
            .arg(&file));
        release_files.push((
            format!("releases/{v}.yaml"),
            format!(
                "version: {v}\npackage:\n  sha256: {}\n  size: {}\n  format: tar.gz\nchangelog: test release {v}\nhealth_check:\n  http: http://127.0.0.1:{port}/health\n  timeout: 3s\n",
                Sha256::digest(&pkg).to_hex(),
                pkg.len()
            ),
        ));
    }
    let site_file = "sites/nantes-handball.yaml";
    let original = std::fs::read_to_string(w.repo().join(site_file)).unwrap();
    let pin = |v: &str| {
        format!("{original}  software:\n    version: {v}\n  agent:\n    maintenance_window: \"\"\n")
    };
    let mut files: Vec<(&str, String)> = release_files
        .iter()
        .map(|(p, c)| (p.as_str(), c.clone()))
        .collect();
    files.push((site_file, pin("9.0.0")));
    commit_files(&w.repo(), &files, "nantes on 9.0.0");
    let c = w.start("127.0.0.1:0");
    let root = w.path("box");
    std::fs::create_dir_all(&root).unwrap();
    fake_app::service_scripts(&root);
    let cfg = w.agent_config(
        "box",
        "nantes-handball",
        Some(&c.url),
        &fake_app::software_config(&root),
    );
    let once = || {
        Command::new(agent_bin())
            .args(["once", "--config"])
            .arg(&cfg)
            .env("TOUCHLINE_LOG", "warn")
            .env("APP_PORT", port.to_string())
            .output()
            .unwrap()
    };
    struct Cleanup(PathBuf, u16);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            fake_app::stop(&self.0, self.1);
        }
    }
    let _cleanup = Cleanup(root.clone(), port);
    let out = once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fake_app::serving(port).as_deref(), Some("9.0.0"));
    let admin = std::fs::read_to_string(w.path("data").join("local-admin.token")).unwrap();
    let api = |path: &str| -> serde_json::Value {
        http()
            .get(format!("{}{path}", c.url))
            .bearer_auth(admin.trim())
            .send()
            .unwrap()
            .bytes()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap()
    };
    let releases = api("/api/releases");
    let row = |rs: &serde_json::Value, v: &str| {
        rs["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .cloned()
            .unwrap_or_else(|| panic!("{v} not in {rs}"))
    };
    let r900 = row(&releases, "9.0.0");
    assert_eq!(
        r900["sites_running"],
        serde_json::json!(["nantes-handball"]),
        "{releases}"
    );
    assert_eq!(
        r900["sites_desired"],
        serde_json::json!(["nantes-handball"])
    );
    assert_eq!(r900["manifest"]["changelog"], "test release 9.0.0");
    assert_eq!(releases["latest"], "9.1.0");

    // The operators pin 9.1.0: its health check fails, the box rolls back
    // by itself and the controller shows it.
    commit_files(&w.repo(), &[(site_file, pin("9.1.0"))], "nantes on 9.1.0");
    w.sync(&c);
    let out = once();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rolled back from 9.1.0 to 9.0.0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fake_app::serving(port).as_deref(), Some("9.0.0"));
    let releases = api("/api/releases");
    let r910 = row(&releases, "9.1.0");
    assert_eq!(
        r910["sites_desired"],
        serde_json::json!(["nantes-handball"]),
        "{releases}"
    );
    assert_eq!(r910["running"], 0);
    assert_eq!(r910["rolled_back"][0]["site"], "nantes-handball");
    assert_eq!(r910["rolled_back"][0]["to"], "9.0.0");
    assert!(
        r910["rolled_back"][0]["output"]
            .as_str()
            .unwrap()
            .contains("HTTP 404"),
        "{r910}"
    );
    assert_eq!(r910["held_back"], serde_json::json!(["nantes-handball"]));
    assert_eq!(
        row(&releases, "9.0.0")["sites_running"],
        serde_json::json!(["nantes-handball"])
    );
    let site = api("/api/sites/nantes-handball");
    let events = site["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "rolled-back"
            && e["message"]
                .as_str()
                .unwrap()
                .starts_with("rolled back from 9.1.0 to 9.0.0: health check failed")),
        "{events:?}"
    );
    assert!(
        site["site"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c
                .as_str()
                .unwrap()
                .starts_with("release: rolled back from 9.1.0")),
        "{site}"
    );
    assert_eq!(site["site"]["software"]["current"], "9.0.0");
}

/// A tool the TLS test needs: outside CI a missing one skips the test with
/// the reason printed; in CI it fails it (`.ci/run` installs both).
fn tool_or_skip(name: &str, path: &str) -> Option<PathBuf> {
    let found = [PathBuf::from(path)]
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

/// A private CA and a certificate it issued for `localhost` (not for
/// 127.0.0.1), made with the openssl command line: (ca.pem, cert, key).
fn private_ca(openssl: &Path, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ossl = |args: &[&str]| {
        run(Command::new(openssl).args(args).current_dir(dir));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Touchline test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn a_controller_behind_tls_is_reached_with_its_private_ca_and_refused_without() {
    let (Some(nginx), Some(openssl)) = (
        tool_or_skip("nginx", "/usr/sbin/nginx"),
        tool_or_skip("openssl", "/usr/bin/openssl"),
    ) else {
        return;
    };
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let tls = w.path("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (ca, cert, key) = private_ca(&openssl, &tls);
    // nginx terminates TLS in front of the controller, as a club's
    // controller would run behind a reverse proxy; long-polls pass through.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = tls.display();
    std::fs::write(
        tls.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {t}/nginx.pid;\nerror_log {t}/nginx-error.log warn;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {t}/nb; proxy_temp_path {t}/np; fastcgi_temp_path {t}/nf; uwsgi_temp_path {t}/nu; scgi_temp_path {t}/ns;\n  client_body_buffer_size 1m;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{ proxy_pass {}; proxy_http_version 1.1; proxy_buffering off; proxy_read_timeout 300s; }}\n  }}\n}}\n",
            cert.display(),
            key.display(),
            c.url
        ),
    )
    .unwrap();
    let proxy = Controller {
        child: Command::new(&nginx)
            .arg("-c")
            .arg(tls.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        url: format!("https://localhost:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(tls.join("nginx-error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Without the CA: refused, with the reason; nothing applied.
    let cfg = w.agent_config("box", "brest-basket", Some(&proxy.url), "");
    let out = agent(&["once"], &cfg);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("box/app/configuration.json").exists());
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL tls + http") && text.contains("set ca_file to that CA's PEM"),
        "{text}"
    );

    // With ca_file: the bundle, its signature, the videos and the reports
    // all go over TLS; the box converges.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}ca_file = \"{}\"\n", ca.display())).unwrap();
    let out = agent(&["once"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("box/app/configuration.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["club"]["name"], "Union Sportive Brestoise Basket",
        "{config}"
    );
    assert!(!tree(&w.path("box/videos")).is_empty());
    let out = agent(&["diagnose"], &cfg);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK   tls + http"), "{text}");
    assert!(text.contains("OK   token: accepted"), "{text}");
    // The report reached the controller through the proxy.
    let site: serde_json::Value = http()
        .get(format!("{}/api/sites/brest-basket", c.url))
        .bearer_auth(
            std::fs::read_to_string(w.path("data").join("local-admin.token"))
                .unwrap()
                .trim(),
        )
        .send()
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(site["report"]["seq"].as_u64().is_some(), "{site}");

    // The certificate names localhost, not 127.0.0.1: refused even with
    // the CA.
    let box2 = w.path("box2");
    std::fs::create_dir_all(&box2).unwrap();
    let cfg2 = box2.join("agent.toml");
    std::fs::write(
        &cfg2,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&proxy.url, &format!("https://127.0.0.1:{port}"))
            .replace(
                &w.path("box").display().to_string(),
                &box2.display().to_string(),
            ),
    )
    .unwrap();
    let out = agent(&["once"], &cfg2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("box2/app/configuration.json").exists());
    drop(proxy);
}

//! A release pinned in git: installed, health-checked, rolled back and
//! reported, through the controller.

use super::*;

/// Writes `files` into the repository and commits them.
fn commit_all(repo: &Path, files: &[(&str, String)], msg: &str) {
    let r = touchline_testkit::Repo::at(repo);
    for (rel, content) in files {
        r.file(rel, content);
    }
    r.commit(msg);
}

/// Commits `files` (path, content) in `repo`.
#[test]
fn a_release_pinned_in_git_is_installed_health_checked_rolled_back_and_reported() {
    if !fake_app::python_or_skip() {
        return;
    }
    let w = World::new();
    let port = touchline_testkit::free_port();
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
        run(Command::new(bin("touchline"))
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
    commit_all(&w.repo(), &files, "nantes on 9.0.0");
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
        Command::new(bin("touchline-agent"))
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
    commit_all(&w.repo(), &[(site_file, pin("9.1.0"))], "nantes on 9.1.0");
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

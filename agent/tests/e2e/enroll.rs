//! Enrollment: a one-time code minted by `touchline site enroll` turns a
//! bare box into an enrolled one whose `once` converges; every bad code
//! is refused with its reason and writes nothing.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use touchline_schemas::enroll::{EnrollCode, SealKey};

use super::*;

/// `touchline site enroll` against `data` (through the running
/// controller): the code (stdout) and the instructions (stderr).
fn mint(data: &Path, site: &str, ttl: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(bin("touchline"));
    cmd.args(["site", "enroll", "--data"]).arg(data).arg(site);
    if let Some(t) = ttl {
        cmd.args(["--ttl", t]);
    }
    let out = run(&mut cmd);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr(&out),
    )
}

/// A NEOPRO box's site.conf (the sync agent's form) whose paths point
/// into `root`.
fn site_conf(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root.join("etc-neopro")).unwrap();
    let p = root.join("etc-neopro/site.conf");
    std::fs::write(
        &p,
        format!(
            "# Serveur central\nCENTRAL_SERVER_URL=https://neopro-central-server.onrender.com\nSITE_ID=angers-football\nSITE_API_KEY=cle-api-unique\nSITE_NAME=Angers — stade du Lac de Maine\nCLUB_NAME=Angers Lac de Maine FC\nVIDEOS_PATH={}\nCONFIG_PATH={}\nMAX_DOWNLOAD_SIZE=1073741824\nAUTO_UPDATE_HOUR=3\n",
            root.join("videos").display(),
            root.join("app/configuration.json").display()
        ),
    )
    .unwrap();
    p
}

fn enroll_cmd(url: &str, code: &str, root: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("touchline-agent"));
    cmd.args(["enroll", "--controller", url, code, "--config"])
        .arg(root.join("etc/agent.toml"))
        .arg("--set")
        .arg(format!("state_dir=\"{}\"", root.join("state").display()))
        .args(extra)
        .env("RUST_LOG", "debug");
    cmd
}

fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a box root holds under `etc/` (nothing, after a refusal).
fn etc_files(root: &Path) -> BTreeMap<String, String> {
    let etc = root.join("etc");
    if etc.exists() {
        tree(&etc)
    } else {
        BTreeMap::new()
    }
}

#[test]
fn a_box_enrolls_with_a_one_time_code_and_its_first_pass_converges() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let (code, how) = mint(&w.files.data(), "angers-football", None);
    assert!(EnrollCode::parse(&code).is_ok(), "{code}");
    assert!(
        how.contains(&format!(
            "curl -fsSL {}/install.sh | sudo sh -s -- {code}",
            c.url
        )),
        "{how}"
    );
    assert!(how.contains("single use, valid until"), "{how}");

    let root = w.path("box");
    let conf = site_conf(&root);
    let before = std::fs::read(&conf).unwrap();
    // The package's commented skeleton is there: it is no enrollment.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/agent.toml"),
        "# controller_url = \"https://touchline.example.org\"\n# site_id = \"x\"\n",
    )
    .unwrap();
    let out = output(&mut enroll_cmd(
        &c.url,
        &code.to_lowercase(),
        &root,
        &["--from-neopro", conf.to_str().unwrap()],
    ));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("enrolled as site angers-football"), "{said}");
    let bare = code.replace('-', "");
    assert!(
        !said.contains(&code) && !said.to_uppercase().contains(&bare),
        "the code is never printed: {said}"
    );

    let cfg = root.join("etc/agent.toml");
    let toml_text = std::fs::read_to_string(&cfg).unwrap();
    let written: toml::Table = toml::from_str(&toml_text).unwrap();
    assert_eq!(written["site_id"].as_str(), Some("angers-football"));
    assert_eq!(written["controller_url"].as_str(), Some(c.url.as_str()));
    assert_eq!(
        written["videos_dir"].as_str(),
        Some(root.join("videos").to_str().unwrap()),
        "VIDEOS_PATH carried over"
    );
    assert_eq!(
        written["max_download_bytes"].as_integer(),
        Some(1_073_741_824)
    );
    assert_eq!(
        written["services"].as_array().unwrap().len(),
        2,
        "the app's services: {toml_text}"
    );
    assert!(
        !toml_text.contains("cle-api-unique"),
        "the old API key stays behind"
    );
    let token_file = root.join("etc/token");
    assert_eq!(
        token_file.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        before,
        "site.conf left as it was"
    );
    // Neither the code nor its lookup id (what redeems it) is stored.
    let store = std::fs::read(w.files.data().join("status.redb")).unwrap();
    let lookup = EnrollCode::parse(&code).unwrap().lookup();
    for needle in [code.as_bytes(), bare.as_bytes(), lookup.as_str().as_bytes()] {
        assert!(
            !store.windows(needle.len()).any(|x| x == needle),
            "the code is in the store"
        );
    }

    // The app's services are not on this machine: nothing may query
    // systemctl here.
    let once = || {
        touchline_testkit::agent_box::command(&["once"], &cfg)
            .env("TOUCHLINE_SERVICES", "")
            .output()
            .unwrap()
    };
    let first = once();
    assert!(first.status.success(), "{}", stderr(&first));

    // --start asks systemd to enable and start the service (a stand-in
    // `systemctl` on PATH records the call: nothing touches this machine).
    let shim = w.path("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let calls = w.path("systemctl-calls");
    std::fs::write(
        shim.join("systemctl"),
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        shim.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code2, _) = mint(&w.files.data(), "angers-football", None);
    let started = w.path("box-started");
    let out = output(
        enroll_cmd(
            &c.url,
            &code2,
            &started,
            &["--start", "--set", "services=[]"],
        )
        .env(
            "PATH",
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap()),
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("started touchline-agent.service"));
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "enable --now touchline-agent.service\n"
    );
    // That enrollment gave the site a new token: the first box's is
    // refused now, as the docs say. Re-enroll it for the rest.
    let refused = once();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    let (code3, _) = mint(&w.files.data(), "angers-football", None);
    let out = output(&mut enroll_cmd(
        &c.url,
        &code3,
        &root,
        &["--force", "--from-neopro", conf.to_str().unwrap()],
    ));
    assert!(out.status.success(), "{}", text(&out));

    // The code works once: a second box gets nothing, and writes nothing.
    let other = w.path("box2");
    let again = output(&mut enroll_cmd(&c.url, &code, &other, &[]));
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("this enrollment code was already used"),
        "{}",
        text(&again)
    );
    assert!(etc_files(&other).is_empty());
    // The first box still works (its token was not replaced).
    assert!(once().status.success());
}

#[test]
fn bad_codes_are_refused_with_their_reason_and_nothing_is_written() {
    let w = World::new();
    let c = w.start("127.0.0.1:0");
    let root = w.path("box");
    let conf = site_conf(&root);
    let neopro = ["--from-neopro", conf.to_str().unwrap()];
    let refused_at = |url: &str, code: &str, status: i32, want: &str| {
        let out = output(&mut enroll_cmd(url, code, &root, &neopro));
        let said = text(&out);
        assert_eq!(out.status.code(), Some(status), "{code}: {said}");
        assert!(said.contains(want), "{code}: wanted `{want}` in: {said}");
        assert!(etc_files(&root).is_empty(), "{code}: nothing written");
    };
    let refused = |code: &str, status: i32, want: &str| refused_at(&c.url, code, status, want);
    // Mistyped: refused before the network.
    refused(
        "K7QF-2MXD-9RTA-PL4",
        2,
        "an enrollment code has 16 letters and digits",
    );
    refused(
        "K7QF-2MXD-9RTA-PU4C",
        2,
        "`U` (symbol 14) is not in an enrollment code",
    );
    // Well formed but never minted.
    refused(
        &EnrollCode::generate().unwrap().reveal(),
        1,
        "unknown enrollment code",
    );
    // Expired.
    let (short, _) = mint(&w.files.data(), "angers-football", Some("1s"));
    std::thread::sleep(Duration::from_millis(1500));
    refused(&short, 1, "this enrollment code expired at");
    // Minted by another controller.
    let elsewhere = ControllerFiles::example();
    let other = elsewhere.start();
    let (theirs, _) = mint(&elsewhere.data(), "angers-football", None);
    refused(&theirs, 1, "unknown enrollment code");
    drop(other);

    // A controller that answers with its own keys (it saw the lookup id,
    // not the code): the answer does not open.
    let (code, _) = mint(&w.files.data(), "angers-football", None);
    refused_at(
        &forging_server(),
        &code,
        1,
        "it does not come from the controller that minted the code",
    );

    // A config already there: refused before the code is spent.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/agent.toml"), "site_id = \"mine\"\n").unwrap();
    let out = output(&mut enroll_cmd(&c.url, &code, &root, &neopro));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("looks enrolled already; pass --force"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/agent.toml")).unwrap(),
        "site_id = \"mine\"\n"
    );
    // A site.conf that does not read: refused before the code is spent.
    std::fs::write(root.join("etc-neopro/bad.conf"), b"[site]\nid=x\n[wifi]\n").unwrap();
    let bad = root.join("etc-neopro/bad.conf");
    let out = output(&mut enroll_cmd(
        &c.url,
        &code,
        &w.path("box3"),
        &["--from-neopro", bad.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("bad.conf:line 3: unknown section `[wifi]`"),
        "{}",
        text(&out)
    );
    // Settings that make no config: refused before the code is spent.
    for (set, want) in [
        ("videos_dir=\"videos\"", "must be an absolute path"),
        ("typo=1", "unknown field `typo`"),
    ] {
        let out = output(&mut enroll_cmd(
            &c.url,
            &code,
            &w.path("box4"),
            &["--set", set],
        ));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(want) && text(&out).contains("the code is not spent"),
            "{set}: {}",
            text(&out)
        );
        assert!(etc_files(&w.path("box4")).is_empty(), "{set}");
    }
    // The code was never spent (the forger only saw its lookup id): it
    // still enrolls.
    let out = output(&mut enroll_cmd(
        &c.url,
        &code,
        &root,
        &["--force", "--from-neopro", conf.to_str().unwrap()],
    ));
    let said = text(&out);
    assert!(said.contains("enrolled as site angers-football"), "{said}");
}

/// A server that answers every request with an answer sealed by a key of
/// its own (what a wrong or intercepting controller can do): its URL.
fn forging_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let lookup = req
                .split("\"lookup\":\"")
                .nth(1)
                .and_then(|r| r.get(..64))
                .unwrap_or("0")
                .to_owned();
            let lookup: touchline_schemas::enroll::LookupId =
                serde_json::from_value(serde_json::Value::String(lookup))
                    .unwrap_or_else(|_| EnrollCode::generate().unwrap().lookup());
            let key: SealKey = EnrollCode::generate().unwrap().seal_key();
            let sealed = key
                .seal(
                    &lookup,
                    br#"{"site_id":"evil","token":"t","trusted_keys":""}"#,
                )
                .unwrap();
            let body = serde_json::to_vec(&sealed).unwrap();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    url
}

#[test]
fn three_neopro_boxes_migrate_from_their_site_conf_to_enrolled_converged_boxes() {
    let w = World::new();
    let neopro = touchline_testkit::data("neopro");
    let import = run(Command::new(bin("touchline"))
        .arg("import-neopro")
        .arg(&neopro)
        .arg("--out")
        .arg(w.repo()));
    assert!(stdout_of(&import).contains("wrote 3 sites"));
    let validate = Command::new(bin("touchline"))
        .arg("validate")
        .arg(w.repo())
        .output()
        .unwrap();
    assert!(validate.status.success(), "{}", text(&validate));
    w.files.repo().commit("import the NEOPRO sites");
    let c = w.start("127.0.0.1:0");
    for (conf, site) in [
        ("rennes.conf", "rennes-fc-b827eb3f9a12"),
        ("saint-etienne.conf", "etoile-sportive-de-saint-etienne"),
        ("chateaubriant.conf", "chateaubriant-basket"),
    ] {
        let (code, _) = mint(&w.files.data(), site, None);
        let root = w.path(site);
        let set = |k: &str, v: PathBuf| format!("{k}=\"{}\"", v.display());
        let out = output(&mut enroll_cmd(
            &c.url,
            &code,
            &root,
            &[
                "--from-neopro",
                neopro.join(conf).to_str().unwrap(),
                "--set",
                &set("videos_dir", root.join("videos")),
                "--set",
                &set("config_path", root.join("app/configuration.json")),
                "--set",
                &set("software_root", root.join("neopro")),
                // The app's services (carried from site.conf) are not on
                // this machine: nothing may run systemctl here.
                "--set",
                "services=[]",
            ],
        ));
        let said = text(&out);
        assert!(out.status.success(), "{site}: {said}");
        assert!(said.contains(&format!("enrolled as site {site}")), "{said}");
        let cfg = root.join("etc/agent.toml");
        let once = agent(&["once"], &cfg);
        assert!(once.status.success(), "{site}: {}", stderr(&once));
        let st = agent_status(&cfg);
        assert_eq!(st["site"], site, "{st}");
    }
}

fn stdout_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

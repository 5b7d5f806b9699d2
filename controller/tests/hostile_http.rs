//! Hostile clients against a real `touchline serve` on 127.0.0.1: slow
//! and idle connections are closed, a trickling body is refused, the
//! connection cap holds with a log line, the open-files limit is raised,
//! credentials in the repository URL never show, pages carry the security
//! headers, the language redirect stays on the site, and logins are
//! rate-limited per source.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use touchline_testkit::{ControllerFiles, Killed, http};

use common::server::{cookie_of, launch, value};

/// `touchline serve` with `extra` config, logging at `info` into a file;
/// its URL, the process and the log path.
fn serve_logged(files: &ControllerFiles, extra: &str, wrap: Option<&[&str]>) -> (String, Killed) {
    files.config(extra);
    serve_logged_with(files, files.serve_command("127.0.0.1:0"), wrap)
}

/// [`serve_logged`] of the command `serve` (the config already written).
/// `GET /healthz` without a token.
fn healthz(url: &str) -> reqwest::blocking::Response {
    http().get(format!("{url}/healthz")).send().unwrap()
}

fn serve_logged_with(
    files: &ControllerFiles,
    serve: Command,
    wrap: Option<&[&str]>,
) -> (String, Killed) {
    let log = std::fs::File::create(files.path("serve.log")).unwrap();
    let mut cmd = match wrap {
        Some(prefix) => {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..])
                .arg(serve.get_program())
                .args(serve.get_args());
            c
        }
        None => Command::new(serve.get_program()),
    };
    if wrap.is_none() {
        cmd.args(serve.get_args());
    }
    let mut child = Killed(
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let url = child.listening_url();
    (url, child)
}

fn log_of(files: &ControllerFiles) -> String {
    std::fs::read_to_string(files.path("serve.log")).unwrap()
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Seconds until the server closes `s` (reads until EOF or a reset).
fn closed_after(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed_and_a_trickling_body_is_refused() {
    let files = ControllerFiles::example();
    let (url, _c) = serve_logged(
        &files,
        "[http]\nheader_read_timeout = \"1s\"\nbody_timeout = \"1s\"",
        None,
    );
    // Half a request head, then nothing.
    let mut s = TcpStream::connect(addr(&url)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = closed_after(s, Duration::from_secs(10)).expect("a slow head is closed");
    assert!(t < Duration::from_secs(5), "{t:?}");
    // Nothing at all.
    let s = TcpStream::connect(addr(&url)).unwrap();
    let t = closed_after(s, Duration::from_secs(10)).expect("a silent connection is closed");
    assert!(t < Duration::from_secs(5), "{t:?}");
    // Idle after a kept-alive answer.
    let mut s = TcpStream::connect(addr(&url)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let t = closed_after(s, Duration::from_secs(10)).expect("an idle keep-alive is closed");
    assert!(t < Duration::from_secs(5), "{t:?}");
    // A report body that trickles in after a valid token: 408.
    let token = files.site_token("cesson-handball", false);
    let mut s = TcpStream::connect(addr(&url)).unwrap();
    s.write_all(
        format!(
            "POST /v1/sites/cesson-handball/reports HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"reports\": ["
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let started = Instant::now();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still answers.
    assert!(healthz(&url).status().is_success());
}

#[test]
fn the_connection_cap_holds_with_a_log_line_and_frees_up() {
    let files = ControllerFiles::example();
    let (url, _c) = serve_logged(
        &files,
        "[http]\nheader_read_timeout = \"30s\"\nmax_connections = 4",
        None,
    );
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr(&url)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(
        client.get(format!("{url}/healthz")).send().is_err(),
        "a fifth connection waits"
    );
    assert!(
        log_of(&files)
            .contains("connection limit reached: new connections wait in the listen backlog"),
        "{}",
        log_of(&files)
    );
    drop(held);
    let started = Instant::now();
    loop {
        if client
            .get(format!("{url}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "freed connections serve again"
        );
    }
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_and_logged() {
    let Some(prlimit) = touchline_testkit::require_tool("prlimit", "apt-get install util-linux")
    else {
        return;
    };
    let files = ControllerFiles::example();
    let p = prlimit.display().to_string();
    let (_url, _c) = serve_logged(&files, "", Some(&[&p, "--nofile=1024:4096"]));
    let log = log_of(&files);
    assert!(
        log.contains("open-files limit raised to the hard limit")
            && log.contains("before=1024")
            && log.contains("after=4096"),
        "{log}"
    );
}

#[test]
fn credentials_in_the_repository_url_never_show() {
    let files = ControllerFiles::example();
    files.config("");
    // A remote that cannot answer (port 9 on loopback is closed): the
    // first sync fails with the URL in its error chain.
    let secret = "s3cr3t-t0ken-value";
    let repo = format!("http://deploy:{secret}@127.0.0.1:9/fleet.git");
    let (url, _c) = serve_logged_with(&files, serve_from(&files, &repo), None);
    let health = healthz(&url).text().unwrap();
    assert!(health.contains("failed to fetch"), "{health}");
    assert!(
        health.contains("http://***@127.0.0.1:9/fleet.git"),
        "{health}"
    );
    let log = log_of(&files);
    for (what, text) in [("/healthz", &health), ("the log", &log)] {
        assert!(!text.contains(secret), "{what} shows the secret: {text}");
        assert!(!text.contains("deploy:"), "{what} shows the user: {text}");
    }
}

/// The `serve` command of `files`, following `repo` instead of the local
/// repository.
fn serve_from(files: &ControllerFiles, repo: &str) -> Command {
    let cmd = files.serve_command("127.0.0.1:0");
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut serve = Command::new(cmd.get_program());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        serve.arg(a);
        if a == "--repo" {
            it.next();
            serve.arg(repo);
        }
    }
    serve.env("RUST_LOG", "warn").stdout(Stdio::piped());
    serve
}

/// The manifests repository served over smart HTTP by `git http-backend`
/// behind Basic authentication (`tests/support/git_http.py`): its URL and
/// the server.
fn git_over_http(files: &ControllerFiles, user: &str, password: &str) -> Option<(String, Killed)> {
    touchline_testkit::tools::require_tool("python3", "apt-get install python3")?;
    let root = files.path("served");
    std::fs::create_dir_all(&root).unwrap();
    touchline_testkit::run(
        Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(files.repo_dir())
            .arg(root.join("fleet.git")),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/git_http.py");
    let mut child = Killed(
        Command::new("python3")
            .arg(script)
            .arg(&root)
            .args([user, password])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(files.path("git_http.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = child.listening_url();
    Some((format!("{base}/fleet.git"), child))
}

#[test]
fn the_manifests_repository_is_fetched_with_a_credentials_file_and_the_secret_never_shows() {
    let files = ControllerFiles::example();
    let secret = "d3pl0y-t0ken-in-a-file";
    let Some((repo, _git)) = git_over_http(&files, "deploy", secret) else {
        return;
    };
    let creds = files.path("repo.credentials");
    let write_creds = |text: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&creds, text).unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Refused at start, nothing served: a file others can read, a file
    // that is not one `user:secret` line, and credentials in two places.
    files.config("repo_credentials_file = \"repo.credentials\"");
    let refused = |serve: Command| {
        let mut serve = serve;
        let out = serve.stderr(Stdio::piped()).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains(secret), "{err}");
        err
    };
    write_creds(&format!("deploy:{secret}\n"), 0o644);
    let err = refused(serve_from(&files, &repo));
    assert!(
        err.contains("can be read by others (mode 0644): `chmod 600` it"),
        "{err}"
    );
    write_creds("just-a-token\n", 0o600);
    let err = refused(serve_from(&files, &repo));
    assert!(err.contains("must hold one line `user:password`"), "{err}");
    write_creds(&format!("deploy:{secret}\n"), 0o600);
    let with_user = repo.replace("http://", "http://deploy:x@");
    let err = refused(serve_from(&files, &with_user));
    assert!(err.contains("keep them in the file only"), "{err}");

    // A wrong password: the sync fails, saying why, and loops on nothing.
    write_creds("deploy:not-the-password\n", 0o600);
    let (url, c) = serve_logged_with(&files, serve_from(&files, &repo), None);
    let health = healthz(&url).text().unwrap();
    assert!(
        health.contains("refused the user and password of repo_credentials_file"),
        "{health}"
    );
    assert!(!health.contains("not-the-password"), "{health}");
    drop(c);

    // The right ones: the fleet is fetched and served.
    write_creds(&format!("deploy:{secret}\n"), 0o600);
    let (url, _c) = serve_logged_with(&files, serve_from(&files, &repo), None);
    let health: serde_json::Value = healthz(&url).json().unwrap();
    assert!(health["last_good_commit"].is_string(), "{health}");
    assert!(health["last_sync_error"].is_null(), "{health}");
    let log = log_of(&files);
    assert!(!log.contains(secret), "the log shows the secret: {log}");
    let served = std::fs::read_to_string(files.path("git_http.log")).unwrap();
    assert!(
        served.contains("refused"),
        "the server asked for credentials: {served}"
    );
}

#[test]
fn pages_carry_security_headers_and_the_language_redirect_stays_on_the_site() {
    let s = launch(ControllerFiles::example(), "");
    let r = s.http.get(format!("{}/login", s.url)).send().unwrap();
    let h = r.headers();
    assert_eq!(
        h["content-security-policy"],
        touchline_controller::http::CSP,
        "no inline script, never framed"
    );
    assert!(touchline_controller::http::CSP.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["x-frame-options"], "DENY");
    // What boxes call carries no page headers: on a club's line every
    // poll's bytes count (they were 290 of a 410-byte `304`).
    let r = s
        .http
        .get(format!("{}/v1/sites/angers-football/bundle", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("content-security-policy").is_none());
    assert!(r.headers().get("x-frame-options").is_none());
    let to = |back: &str| {
        let r = s
            .http
            .get(format!("{}/lang/en?back={back}", s.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        r.headers()["location"].to_str().unwrap().to_owned()
    };
    for hostile in [
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "%5C%5Cevil.example",
        "https://evil.example/",
        "/%0d%0aSet-Cookie:x=1",
        "/%20/evil.example",
        "evil.example",
    ] {
        assert_eq!(to(hostile), "/", "{hostile}");
    }
    assert_eq!(to("/sites%3Fq%3Dbrest"), "/sites?q=brest");
}

#[test]
fn failed_logins_are_rate_limited_per_source() {
    let s = launch(
        ControllerFiles::example(),
        "[http]\nlogin_failures_per_minute = 3",
    );
    let attempt = |token: &str| {
        let form = s.http.get(format!("{}/login", s.url)).send().unwrap();
        let pre = value(&cookie_of(&form, "tl_login").unwrap());
        s.http
            .post(format!("{}/login", s.url))
            .header("cookie", format!("tl_login={pre}"))
            .form(&[("token", token), ("csrf", pre.as_str())])
            .send()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(attempt("wrong").headers()["location"], "/login?failed=1");
    }
    let r = attempt("wrong");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // Even the right token waits: guessing cannot go on at network speed.
    let r = attempt(touchline_testkit::VIEWER);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.text()
            .unwrap()
            .contains("too many failed logins from this address"),
    );
}

/// `POST /v1/enroll` takes no token: its body is bounded, bad bodies are
/// refused with their reason, and the refusals never log a code (the
/// controller never sees one: only lookup ids).
#[test]
fn the_enrollment_endpoint_bounds_and_checks_what_it_reads() {
    let files = ControllerFiles::example();
    let (url, _c) = serve_logged(&files, "", None);
    let post = |body: Vec<u8>| {
        http()
            .post(format!("{url}/v1/enroll"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    let big = format!("{{\"lookup\": \"{}\"}}", "a".repeat(4096)).into_bytes();
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (big, StatusCode::PAYLOAD_TOO_LARGE, "at most 1024 bytes"),
        (
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid enrollment request",
        ),
        (
            b"{\"lookup\": \"K7QF-2MXD-9RTA-PL4C\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "64 lower-case hex digits",
        ),
        (
            format!("{{\"lookup\": \"{}\", \"extra\": 1}}", "a".repeat(64)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            format!("{{\"lookup\": \"{}\"}}", "a".repeat(64)).into_bytes(),
            StatusCode::NOT_FOUND,
            "unknown enrollment code",
        ),
    ];
    for (body, status, want) in cases {
        let r = post(body);
        assert_eq!(r.status(), status, "{want}");
        let text = r.text().unwrap();
        assert!(text.contains(want), "{want}: {text}");
    }
    let log = log_of(&files);
    assert!(!log.contains("K7QF"), "{log}");
}

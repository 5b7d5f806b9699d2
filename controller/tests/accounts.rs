//! Named operator accounts: `touchline user add|passwd|remove|list` with
//! and without a running controller, logins by name and password (argon2id)
//! and a TOTP code for an account that has one, the per-account lock after
//! five failures, and the audit trail of each.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;
use touchline_testkit::{ControllerFiles, OPERATOR, bin};

use common::server::{cookie_of, csrf_in, value};

fn user(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("touchline"))
        .arg("user")
        .args(args)
        .arg("--data")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    c.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Logs in with a form; the redirect's location and the session cookie.
fn login(
    url: &str,
    http: &reqwest::blocking::Client,
    form: &[(&str, &str)],
) -> (String, Option<String>) {
    let page = http.get(format!("{url}/login")).send().unwrap();
    let pre = value(&cookie_of(&page, "tl_login").unwrap());
    let csrf = csrf_in(&page.text().unwrap());
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("csrf", &csrf));
    let r = http
        .post(format!("{url}/login"))
        .header("cookie", format!("tl_login={pre}"))
        .form(&fields)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    (location, cookie_of(&r, "tl_session").map(|c| value(&c)))
}

#[test]
fn accounts_log_in_with_a_password_and_totp_lock_after_failures_and_are_audited() {
    let files = ControllerFiles::example();
    // The per-address limit is another test's; here the per-account one.
    files.config("[http]\nlogin_failures_per_minute = 100");
    let c = files.start();
    let data = files.data();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Through the running controller.
    let o = user(
        &data,
        &["add", "marie", "--role", "operator", "--password-stdin"],
        Some("le mot de passe de Marie\n"),
    );
    assert!(o.status.success(), "{}", out(&o));
    let o = user(
        &data,
        &["add", "marie", "--role", "viewer", "--password-stdin"],
        Some("another long one\n"),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("account `marie` exists"), "{}", out(&o));
    let o = user(
        &data,
        &["add", "paul", "--role", "viewer", "--password-stdin"],
        Some("short\n"),
    );
    assert!(out(&o).contains("at least 12 characters"), "{}", out(&o));
    let o = user(&data, &["add", "Bad Name", "--role", "viewer"], None);
    assert!(out(&o).contains("account name `Bad Name`"), "{}", out(&o));
    // A random password when none is given, printed once.
    let o = user(&data, &["add", "alice", "--role", "admin", "--totp"], None);
    assert!(o.status.success(), "{}", out(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |k: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (alice_pw, secret) = (field("password:"), field("totp secret:"));
    assert!(field("totp uri:").starts_with("otpauth://totp/Touchline:alice?secret="));
    let o = user(&data, &["list"], None);
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        list.contains("alice\tadmin\ttotp\t-") && list.contains("marie\toperator\t-\t-"),
        "{list}"
    );
    // The hash, never the password, is in the store's answer.
    let api: serde_json::Value = http
        .get(format!("{}/api/users", c.url))
        .bearer_auth(files.local_admin_token())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(!api.to_string().contains("argon2") && !api.to_string().contains(&secret));
    let r = http
        .get(format!("{}/api/users", c.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap();
    assert!(r.status() == StatusCode::FORBIDDEN || r.status() == StatusCode::UNAUTHORIZED);

    // Marie logs in with her password.
    let (to, session) = login(
        &c.url,
        &http,
        &[("name", "marie"), ("password", "le mot de passe de Marie")],
    );
    assert_eq!(to, "/");
    let page = http
        .get(format!("{}/sites", c.url))
        .header("cookie", format!("tl_session={}", session.unwrap()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("marie"), "the page names who is logged in");
    // Five wrong passwords lock the account, and a right one then waits.
    for i in 0..4 {
        let (to, s) = login(
            &c.url,
            &http,
            &[("name", "marie"), ("password", "wrong password")],
        );
        assert_eq!(to, "/login?failed=1", "attempt {i}");
        assert!(s.is_none());
    }
    let (to, _) = login(
        &c.url,
        &http,
        &[("name", "marie"), ("password", "wrong password")],
    );
    assert!(to.starts_with("/login?locked="), "{to}");
    let (to, _) = login(
        &c.url,
        &http,
        &[("name", "marie"), ("password", "le mot de passe de Marie")],
    );
    assert!(to.starts_with("/login?locked="), "{to}");
    let page = http
        .get(format!("{}{to}", c.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("id=\"login-locked\""), "{page}");
    let o = user(&data, &["list"], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("marie\toperator\t-\tlocked until"));
    // A new password unlocks it.
    let o = user(
        &data,
        &["passwd", "marie", "--password-stdin"],
        Some("un tout nouveau mot de passe\n"),
    );
    assert!(o.status.success(), "{}", out(&o));
    let (to, _) = login(
        &c.url,
        &http,
        &[
            ("name", "marie"),
            ("password", "un tout nouveau mot de passe"),
        ],
    );
    assert_eq!(to, "/");

    // Alice needs her code; a code works once.
    let (to, _) = login(&c.url, &http, &[("name", "alice"), ("password", &alice_pw)]);
    assert_eq!(to, "/login?failed=1");
    let now = jiff::Timestamp::now().as_second() as u64;
    let code = touchline_controller::users::totp_code(&secret, now).unwrap();
    let (to, s) = login(
        &c.url,
        &http,
        &[("name", "alice"), ("password", &alice_pw), ("code", &code)],
    );
    assert_eq!(to, "/");
    assert!(s.is_some());
    let (to, _) = login(
        &c.url,
        &http,
        &[("name", "alice"), ("password", &alice_pw), ("code", &code)],
    );
    assert_eq!(to, "/login?failed=1", "the same code twice");

    // The audit log: each login, each change, from where.
    let audit: serde_json::Value = http
        .get(format!("{}/api/audit?action=login&actor=marie", c.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let results: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|r| **r == "ok").count(), 2, "{audit}");
    assert!(
        results.contains(&"refused: wrong password or code; account locked"),
        "{audit}"
    );
    assert!(results.contains(&"refused: locked"), "{audit}");
    assert!(
        audit["entries"][0]["source"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1")
    );
    let changes: serde_json::Value = http
        .get(format!("{}/api/audit?action=user", c.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        changes["count"], 3,
        "add marie, add alice, passwd marie: {changes}"
    );
    assert_eq!(changes["entries"][0]["actor"], "local-admin");

    // Without a controller: the store directly.
    drop(c);
    let o = user(&data, &["remove", "marie"], None);
    assert!(o.status.success(), "{}", out(&o));
    let o = user(&data, &["remove", "marie"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("no account `marie`"));
    let o = user(&data, &["list"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    let c = files.start();
    let (to, _) = login(
        &c.url,
        &http,
        &[
            ("name", "marie"),
            ("password", "un tout nouveau mot de passe"),
        ],
    );
    assert_eq!(to, "/login?failed=1", "a removed account");
}

/// The accounts page: admins only; an account added there gets a random
/// password shown once (never cached) that logs in; a new password and a
/// removal from the same page, audited with the admin's name.
#[test]
fn an_admin_manages_accounts_from_the_accounts_page() {
    let s = common::server::start();
    let (op, ocsrf) = s.login(OPERATOR);
    let page = s.get("/", &op, "en").text().unwrap();
    assert!(
        !page.contains("id=\"nav-users\""),
        "no menu entry for an operator"
    );
    assert_eq!(s.get("/users", &op, "en").status(), StatusCode::FORBIDDEN);
    let post = |cookies: &str, path: &str, form: &[(&str, &str)]| {
        s.http
            .post(format!("{}{path}", s.url))
            .header("cookie", cookies)
            .form(form)
            .send()
            .unwrap()
    };
    let r = post(
        &op,
        "/users",
        &[("csrf", &ocsrf), ("name", "x"), ("role", "viewer")],
    );
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let admin = s.files.local_admin_token();
    let (ad, csrf) = s.login(&admin);
    let page = s.get("/users", &ad, "en").text().unwrap();
    assert!(page.contains("id=\"add-user\""), "{page}");
    let r = post(
        &ad,
        "/users",
        &[
            ("csrf", &csrf),
            ("name", "lucie"),
            ("role", "operator"),
            ("totp", "1"),
        ],
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().unwrap();
    let between = |a: &str| {
        html.split(a)
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap()
            .to_owned()
    };
    let (password, secret) = (
        between("<code id=\"new-password\">"),
        between("<code id=\"totp-secret\">"),
    );
    assert_eq!(password.len(), 20);
    let now = jiff::Timestamp::now().as_second() as u64;
    let code = touchline_controller::users::totp_code(&secret, now).unwrap();
    let (to, _) = login(
        &s.url,
        &s.http,
        &[("name", "lucie"), ("password", &password), ("code", &code)],
    );
    assert_eq!(to, "/");
    let page = s.get("/users", &ad, "en").text().unwrap();
    assert!(
        page.contains("data-user=\"lucie\"") && page.contains("TOTP"),
        "{page}"
    );
    // A bad name is refused with the reason.
    let r = post(
        &ad,
        "/users",
        &[("csrf", &csrf), ("name", "Lucie 2"), ("role", "viewer")],
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().unwrap().contains("account name `Lucie 2`"));
    // A new password: the old one no longer works.
    let r = post(&ad, "/users/lucie/password", &[("csrf", &csrf)]);
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().unwrap();
    let fresh = html
        .split("<code id=\"new-password\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_owned();
    assert_ne!(fresh, password);
    let (to, _) = login(
        &s.url,
        &s.http,
        &[("name", "lucie"), ("password", &password), ("code", &code)],
    );
    assert_eq!(to, "/login?failed=1");
    // Removed.
    let r = post(&ad, "/users/lucie/remove", &[("csrf", &csrf)]);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        !s.get("/users", &ad, "en")
            .text()
            .unwrap()
            .contains("data-user=\"lucie\"")
    );
    let audit: serde_json::Value = s
        .http
        .get(format!("{}/api/audit?action=user&actor=local-admin", s.url))
        .bearer_auth(OPERATOR)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(audit["count"], 3, "add, passwd, remove: {audit}");
}

//! Alerts end to end: the real controller, reports over real HTTP, and a
//! real webhook receiver (an HTTP server in this test) that is down at
//! first. Thresholds and timing come from the example fleet's
//! `fleet.yaml`, shortened (hold 1 s, offline after 3 s).
#![allow(clippy::unwrap_used)]

mod common;

use common::server::{Server, launch};
use common::webhook::receiver;
use touchline_testkit::free_port;
use touchline_testkit::{ControllerFiles, Killed, VIEWER};

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn wait_until<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A controller on the example fleet (hold 1 s, offline after 3 s) with
/// `extra` in its config; returns it and a site token for cesson-handball.
fn start(extra: &str) -> (Server, String) {
    let files = ControllerFiles::with_repo(|repo| {
        touchline_testkit::example_fleet(repo);
        let fleet = std::fs::read_to_string(repo.join("fleet.yaml")).unwrap();
        let fleet = fleet
            .replace("hold: 2m", "hold: 1s")
            .replace("offline_after: 5m", "offline_after: 3s");
        std::fs::write(repo.join("fleet.yaml"), fleet).unwrap();
    });
    let site_token = files.site_token("cesson-handball", false);
    let server = launch(files, &format!("alerts_interval = \"1s\"\n{extra}"));
    (server, site_token)
}

/// A box that reports every 300 ms with the temperature the test sets
/// (None: silent).
fn reporting_box(url: &str, token: &str, first: Option<f64>) -> Arc<Mutex<Option<f64>>> {
    let temp: Arc<Mutex<Option<f64>>> = Arc::new(Mutex::new(first));
    let (t2, url, token) = (temp.clone(), url.to_owned(), token.to_owned());
    let http = reqwest::blocking::Client::new();
    std::thread::spawn(move || {
        for seq in 1u64.. {
            let t = *t2.lock().unwrap();
            if let Some(t) = t {
                let body = json!({"format": 1, "site": "cesson-handball", "reports": [{
                    "seq": seq, "at": jiff::Timestamp::now(),
                    "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1},
                    "metrics": {"temperature_c": t, "disk_used_bytes": 8_000_000_000u64, "disk_total_bytes": 32_000_000_000u64}}]});
                let _ = http
                    .post(format!("{url}/v1/sites/cesson-handball/reports"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    temp
}

#[test]
fn alerts_fire_notify_through_a_retrying_outbox_respect_the_cooldown_and_resolve() {
    // The webhook receiver's port, with nothing listening yet.
    let port = free_port();
    let (server, site_token) = start(&format!("webhooks = [\"http://127.0.0.1:{port}/hook\"]"));
    let url = server.url.clone();
    let http = reqwest::blocking::Client::new();

    // The box reports every 300 ms; the test sets its temperature (None:
    // the box goes silent).
    let temp = reporting_box(&url, &site_token, Some(82.0));
    let alerts = || -> Value {
        http.get(format!("{url}/api/alerts"))
            .bearer_auth(VIEWER)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let find = |v: &Value, rule: &str| -> Option<Value> {
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["site"] == "cesson-handball" && a["rule"] == rule)
            .cloned()
    };

    // 82 °C held for the hold time: firing, critical, queued in the outbox
    // while the receiver is down.
    let a = wait_until("the temperature alert to fire", 20, || {
        let v = alerts();
        find(&v, "temperature")
            .filter(|a| a["state"] == "firing")
            .map(|a| (a, v))
    });
    assert_eq!(a.0["level"], "critical");
    assert_eq!(a.0["message"], "température 82,0 °C");
    wait_until("a failed delivery kept in the outbox", 10, || {
        (alerts()["outbox"].as_u64() == Some(1)).then_some(())
    });
    // Nothing else fires: the other sites never reported (not offline).
    assert_eq!(alerts()["firing"], 1);

    // The receiver comes up: the outbox retries and delivers once.
    let got = receiver(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let first = wait_until("the webhook", 30, || got.lock().unwrap().first().cloned());
    assert_eq!(
        first["text"],
        "[Touchline CRITICAL] Cesson — Glaz Arena — température 82,0 °C"
    );
    assert_eq!(first["alert"]["rule"], "temperature");
    assert_eq!(first["alert"]["state"], "firing");
    assert_eq!(first["alert"]["value"], "82,0 °C");
    wait_until("the outbox to empty", 10, || {
        (alerts()["outbox"].as_u64() == Some(0)).then_some(())
    });

    // Back to normal for longer than the hold: resolved, and told.
    *temp.lock().unwrap() = Some(60.0);
    let resolved = wait_until("the resolved notification", 20, || {
        got.lock().unwrap().get(1).cloned()
    });
    assert_eq!(resolved["alert"]["state"], "resolved");
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .starts_with("[Touchline RÉSOLU] ")
    );
    assert_eq!(find(&alerts(), "temperature").unwrap()["state"], "resolved");

    // Hot again within the cooldown: it fires, nobody is told twice.
    *temp.lock().unwrap() = Some(83.0);
    wait_until("the alert to fire again", 20, || {
        find(&alerts(), "temperature").filter(|a| a["state"] == "firing")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "cooldown: no second firing notice"
    );

    // The box goes silent: offline after 3 s, critical, notified.
    *temp.lock().unwrap() = None;
    let offline = wait_until("the offline notification", 30, || {
        got.lock()
            .unwrap()
            .iter()
            .find(|v| v["alert"]["rule"] == "offline")
            .cloned()
    });
    assert_eq!(offline["alert"]["level"], "critical");
    assert!(
        offline["text"]
            .as_str()
            .unwrap()
            .contains("— hors ligne depuis "),
        "{offline}"
    );
    // While offline, its stale metrics neither fire nor resolve anything:
    // the temperature alert stays as it was.
    std::thread::sleep(Duration::from_secs(2));
    let v = alerts();
    assert_eq!(v["firing"], 2, "{v}");
    assert_eq!(find(&v, "temperature").unwrap()["state"], "firing");
    // It reports again: offline resolves.
    *temp.lock().unwrap() = Some(50.0);
    wait_until("offline to resolve", 20, || {
        got.lock()
            .unwrap()
            .iter()
            .find(|v| v["alert"]["rule"] == "offline" && v["alert"]["state"] == "resolved")
            .cloned()
    });
}

#[test]
fn an_alert_email_and_the_digest_reach_a_real_smtp_server_with_both_parts() {
    let py = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !py {
        assert!(
            !touchline_testkit::in_ci(),
            "aiosmtpd (pip install aiosmtpd) is required in CI"
        );
        println!("SKIPPED: python3 with aiosmtpd is not installed (pip install aiosmtpd)");
        return;
    }
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let smtp = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir.path().join("box"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _smtp = Killed(smtp);
    wait_until("the SMTP server", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let (server, token) = start(&format!(
        "digest_at = \"00:00\"\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\nfrom = \"Touchline <alerts@example.org>\"\nto = [\"ops@example.org\", \"Astreinte <oncall@example.org>\"]\n"
    ));
    let _box = reporting_box(&server.url, &token, Some(82.0));
    // Python's email package reads each message back: decoded subject,
    // recipients, and each part's type and text.
    let read = |file: &std::path::Path| -> Value {
        let out = Command::new("python3")
            .args([
                "-c",
                "import email, email.header, json, sys\nm = email.message_from_binary_file(open(sys.argv[1], 'rb'))\nparts = [(p.get_content_type(), p.get_payload(decode=True).decode(p.get_content_charset() or 'utf-8')) for p in m.walk() if not p.is_multipart()]\nprint(json.dumps({'subject': str(email.header.make_header(email.header.decode_header(m['Subject']))), 'to': m['To'], 'from': m['From'], 'type': m.get_content_type(), 'parts': parts}))",
            ])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Two messages: the alert, and the daily digest (due at once: 00:00).
    let new = maildir.path().join("box/new");
    let mails = wait_until("the alert and the digest", 30, || {
        let mails: Vec<Value> = std::fs::read_dir(&new)
            .ok()?
            .flatten()
            .map(|e| read(&e.path()))
            .collect();
        (mails.len() >= 2).then_some(mails)
    });
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let digest = mails
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("[Touchline] Résumé du ")
        })
        .unwrap_or_else(|| panic!("{mails:#?}"));
    assert!(
        digest["subject"]
            .as_str()
            .unwrap()
            .contains("— NEOPRO — clubs partenaires : "),
        "{digest}"
    );
    assert_eq!(
        digest["to"],
        "ops@example.org, Astreinte <oncall@example.org>"
    );
    assert_eq!(digest["parts"][0][0], "text/plain");
    assert!(
        digest["parts"][0][1]
            .as_str()
            .unwrap()
            .contains("12 sites : "),
        "{digest}"
    );
    assert_eq!(digest["parts"][1][0], "text/html");
    assert!(
        digest["parts"][1][1]
            .as_str()
            .unwrap()
            .contains("<h2>[Touchline] Résumé du "),
        "{digest}"
    );
    let v = mails
        .iter()
        .find(|m| {
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("[Touchline CRITICAL]")
        })
        .unwrap_or_else(|| panic!("{mails:#?}"))
        .clone();
    assert_eq!(
        v["subject"],
        "[Touchline CRITICAL] Cesson — Glaz Arena — température 82,0 °C"
    );
    assert_eq!(v["to"], "ops@example.org, Astreinte <oncall@example.org>");
    assert_eq!(v["from"], "Touchline <alerts@example.org>");
    assert_eq!(v["type"], "multipart/alternative");
    assert_eq!(v["parts"][0][0], "text/plain");
    assert_eq!(v["parts"][1][0], "text/html");
    let text = v["parts"][0][1].as_str().unwrap();
    assert!(
        text.contains("Valeur : 82,0 °C") && text.contains("Niveau : critique"),
        "{text}"
    );
    // Times in the fleet's time zone (Europe/Paris: CET or CEST).
    let since = text
        .lines()
        .find_map(|l| l.strip_prefix("Depuis : "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        since.ends_with(" CET") || since.ends_with(" CEST"),
        "{since}"
    );
    let html = v["parts"][1][1].as_str().unwrap();
    assert!(
        html.contains("<th align=\"left\">Valeur</th><td>82,0 °C</td>"),
        "{html}"
    );
}

//! Every page in both languages: the example fleet (whose `language` is
//! French, the language of its notifications) with alerts firing of every
//! kind a report can raise, phase, release and rollback events, and one
//! site gone silent. Each page is read in English and in French; once the
//! fleet's own data (names, clubs, cities, descriptions, video titles…) is
//! taken out of the text, the English page holds no French word and the
//! French page no English one, and no page shows a missing key (`??`) or
//! a table header with nothing to announce (axe rates that one minor, so
//! the browser test's critical/serious gate would let it through).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use touchline_testkit::OPERATOR;

use common::server::launch;

/// Words only French text of ours has (accents, and unaccented phrases).
const FRENCH: &[&str] = &[
    "é",
    "è",
    "ê",
    "à",
    "ç",
    "ù",
    "â",
    "î",
    "ô",
    "û",
    "œ",
    "hors ligne",
    "il y a",
    "depuis",
    "en ligne",
    "aucun",
    "alerte",
    "jamais",
    "disque",
    "version en retard",
    "sous-tension",
    " jours",
    "Numéro",
    "retour de",
];

/// Words only English text of ours has.
const ENGLISH: &[&str] = &[
    " ago",
    "Last seen",
    "firing",
    "apply failed",
    "applied serial",
    "applied release",
    "offline for",
    "Overdue",
    "last known",
    "Recent events",
    "rolled back from",
    "temperature ",
    "memory ",
    "Health",
    "never",
    "Log out",
    " online ",
    " degraded ",
    " overdue ",
];

/// The visible text of a page and the attributes a reader hears (`title`,
/// `aria-label`, `alt`, `placeholder`), entities decoded.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    // Drop <script> and <style> bodies.
    let mut clean = String::new();
    while let Some(i) = rest.find("<style").or_else(|| rest.find("<script")) {
        let j = rest.find("<script").map_or(i, |s| s.min(i));
        clean.push_str(&rest[..j]);
        let close = if rest[j..].starts_with("<style") {
            "</style>"
        } else {
            "</script>"
        };
        rest = rest[j..]
            .find(close)
            .map_or("", |k| &rest[j + k + close.len()..]);
    }
    clean.push_str(rest);
    let mut in_tag = false;
    let mut tag = String::new();
    for ch in clean.chars() {
        match (in_tag, ch) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                for attr in ["title=\"", "aria-label=\"", "alt=\"", "placeholder=\""] {
                    if let Some(i) = tag.find(attr) {
                        let v = &tag[i + attr.len()..];
                        out.push(' ');
                        out.push_str(&v[..v.find('"').unwrap_or(v.len())]);
                        out.push(' ');
                    }
                }
                out.push(' ');
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// Every scalar the manifests hold (the fleet's data, in whatever language
/// its authors wrote it), longest first.
fn data_strings(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![repo.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with(".git") {
                    dirs.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "yaml") {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    let line = line.split(" #").next().unwrap().trim();
                    let v = line
                        .split_once(": ")
                        .map_or_else(|| line.trim_start_matches("- "), |(_, v)| v);
                    let v = v.trim().trim_matches('"').trim_matches('\'');
                    if v.chars().count() >= 3 {
                        out.push(v.to_owned());
                    }
                }
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// The opening tags of the table headers with no text and no
/// `aria-label` (a screen reader announces nothing for their column).
fn empty_headers(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<th") {
        rest = &rest[i + 3..];
        if !(rest.starts_with('>') || rest.starts_with(' ')) {
            continue; // <thead>
        }
        let Some(open_end) = rest.find('>') else {
            break;
        };
        let Some(close) = rest.find("</th>") else {
            break;
        };
        let open = &rest[..open_end];
        let inner = text_of(&rest[open_end + 1..close.max(open_end + 1)]);
        if inner.trim().is_empty() && !open.contains("aria-label") {
            out.push(format!("<th{open}>"));
        }
        rest = &rest[close..];
    }
    out
}

fn post(s: &common::server::Server, site: &str, reports: Vec<Value>) {
    let token = s.files.site_token(site, false);
    let r = s
        .http
        .post(format!("{}/v1/sites/{site}/reports", s.url))
        .bearer_auth(&token)
        .json(&json!({"format": 1, "site": site, "reports": reports}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
}

#[test]
fn every_page_speaks_only_its_readers_language() {
    let files = touchline_testkit::ControllerFiles::with_repo(|repo| {
        touchline_testkit::example_fleet(repo);
        let fleet = std::fs::read_to_string(repo.join("fleet.yaml")).unwrap();
        let fleet = fleet
            .replace("hold: 2m", "hold: 1s")
            .replace("offline_after: 5m", "offline_after: 3s");
        std::fs::write(repo.join("fleet.yaml"), fleet).unwrap();
    });
    let repo = files.repo_dir();
    let s = launch(files, "alerts_interval = \"1s\"");
    let admin = s.files.local_admin_token();
    s.files.repo();
    let now = jiff::Timestamp::now();
    // massy-rugby: hot, full, short of memory, a service down, under-
    // voltage, a read-only root, a failed pass, a rolled-back release.
    let status = |seq: u64, phase: &str| {
        json!({"seq": seq, "at": now + jiff::SignedDuration::from_secs(i64::try_from(seq).unwrap()),
            "status": {"phase": phase, "applied_serial": 1, "desired_serial": 1, "release": "2.1.2",
                "last_error": (phase == "degraded").then_some("download of abc failed: connection reset"),
                "software": {"current": "2.1.2", "desired": "2.1.3", "installed": ["2.1.2"],
                    "held_back": "2.1.3",
                    "last_rollback": {"from": "2.1.3", "to": "2.1.2", "at": now, "output": "health check failed"}}},
            "metrics": {"cpu_percent": 97.0, "memory_percent": 95.5, "temperature_c": 85.2,
                "disk_used_bytes": 31_500_000_000u64, "disk_total_bytes": 32_000_000_000u64,
                "services": {"neopro-app": "failed"}, "root_read_only": true,
                "throttling": {"under_voltage": true, "throttled": false, "under_voltage_occurred": true, "throttled_occurred": false}}})
    };
    post(
        &s,
        "massy-rugby",
        vec![status(1, "converged"), status(2, "degraded")],
    );
    // cesson-handball reports once and falls silent.
    post(
        &s,
        "cesson-handball",
        vec![json!({"seq": 1, "at": now,
        "status": {"phase": "converged", "applied_serial": 1, "desired_serial": 1}})],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = [
        "temperature",
        "disk",
        "disk-free",
        "memory",
        "service-down",
        "under-voltage",
        "read-only-root",
        "apply-failed",
        "rolled-back",
        "offline",
    ];
    loop {
        let a: Value = s
            .http
            .get(format!("{}/api/alerts", s.url))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let firing: Vec<&str> = a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["state"] == "firing")
            .map(|x| x["rule"].as_str().unwrap())
            .collect();
        if wanted.iter().all(|w| firing.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "firing: {firing:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (cookies, _) = s.login(OPERATOR);
    let data = data_strings(&repo);
    let pages = [
        "/",
        "/sites",
        "/sites?status=offline",
        "/sites/massy-rugby",
        "/sites/cesson-handball",
        "/sites/angers-football",
        "/alerts",
        "/releases",
        "/groups",
        "/audit",
    ];
    let mut problems = Vec::new();
    for lang in ["en", "fr"] {
        for page in pages {
            let r = s.get(page, &format!("{cookies}; tl_lang={lang}"), lang);
            assert!(r.status().is_success(), "{page}: {}", r.status());
            let html = r.text().unwrap();
            // The language switch names the other language, in it.
            let (other, name) = if lang == "en" {
                ("fr", "Français")
            } else {
                ("en", "English")
            };
            let switch = format!("lang=\"{other}\" hreflang=\"{other}\">{name}</a>");
            assert!(html.contains(&switch), "{page}: {html}");
            // A silent site's phase and figures are marked as the last
            // known ones, not shown as current.
            if page == "/sites/cesson-handball" {
                let mark = if lang == "en" {
                    "(last known)"
                } else {
                    "(dernier état connu)"
                };
                assert!(html.contains(mark), "{lang} {page}: no `{mark}` in {html}");
            }
            for th in empty_headers(&html) {
                problems.push(format!("{lang} {page}: an empty table header {th}"));
            }
            let mut text = text_of(&html.replace(&switch, ">"));
            for d in &data {
                text = text.replace(d.as_str(), " ");
            }
            if text.contains("??") {
                problems.push(format!("{lang} {page}: a missing key (??)"));
            }
            let foreign = if lang == "en" { FRENCH } else { ENGLISH };
            for w in foreign {
                if let Some(i) = text.find(w) {
                    let from = text.floor_char_boundary(i.saturating_sub(60));
                    let to = text.ceil_char_boundary((i + 60).min(text.len()));
                    let around: String = text[from..to]
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    problems.push(format!("{lang} {page}: `{w}` in \"{around}\""));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_empty_table_header_is_found_and_a_labelled_or_worded_one_is_not() {
    let html = "<table><thead><tr><th>Site</th><th class=\"x\"></th>\
        <th aria-label=\"Actions\"></th><th><span> </span></th>\
        <th><abbr title=\"Temperature\">T</abbr></th></tr></thead></table>";
    assert_eq!(empty_headers(html), ["<th class=\"x\">", "<th>"], "{html}");
}

//! `touchline-agent status`: what is desired, applied, pending, and why,
//! read from the state directory without changing anything (it works while
//! the daemon runs).

use std::process::ExitCode;

use serde_json::json;
use touchline_schemas::Bundle;

use crate::clock::{Clock, SystemClock, trusted_now};
use crate::config::Config;
use crate::queue::Queue;
use crate::state::Paths;

/// The release part of the status (null without `software_root`).
fn release_status(cfg: &Config, paths: &Paths, accepted: Option<&Bundle>) -> serde_json::Value {
    let Some(root) = &cfg.software_root else {
        return serde_json::Value::Null;
    };
    let layout = crate::release::Layout { root: root.clone() };
    let state = crate::release::load_state(&paths.root.join("release.json")).unwrap_or_default();
    json!({
        "current": layout.current(),
        "desired": accepted.and_then(|b| b.software.as_ref()).map(|s| s.version.to_string()),
        "staged": layout.installed(),
        "journal": state.journal,
        "last_rollback": state.last_rollback,
        "held_back": state.blocked.map(|(version, serial)| json!({"version": version, "serial": serial})),
    })
}

/// Prints the status; exit 0, or 2 when the state cannot be read.
/// The agent-release part of the status, from its journal.
fn agent_status(cfg: &Config, accepted: Option<&Bundle>) -> serde_json::Value {
    let paths = crate::selfupdate::Paths {
        state_dir: cfg.state_dir.clone(),
    };
    let j = paths.load().unwrap_or_default();
    json!({
        "running": crate::selfupdate::running_version(&j),
        "package": crate::selfupdate::own_version(),
        "desired": accepted.and_then(|b| b.agent_release.as_ref()).map(|a| a.version.to_string()),
        "trial": j.trial.as_ref().is_some_and(|t| !t.confirmed),
        "previous": j.previous.as_ref().map(|p| p.version.to_string()),
        "held_back": j.blocked.as_ref().map(|b| json!({"version": b.version, "serial": b.serial, "reason": b.reason})),
        "last_rollback": j.last_rollback,
    })
}

pub fn print(cfg: &Config, as_json: bool) -> ExitCode {
    let paths = Paths {
        root: cfg.state_dir.clone(),
    };
    let state = match paths.load_state() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let accepted: Option<Bundle> = paths.load_accepted().and_then(|(body, sig)| {
        cfg.trusted_keys.verify(&body, &sig).ok()?;
        Bundle::from_slice(&body).ok()
    });
    let queue = Queue::new(paths.queue(), cfg.report_queue_max).len();
    let partial: Vec<(String, u64)> = std::fs::read_dir(paths.partial())
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".resume"))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map_or(0, |m| m.len()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let floor = state
        .time_floor
        .into_iter()
        .chain(accepted.as_ref().map(|b| b.issued_at))
        .max()
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let now = trusted_now(SystemClock::from_env().now(), floor, None);
    let stale = accepted.as_ref().is_some_and(|b| b.expires_at <= now.now);
    let release = release_status(cfg, &paths, accepted.as_ref());
    let agent = agent_status(cfg, accepted.as_ref());
    let converged = accepted.as_ref().map(|b| b.serial) == state.applied_serial
        && state.last_error.is_none()
        && accepted.is_some();
    if as_json {
        let v = json!({
            "site": cfg.site_id,
            "desired_serial": accepted.as_ref().map(|b| b.serial),
            "applied_serial": state.applied_serial,
            "highest_serial": state.highest_serial,
            "converged": converged,
            "phase": state.phase,
            "release": release,
            "agent_release": agent,
            "stale": stale,
            "expires_at": accepted.as_ref().map(|b| b.expires_at),
            "files_placed": state.placed.len(),
            "pending_downloads": partial.iter().map(|(h, n)| json!({"sha256": h, "bytes": n})).collect::<Vec<_>>(),
            "last_error": state.last_error,
            "last_rejected": state.last_rejected,
            "conditions": state.conditions,
            "offline_since": state.offline_since,
            "last_contact": state.last_contact,
            "queued_reports": queue,
            "time_floor": now.floor,
            "clock": now.clock,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let opt = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |s| s.to_string());
    println!("site:            {}", cfg.site_id);
    println!(
        "desired serial:  {}{}",
        opt(accepted.as_ref().map(|b| b.serial)),
        accepted
            .as_ref()
            .map(|b| format!(" (expires {})", b.expires_at))
            .unwrap_or_default()
    );
    println!("applied serial:  {}", opt(state.applied_serial));
    println!(
        "state:           {}",
        if stale {
            "stale: the accepted bundle has expired; the box keeps running it"
        } else if converged {
            "converged"
        } else {
            "not converged"
        }
    );
    if let Some(p) = state.phase {
        println!(
            "phase:           {}",
            serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
    }
    println!("files placed:    {}", state.placed.len());
    let a = |k: &str| {
        agent[k]
            .as_str()
            .map_or_else(|| "none".to_owned(), str::to_owned)
    };
    println!(
        "agent:           {} (package {}), desired {}{}",
        a("running"),
        a("package"),
        a("desired"),
        if agent["trial"] == true {
            ", on trial"
        } else {
            ""
        }
    );
    if let Some(h) = agent["held_back"].as_object() {
        println!(
            "agent held back: {}: {}",
            h.get("version")
                .and_then(|v| v.as_str())
                .unwrap_or_default(),
            h.get("reason").and_then(|v| v.as_str()).unwrap_or_default()
        );
    }
    if let Some(rb) = agent["last_rollback"].as_object() {
        println!(
            "agent rollback:  {} → {}: {}",
            rb.get("from").and_then(|v| v.as_str()).unwrap_or_default(),
            rb.get("to").and_then(|v| v.as_str()).unwrap_or_default(),
            rb.get("reason")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        );
    }
    if !release.is_null() {
        let s = |k: &str| {
            release[k]
                .as_str()
                .map_or_else(|| "none".to_owned(), str::to_owned)
        };
        println!(
            "release:         current {}, desired {}",
            s("current"),
            s("desired")
        );
        if let Some(staged) = release["staged"].as_array() {
            let names: Vec<&str> = staged.iter().filter_map(|v| v.as_str()).collect();
            println!("  installed:     {}", names.join(", "));
        }
        if let Some(j) = release.get("journal").filter(|j| !j.is_null()) {
            println!(
                "  switching:     to {} (step {}), interrupted; the next start finishes it",
                j["to"].as_str().unwrap_or("?"),
                j["step"].as_str().unwrap_or("?")
            );
        }
        if let Some(rb) = release.get("last_rollback").filter(|r| !r.is_null()) {
            println!(
                "  last rollback: from {} to {} at {}: {}",
                rb["from"].as_str().unwrap_or("?"),
                rb["to"].as_str().unwrap_or("(none)"),
                rb["at"].as_str().unwrap_or("?"),
                rb["output"].as_str().unwrap_or("").trim()
            );
        }
        if let Some(b) = release.get("held_back").filter(|b| !b.is_null()) {
            println!(
                "  held back:     {} for serial {} (`touchline-agent retry-release` lifts it)",
                b["version"].as_str().unwrap_or("?"),
                b["serial"]
            );
        }
    }
    for (h, n) in &partial {
        println!("pending:         {h} ({n} bytes so far)");
    }
    if let Some(e) = &state.last_error {
        println!("last error:      {e}");
    }
    if let Some(r) = &state.last_rejected {
        println!("last rejected:   {r}");
    }
    for c in &state.conditions {
        println!(
            "condition:       [{}] {}: {} (since {})",
            serde_json::to_value(c.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            c.item,
            c.message,
            c.since
        );
    }
    match state.offline_since {
        Some(t) => println!("controller:      offline since {t}"),
        None => println!(
            "controller:      last contact {}",
            state
                .last_contact
                .map_or_else(|| "never".to_owned(), |t| t.to_string())
        ),
    }
    println!("queued reports:  {queue}");
    println!("time floor:      {} (clock says {})", now.floor, now.clock);
    ExitCode::SUCCESS
}

//! `touchline action`: a remote action through a running controller's API,
//! then (unless `--no-wait`) its progress until the box is done.
//!
//! The controller is the one on `--data` (its local admin token) or
//! `--controller <url>` with an operator token in `TOUCHLINE_TOKEN`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::cli::{Failure, cannot_run, runtime};

/// The command's arguments.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    /// The site.
    pub site: String,
    /// system-info, report-now, logs, restart-service, resync, reboot.
    pub action: String,
    /// The service (`restart-service`, `logs`).
    pub service: Option<String>,
    /// `logs`: how many lines (default 200).
    #[arg(long)]
    pub lines: Option<u32>,
    /// `logs`: since when (journalctl's form: `-1h`, `2026-12-03 14:00`).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Run even while the box's update lock is held (a match): audited.
    #[arg(long)]
    pub force: bool,
    /// How long the box has to take it (default 15m, at most 7d).
    #[arg(long)]
    pub ttl: Option<touchline_schemas::HumanDuration>,
    /// Print the action's id and return; do not wait for the box.
    #[arg(long)]
    pub no_wait: bool,
    /// Data directory of a controller running on this machine.
    #[arg(long, conflicts_with = "controller")]
    pub data: Option<PathBuf>,
    /// A controller's URL (operator token in TOUCHLINE_TOKEN).
    #[arg(long)]
    pub controller: Option<String>,
}

/// Where the API is and the token it takes.
fn endpoint(a: &ActionArgs) -> Result<(String, String), Failure> {
    match (&a.data, &a.controller) {
        (Some(data), _) => {
            let addr = std::fs::read_to_string(crate::serve::addr_file(data))
                .with_context(|| {
                    format!(
                        "no controller runs on `{}` (its address file is missing)",
                        data.display()
                    )
                })
                .map_err(cannot_run)?;
            let token = std::fs::read_to_string(crate::serve::admin_token_file(data))
                .context("the running controller's local admin token is missing")
                .map_err(cannot_run)?;
            Ok((format!("http://{}", addr.trim()), token.trim().to_owned()))
        }
        (None, Some(url)) => {
            let token = std::env::var("TOUCHLINE_TOKEN").map_err(|_| {
                cannot_run(anyhow!(
                    "--controller needs an operator token in TOUCHLINE_TOKEN"
                ))
            })?;
            Ok((
                url.trim_end_matches('/').to_owned(),
                token.trim().to_owned(),
            ))
        }
        (None, None) => Err(cannot_run(anyhow!(
            "say which controller: --data <dir> (on its machine) or --controller <url>"
        ))),
    }
}

async fn call(req: reqwest::RequestBuilder) -> Result<Value, anyhow::Error> {
    let resp = req.send().await.context("failed to reach the controller")?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .context("the controller's answer is not JSON")?;
    if !status.is_success() {
        return Err(anyhow!(
            "{} (HTTP {status})",
            body["error"].as_str().unwrap_or("the controller refused")
        ));
    }
    Ok(body)
}

/// `touchline action`: 0 done, 1 failed / refused / expired, 2 could not
/// run (the controller refused to queue it).
pub fn cmd_action(a: &ActionArgs) -> Result<ExitCode, Failure> {
    let (base, token) = endpoint(a)?;
    let mut body = json!({"action": a.action, "force": a.force});
    if let Some(s) = &a.service {
        body["service"] = json!(s);
    }
    if let Some(n) = a.lines {
        body["lines"] = json!(n);
    }
    if let Some(t) = &a.since {
        body["since"] = json!(t);
    }
    if let Some(t) = a.ttl {
        body["ttl"] = json!(t.to_string());
    }
    let site = &a.site;
    runtime()?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(cannot_run)?;
        let queued = call(
            client
                .post(format!("{base}/api/sites/{site}/actions"))
                .bearer_auth(&token)
                .json(&body),
        )
        .await
        .map_err(cannot_run)?;
        let id = queued["id"].as_str().unwrap_or_default().to_owned();
        eprintln!(
            "queued {} on {site} as {id} (expires {})",
            queued["command"].as_str().unwrap_or_default(),
            queued["expires_at"].as_str().unwrap_or_default()
        );
        if a.no_wait {
            println!("{id}");
            return Ok(ExitCode::SUCCESS);
        }
        // Every update the box sent, in order (a poll may see several).
        let mut shown = 0;
        loop {
            let r = call(
                client
                    .get(format!("{base}/api/sites/{site}/actions/{id}"))
                    .bearer_auth(&token),
            )
            .await
            .map_err(cannot_run)?;
            let updates = r["updates"].as_array().cloned().unwrap_or_default();
            for u in updates.iter().skip(shown) {
                let state = u["state"].as_str().unwrap_or_default();
                match u["message"].as_str() {
                    Some(m) => eprintln!("{state}: {m}"),
                    None => eprintln!("{state}"),
                }
            }
            shown = shown.max(updates.len());
            let state = r["state"].as_str().unwrap_or_default().to_owned();
            if state == "expired" {
                eprintln!(
                    "expired: the box did not take it before {}",
                    r["expires_at"].as_str().unwrap_or_default()
                );
            }
            if matches!(state.as_str(), "done" | "failed" | "refused" | "expired") {
                if let Some(out) = r["output"].as_str() {
                    print!("{out}");
                    if !out.ends_with('\n') && !out.is_empty() {
                        println!();
                    }
                }
                if let Some(code) = r["exit_status"].as_i64() {
                    eprintln!("exit status {code}");
                }
                return Ok(if state == "done" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

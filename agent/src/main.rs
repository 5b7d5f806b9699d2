//! `touchline-agent`: runs on each box, pulls its signed bundle, verifies
//! it, fetches content by sha256 and applies it atomically, and reports.
//!
//! Exit codes: 0 success / converged, 1 not converged (reason on stderr),
//! 2 configuration or usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use touchline_agent::agent::{Agent, Origin, Outcome, RunEnd};
use touchline_agent::clock::SystemClock;
use touchline_agent::config::Config;
use touchline_agent::{diagnose, enroll, notify, selfupdate, status};

#[derive(Debug, Parser)]
#[command(
    name = "touchline-agent",
    version,
    about = "The Touchline agent (one per box)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon: long-poll, reconcile, report (systemd Type=notify).
    Run {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// One full pass; exit 0 when converged with the controller's bundle.
    Once {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// What is desired, applied, pending, and why.
    Status {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Applies a bundle directory (USB stick): bundle.json (or
    /// <site>.json), its .sig, and content/<sha256>.
    ApplyDir {
        /// The directory.
        dir: PathBuf,
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// Switches back to the previous release (health checked); the release
    /// left stays held back until a new commit or `retry-release`.
    Rollback {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// Lets the next pass try again a release that was rolled back.
    RetryRelease {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// Enrolls this box with a one-time code from `touchline site enroll`:
    /// writes the config, the token file (0600) and the trusted keys, then
    /// runs `diagnose`. Exit 0 enrolled and healthy, 1 refused or not
    /// healthy, 2 usage.
    Enroll {
        #[command(flatten)]
        opts: enroll::Options,
        /// Then enable and start the service (systemctl enable --now).
        #[arg(long)]
        start: bool,
    },
    /// Checks config, clock, controller reach, token, trusted key, space.
    Diagnose {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
    /// What a new agent binary proves before it replaces the running one:
    /// the config parses, the state opens (read only), the accepted bundle
    /// verifies, the controller answers; then the checks of `diagnose`.
    /// Exit 0 passed, 1 failed, 2 the config does not load.
    SelfTest {
        /// Configuration file.
        #[arg(long, env = "TOUCHLINE_CONFIG")]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Loads the config and opens the agent's state (exit 2 on failure).
fn load_and_open(path: &std::path::Path) -> Result<Agent, ExitCode> {
    open(load(path)?)
}

fn open(cfg: Config) -> Result<Agent, ExitCode> {
    Agent::open(cfg, Box::new(SystemClock::from_env())).map_err(|e| {
        eprintln!("error: {}", touchline_agent::fetch::error_text(&e));
        ExitCode::from(2)
    })
}

async fn run_enroll(opts: &enroll::Options, start: bool) -> ExitCode {
    let done = match enroll::enroll(opts).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    println!(
        "enrolled as site {}: wrote {} and the token and trusted keys beside it",
        done.site,
        done.config.display()
    );
    for n in &done.notes {
        println!("note: {n}");
    }
    let healthy = diagnose::run(&done.config).await == ExitCode::SUCCESS;
    if start {
        let ok = std::process::Command::new("systemctl")
            .args(["enable", "--now", "touchline-agent.service"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "error: enrolled, but `systemctl enable --now touchline-agent.service` failed"
            );
            return ExitCode::from(1);
        }
        println!("started touchline-agent.service");
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: enrolled, but diagnose found problems (above)");
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    touchline_log::init("info");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Once { config } => {
                let mut agent = match load_and_open(&config) {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                let outcome = agent.pass(&Origin::Controller { wait: None }).await;
                if let Err(e) = agent.report(true).await {
                    eprintln!("warning: report not sent (queued): {e}");
                }
                finish(outcome)
            }
            Command::ApplyDir { dir, config } => {
                let mut agent = match load_and_open(&config) {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                let outcome = agent.pass(&Origin::Dir(dir)).await;
                finish(outcome)
            }
            Command::Status { config, json } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                status::print(&cfg, json)
            }
            Command::Diagnose { config } => diagnose::run(&config).await,
            Command::SelfTest { config } => diagnose::self_test(&config).await,
            Command::Enroll { opts, start } => run_enroll(&opts, start).await,
            Command::Rollback { config } => {
                let mut agent = match load_and_open(&config) {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                let m = agent.manual_rollback().await;
                let _ = tokio::time::timeout(Duration::from_secs(10), agent.report(false)).await;
                manual(m)
            }
            Command::RetryRelease { config } => {
                let mut agent = match load_and_open(&config) {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                manual(agent.retry_release().await)
            }
            Command::Run { config } => {
                let cfg = match load(&config) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                // The launcher (the package's binary) hands over to a
                // selected agent release, or watches one on trial.
                let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
                if selfupdate::running_as().is_none()
                    && let selfupdate::Launch::Exit(code) =
                        selfupdate::launch(&cfg.state_dir, &args).await
                {
                    return code;
                }
                let mut agent = match open(cfg) {
                    Ok(a) => a,
                    Err(code) => return code,
                };
                let (tx, mut rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .ok();
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        () = async {
                            match term.as_mut() {
                                Some(t) => { t.recv().await; }
                                None => std::future::pending::<()>().await,
                            }
                        } => {}
                    }
                    let _ = tx.send(true);
                });
                let notifier = std::sync::Arc::new(notify::Notifier::from_env());
                notifier.send("READY=1");
                if let Some(w) = notify::watchdog_interval() {
                    // Ping while the loop shows progress; a stuck loop
                    // stops the pings and systemd restarts the agent.
                    let (live, started) = agent.liveness_probe();
                    let n = notifier.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(w / 3);
                        loop {
                            tick.tick().await;
                            let now = started.elapsed().as_secs();
                            let last = live.load(std::sync::atomic::Ordering::Relaxed);
                            if now.saturating_sub(last) < w.as_secs().max(1) {
                                n.send("WATCHDOG=1");
                            }
                        }
                    });
                }
                let end = agent.run(&mut rx).await;
                if end == RunEnd::Restart {
                    drop(agent);
                    if std::env::var_os(selfupdate::ENV_SUPERVISED).is_some() {
                        // The launcher watching this one decides again.
                        return ExitCode::from(selfupdate::RESTART_CODE);
                    }
                    let e = selfupdate::relaunch(&args);
                    eprintln!("error: cannot restart into the selected agent: {e}");
                    // systemd (Restart=always) starts the launcher.
                    return ExitCode::from(selfupdate::RESTART_CODE);
                }
                notifier.send("STOPPING=1");
                // Give a last report a chance.
                let _ = tokio::time::timeout(Duration::from_secs(5), agent.report(false)).await;
                ExitCode::SUCCESS
            }
        }
    })
}

fn manual(m: touchline_agent::agent::Manual) -> ExitCode {
    match m {
        touchline_agent::agent::Manual::Done(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        touchline_agent::agent::Manual::Failed(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Converged => ExitCode::SUCCESS,
        Outcome::NotConverged(reason) => {
            eprintln!("not converged: {reason}");
            ExitCode::from(1)
        }
        Outcome::Waiting(reason) => {
            eprintln!("not converged yet: {reason}");
            ExitCode::from(1)
        }
    }
}

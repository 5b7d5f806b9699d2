//! `touchline serve`: wires the store, the content store, the git follower
//! and the HTTP server; syncs on a timer and on demand; shuts down cleanly.
//!
//! Files in `--data`:
//! - `status.redb`: the status store (locked while the controller runs);
//! - `content/sha256/`: content by hash;
//! - `git/`: the bare mirror of the manifests repository;
//! - `controller.addr` and `local-admin.token` (0600), written while the
//!   controller runs, so that `touchline site token` can go through it when
//!   the store is locked.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use touchline_schemas::HumanDuration;

use crate::app::AppState;
use crate::config::Config;
use crate::content::ContentStore;
use crate::fleet::{Fleet, SyncOutcome, error_chain};
use crate::git::Follower;
use crate::http::router;
use crate::metrics::HttpMetrics;
use crate::redb_store::RedbStore;
use crate::store::{Store, StoreError};
use crate::tokens::Token;

/// `touchline serve` options.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Manifests repository: a path or URL.
    pub repo: String,
    /// Branch to follow.
    pub branch: String,
    /// Data directory.
    pub data: PathBuf,
    /// Signing key.
    pub key: PathBuf,
    /// Listen address (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Overrides the config's sync interval.
    pub sync_interval: Option<HumanDuration>,
    /// Config file.
    pub config: Option<PathBuf>,
}

/// The address file of a running controller.
pub fn addr_file(data: &Path) -> PathBuf {
    data.join("controller.addr")
}

/// The local admin token file of a running controller.
pub fn admin_token_file(data: &Path) -> PathBuf {
    data.join("local-admin.token")
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::keys::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("failed to write `{}`", path.display()))
}

/// Runs the controller until `shutdown` resolves. Calls `on_listening` with
/// the bound address once the server accepts connections.
pub async fn serve(
    opts: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = match &opts.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(i) = opts.sync_interval {
        config.sync_interval = i;
    }
    let key = crate::keys::load(&opts.key)?;
    let fmt = |l: Option<u64>| l.map_or("unlimited".to_owned(), |n| n.to_string());
    match crate::listen::raise_open_files_limit() {
        (before, after) if before != after => {
            tracing::info!(before = %fmt(before), after = %fmt(after), "open-files limit raised to the hard limit");
        }
        (_, after) => tracing::info!(limit = %fmt(after), "open-files limit"),
    }
    std::fs::create_dir_all(&opts.data).with_context(|| {
        format!(
            "failed to create the data directory `{}`",
            opts.data.display()
        )
    })?;
    crate::backup::check_no_unfinished_restore(&opts.data)?;
    let store = RedbStore::open(&opts.data).map_err(|e| match e {
        StoreError::Locked(_) => anyhow!(
            "another controller is already running on `{}` (its store is locked); stop it or use another --data",
            opts.data.display()
        ),
        other => anyhow::Error::from(other),
    })?;
    let content = ContentStore::open(&opts.data)?;
    // What validation cannot point at (no manifest line sets either): a
    // site with the default poll interval judged against this limit.
    if config.offline_after.as_secs() <= 2 * 60 {
        tracing::warn!(
            offline_after = %config.offline_after,
            "offline_after is not longer than twice the default poll interval (60s): a late box of a site that sets neither goes straight from online to offline; set it longer, or set alerts.offline_after in fleet.yaml"
        );
    }
    let packages = {
        let (paths, content) = (config.enrollment.agent_packages.clone(), content.clone());
        tokio::task::spawn_blocking(move || crate::install::load(&paths, &content))
            .await?
            .map_err(|e| anyhow!(e))?
    };
    if !packages.is_empty() {
        tracing::info!(packages = %crate::install::describe(&packages), "agent packages for /install.sh");
    }
    let credentials = match &config.repo_credentials_file {
        None => None,
        Some(_) if crate::git::url_has_credentials(&opts.repo) => {
            return Err(crate::git::CredentialsError::Twice.into());
        }
        Some(file) => {
            let file = match opts.config.as_deref().and_then(Path::parent) {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file.clone(),
            };
            Some(crate::git::RepoCredentials::read(&file)?)
        }
    };
    let follower = Follower::open_with(&opts.data, &opts.repo, &opts.branch, credentials)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let fleet = {
        let store = store.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            Fleet::open(store, content, config, key, Box::new(follower))
        })
        .await??
    };
    let fleet = Arc::new(fleet);

    let admin = Token::generate()?;
    write_private(&admin_token_file(&opts.data), admin.reveal())?;

    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("failed to listen on `{}`", opts.listen))?;
    let addr = listener.local_addr()?;
    write_private(&addr_file(&opts.data), &addr.to_string())?;

    // First sync before serving, so a fresh controller serves bundles at once.
    run_sync(&fleet).await;

    let state = AppState {
        fleet: fleet.clone(),
        local_admin: Some(admin.hash()),
        metrics: Arc::new(HttpMetrics::default()),
        sessions: Arc::default(),
        logins: Arc::default(),
        files: Some(Arc::new(crate::app::ServedFiles {
            data: opts.data.clone(),
            config: opts.config.clone(),
            packages,
        })),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(sync_loop(fleet.clone(), config.clone(), stop_rx.clone()));
    let alerts = tokio::spawn(alert_loop(fleet.clone(), config.clone(), stop_rx.clone()));
    let waves = tokio::spawn(rollout_loop(fleet.clone(), stop_rx));
    tracing::info!(%addr, repo = %crate::git::redact_url(&opts.repo), branch = %opts.branch, "controller listening");
    on_listening(addr);
    let f2 = fleet.clone();
    crate::listen::serve(listener, router(state), config.http, async move {
        shutdown.await;
        // End the long-polls so that the graceful shutdown does not wait
        // for them (they answer 304; boxes poll again later).
        f2.begin_shutdown();
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    let _ = alerts.await;
    let _ = waves.await;
    let _ = std::fs::remove_file(addr_file(&opts.data));
    let _ = std::fs::remove_file(admin_token_file(&opts.data));
    tracing::info!("controller stopped");
    Ok(())
}

/// Evaluates alerts on a timer and soon after reports (at most once a
/// second), and delivers due notifications every second.
async fn alert_loop(
    fleet: Arc<Fleet>,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("touchline/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; no notifications");
            return;
        }
    };
    let sender = crate::notify::NetSender::new(client, fleet.config.email.clone())
        .with_commit_status(fleet.config.commit_status.clone());
    let every = config.alerts_interval.to_std();
    let mut last_eval: Option<std::time::Instant> = None;
    let mut second = tokio::time::interval(std::time::Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut woken = false;
    loop {
        tokio::select! {
            _ = second.tick() => {}
            () = fleet.alerts_wake.notified() => { woken = true; continue; }
            _ = stop.changed() => return,
        }
        if woken || last_eval.is_none_or(|t| t.elapsed() >= every) {
            woken = false;
            last_eval = Some(std::time::Instant::now());
            let f = fleet.clone();
            match tokio::task::spawn_blocking(move || crate::notify::evaluate(&f, Timestamp::now()))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "alert evaluation failed"),
                Err(e) => tracing::warn!(error = %e, "alert evaluation panicked"),
            }
            let f = fleet.clone();
            match tokio::task::spawn_blocking(move || crate::notify::digest(&f, Timestamp::now()))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "daily digest failed"),
                Err(e) => tracing::warn!(error = %e, "daily digest panicked"),
            }
        }
        crate::notify::deliver(&fleet, &sender, Timestamp::now()).await;
    }
}

/// Advances the current rollout soon after each report or commit (reports
/// coalesced: at most one step every 200 ms), every 10 seconds, when a
/// bake time ends and when a silent box of the current wave stops counting
/// as reachable (the wave may pass then).
async fn rollout_loop(fleet: Arc<Fleet>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut wait = std::time::Duration::ZERO;
    let mut status_commit: Option<String> = None;
    let mut status_at: Option<std::time::Instant> = None;
    loop {
        let woken = tokio::select! {
            () = tokio::time::sleep(wait) => "timer",
            () = fleet.rollout_wake.notified() => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                "report or commit"
            }
            _ = stop.changed() => return,
        };
        tracing::debug!(woken, "rollout step");
        let f = fleet.clone();
        // The rollout's step, and the latest commit (a store read: off the
        // async threads too).
        let (latest, crossing) = match tokio::task::spawn_blocking(move || {
            let step = f.advance_rollout(Timestamp::now());
            (
                step,
                f.store.last_seen_commit().ok().flatten(),
                f.next_unreachable(Timestamp::now()),
            )
        })
        .await
        {
            Ok((step, latest, crossing)) => {
                if let Err(e) = step {
                    tracing::warn!(error = %error_chain(&e), "rollout step failed");
                }
                (latest, crossing)
            }
            Err(e) => {
                tracing::warn!(error = %e, "rollout step panicked");
                (None, None)
            }
        };
        // The latest commit's status on the git host: at most every 5 s
        // (it reads every site's report), at once for a new commit.
        if fleet.config.commit_status.is_some()
            && (latest != status_commit
                || status_at.is_none_or(|t: std::time::Instant| {
                    t.elapsed() >= std::time::Duration::from_secs(5)
                }))
        {
            status_commit = latest;
            status_at = Some(std::time::Instant::now());
            let f = fleet.clone();
            match tokio::task::spawn_blocking(move || {
                crate::commit_status::tick(&f, Timestamp::now())
            })
            .await
            {
                Ok(Ok(true)) => fleet.alerts_wake.notify_one(),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "commit status failed"),
                Err(e) => tracing::warn!(error = %e, "commit status panicked"),
            }
        }
        // Every 10 s, or sooner when the bake time ends or a box of the
        // current wave stops counting as reachable.
        let every = std::time::Duration::from_secs(10);
        let now = Timestamp::now();
        let next = fleet
            .rollout()
            .as_ref()
            .and_then(crate::rollout::next_opening);
        wait = next.into_iter().chain(crossing).min().map_or(every, |at| {
            let left = at.duration_since(now).as_millis().max(0);
            let left = u64::try_from(left).unwrap_or(0);
            every.min(std::time::Duration::from_millis(left + 50))
        });
    }
}

async fn run_sync(fleet: &Arc<Fleet>) {
    let f = fleet.clone();
    match tokio::task::spawn_blocking(move || f.sync(Timestamp::now())).await {
        Ok(Ok(SyncOutcome::Unchanged)) => tracing::debug!("manifests unchanged"),
        Ok(Ok(SyncOutcome::Published { commit, changed })) => {
            tracing::info!(%commit, changed = changed.len(), "new commit published");
        }
        Ok(Ok(SyncOutcome::Refused { commit, reason })) => {
            tracing::warn!(%commit, %reason, "commit refused; boxes stay on the last good commit");
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "sync failed; serving the last good bundles")
        }
        Err(e) => tracing::error!(error = %e, "sync task failed"),
    }
}

async fn sync_loop(
    fleet: Arc<Fleet>,
    config: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.sync_interval.to_std());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let retention = jiff::SignedDuration::from_secs(
        i64::try_from(config.history_retention.as_secs()).unwrap_or(i64::MAX),
    );
    let tiers = config.history_tiers.clone();
    let mut last_housekeeping = Timestamp::UNIX_EPOCH;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        run_sync(&fleet).await;
        let now = Timestamp::now();
        if now.as_second() - last_housekeeping.as_second() >= 3600 {
            last_housekeeping = now;
            let f = fleet.clone();
            let tiers = tiers.clone();
            let result = tokio::task::spawn_blocking(move || {
                if let Err(e) = crate::actions::expire(f.action_ctx(), now) {
                    tracing::warn!(error = %crate::fleet::error_chain(&e), "remote actions housekeeping failed");
                }
                crate::history::housekeeping(&*f.store, now, retention, &tiers)
            })
            .await;
            match result {
                Ok(Ok(done)) => {
                    tracing::info!(
                        pruned = done.pruned,
                        merged = done.merged,
                        "metrics history housekeeping"
                    );
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::fleet::error_chain(&e), "metrics history housekeeping failed")
                }
                Err(e) => tracing::warn!(error = %e, "metrics history housekeeping panicked"),
            }
        }
    }
}

//! The state every HTTP handler shares: the fleet, the local admin's token,
//! the Prometheus metrics and the status page's sessions. Its own module so
//! that the agent API, the operator API and the pages depend on it, and not
//! on each other.

use std::sync::Arc;

use crate::fleet::Fleet;
use crate::metrics::HttpMetrics;
use crate::session::Sessions;
use crate::tokens::TokenHash;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The controller.
    pub fleet: Arc<Fleet>,
    /// The token of the local admin (written to `<data>/local-admin.token`).
    pub local_admin: Option<TokenHash>,
    /// Prometheus metrics.
    pub metrics: Arc<HttpMetrics>,
    /// Status page sessions.
    pub sessions: Arc<Sessions>,
    /// Failed logins per source.
    pub logins: Arc<crate::session::LoginFailures>,
    /// The data directory and config file (`touchline serve`), for
    /// backups; `None` in tests that build the router alone.
    pub files: Option<Arc<ServedFiles>>,
}

/// The files a running controller was started with.
#[derive(Debug)]
pub struct ServedFiles {
    /// `--data`.
    pub data: std::path::PathBuf,
    /// `--config`.
    pub config: Option<std::path::PathBuf>,
    /// The agent packages `/install.sh` offers.
    pub packages: Vec<crate::install::AgentPackage>,
}

/// Why a read of the fleet's state failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The blocking task stopped.
    #[error("the read stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

impl AppState {
    /// The address boxes reach this controller at: `[enrollment] public_url`,
    /// else the `Host` the request came to (`https` behind a proxy that says
    /// `X-Forwarded-Proto: https`).
    pub fn public_url(&self, headers: &axum::http::HeaderMap) -> String {
        if let Some(u) = &self.fleet.config.enrollment.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let https = headers
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
        format!("{}://{host}", if https { "https" } else { "http" })
    }

    /// Runs a read of the fleet's state (the store: blocking I/O) on the
    /// blocking pool, never on an async worker.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Fleet) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let fleet = self.fleet.clone();
        Ok(tokio::task::spawn_blocking(move || f(&fleet)).await??)
    }
}

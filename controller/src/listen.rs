//! The accept loop: hyper's HTTP/1 server under the limits of
//! [`HttpLimits`], because the controller faces the internet and
//! `axum::serve` sets none of them:
//!
//! - a header-read timeout per connection (also between two requests of a
//!   kept-alive connection), so a client that opens a socket and sends
//!   nothing, or a byte a minute, is closed;
//! - a cap on connections served at once: past it, new connections wait in
//!   the kernel's listen backlog and a log line says so (at most every
//!   10 s);
//! - accept errors (`EMFILE` when the open-files limit is reached) are
//!   logged and retried after a pause, never the end of the server;
//! - the peer address as [`ConnectInfo`] for per-source limits (logins);
//! - graceful shutdown: no new connection, running requests finish (the
//!   long-polls are ended by the fleet), at most [`DRAIN`] of waiting.
//!
//! Request bodies have their own timeout, in the router.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::HttpLimits;

/// Longest wait for running requests at shutdown.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.to_std())
        // Request heads are small (a bearer token, an ETag).
        .max_buf_size(64 * 1024);
    let mut full_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if permits.available_permits() == 0
            && full_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait in the listen backlog ([http] max_connections)"
            );
            full_logged = Some(Instant::now());
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed (open-files limit?); retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: requests still running after {DRAIN:?}, closing them");
    }
}

/// Raises the soft open-files limit to the hard one (each long-polling
/// box holds a socket; systemd's default soft limit is 1,024). Returns
/// `(before, after)`.
pub fn raise_open_files_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
    let after = getrlimit(Resource::Nofile);
    (before.current, after.current)
}

/// The peer address of a request served by [`serve`] (`None` in process).
pub fn peer(parts: &axum::http::Extensions) -> Option<SocketAddr> {
    parts.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Where a request came from: the peer, and what a proxy in front says.
pub fn source(headers: &axum::http::HeaderMap, peer: Option<SocketAddr>) -> Option<String> {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(100).collect::<String>());
    match (peer, forwarded) {
        (Some(p), Some(f)) => Some(format!("{} (forwarded for {f})", p.ip())),
        (Some(p), None) => Some(p.ip().to_string()),
        (None, Some(f)) => Some(format!("forwarded for {f}")),
        (None, None) => None,
    }
}

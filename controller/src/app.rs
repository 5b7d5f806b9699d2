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
}

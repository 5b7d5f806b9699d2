//! `touchline-log`: how every Touchline binary logs, so that the
//! controller and the agent read the same way in a terminal, journald or a
//! log shipper.
//!
//! - to stderr (systemd sends it to the journal);
//! - `RUST_LOG` filters (`info` when unset; the agent also honours its
//!   older `TOUCHLINE_LOG`);
//! - `TOUCHLINE_LOG_FORMAT=json` switches to JSON lines, one object per
//!   event with its span fields (`site`, `serial`, `commit`…);
//! - colours only on a terminal.

use tracing_subscriber::EnvFilter;

/// The filter: `RUST_LOG`, else `TOUCHLINE_LOG`, else `default`.
pub fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_from_env("TOUCHLINE_LOG"))
        .unwrap_or_else(|_| EnvFilter::new(default))
}

/// Whether JSON lines were asked for.
pub fn json() -> bool {
    std::env::var("TOUCHLINE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(default: &str) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json() {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
}

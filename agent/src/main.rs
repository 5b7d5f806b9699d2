//! `touchline-agent`: runs on each box, pulls its signed bundle, verifies it,
//! fetches content by sha256 and applies it atomically.
//!
//! Not built yet: the reconcile loop is the subject of the agent issue. Until
//! then this binary only says so, so that nobody mistakes it for a working
//! agent. The contract it will implement (bundle verification order, limits)
//! already lives in `touchline-schemas`.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "error: touchline-agent {} is not implemented yet; only the contract (touchline-schemas) exists",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}

//! The controller tests' own helpers on top of `touchline-testkit`: the
//! built `touchline` as an `assert_cmd` command, the status page server.
#![allow(dead_code, clippy::unwrap_used)]

pub mod recorder;
pub mod server;
pub mod webhook;

/// A `touchline` command.
pub fn touchline() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("touchline").unwrap()
}

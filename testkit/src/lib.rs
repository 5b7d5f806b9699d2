//! `touchline-testkit`: what Touchline's tests and benches share, on the
//! model of cargo's `cargo-test-support`. A dev-dependency only: production
//! code never depends on it (`touchline demo` keeps its own small helpers).
//!
//! - [`git`]: `git` with a fixed identity, and a repository builder
//!   (`Repo::init(dir).file("sites/a.yaml", A).commit("msg")`);
//! - [`fs`]: the repository's paths, copying and hashing trees, the example
//!   fleet;
//! - [`process`]: the built binaries, commands that must succeed, a child
//!   killed on drop;
//! - [`controller`]: a controller's files (manifests repository, key, data,
//!   `controller.toml` with an operator and a viewer) and
//!   [`controller::RunningController`] (`touchline serve` on `127.0.0.1:0`);
//! - [`agent_box`]: a fake box root and its `agent.toml`, run `once`, read
//!   `status --json`; [`fake_host::FakeHost`]: the agent's `Host` for
//!   in-process tests (records commands, scripted answers and free space);
//!   [`memory_transport::MemoryTransport`]: content served from memory, with
//!   `If-Range` and cuts;
//! - [`mirrors`]: content mirrors that misbehave (hostile, gated, slow,
//!   cutting the connection), hand-written on a raw socket on purpose;
//! - [`tools`]: external tools, skipped with a printed reason outside CI and
//!   required in CI; [`tmpfs`]: a small filesystem to fill up;
//! - `synthetic` (feature `synthetic`, which needs the controller library):
//!   synthetic fleets and metrics histories for benchmarks;
//! - [`club`]: a hostile club member (commands as `nobody`) and a canary
//!   tree outside the roots;
//! - [`corpus`]: the bad-input corpora with their expected refusals.
//!
//! Everything panics with a message on failure: it is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod agent_box;
pub mod club;
pub mod controller;
pub mod corpus;
pub mod fake_host;
pub mod fs;
pub mod git;
pub mod memory_transport;
pub mod mirrors;
pub mod process;
pub mod proxy;
#[cfg(feature = "synthetic")]
pub mod synthetic;
pub mod tmpfs;
pub mod tools;

pub use agent_box::AgentBox;
pub use controller::{ControllerFiles, OPERATOR, RunningController, VIEWER};
pub use fs::{copy_tree, data, example_fleet, repo_root, tree};
pub use git::{Repo, git};
pub use process::{Killed, bin, run};
pub use tools::{in_ci, require_tool, which};

/// A loopback port free right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding 127.0.0.1:0")
        .local_addr()
        .expect("a bound address")
        .port()
}

/// A benchmark's numeric option `--name N` from its command line, or
/// `default`.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A blocking HTTP client (rustls with ring, as the agent uses).
pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("building an HTTP client")
}

//! The Touchline agent as a library (the binary is `src/main.rs`): one
//! module per step of the reconcile loop in DESIGN.md.
//!
//! - [`config`]: the TOML file and its `TOUCHLINE_<KEY>` overrides;
//! - [`pull`]: the controller's bundle, signature and report endpoints;
//! - [`fetch`]: the content store, resumable downloads;
//! - [`apply`]: the video tree and `configuration.json`;
//! - [`queue`]: reports kept on disk while offline;
//! - [`metrics`], [`clock`], [`phase`], [`state`], [`fsx`];
//! - [`agent`]: the pass and the daemon loop, with its software step
//!   (`agent/software.rs`: stage, switch, health check, roll back);
//! - [`release`], [`unpack`]: release packages and the switch journal;
//! - [`status`], [`diagnose`], [`notify`]: the commands around it.
//!

pub mod agent;
pub mod apply;
pub mod clock;
pub mod condition;
pub mod config;
pub mod diagnose;
pub mod error;
pub mod fetch;
pub mod fsx;
pub mod host;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod phase;
pub mod plan;
pub mod pull;
pub mod queue;
pub mod release;
pub mod state;
pub mod status;
pub mod transport;
pub mod unpack;

//! The Touchline agent as a library (the binary is `src/main.rs`).
//!
//! A pass is observe → plan → execute (DESIGN.md's reconcile loop):
//! - [`observe`]: the only code of a pass that reads the box, into plain
//!   data ([`plan::Observed`]);
//! - [`plan`]: a pure function from the bundle, what was observed, the
//!   state and the time to a [`plan::PassPlan`] (unit-tested in memory);
//! - [`agent`]: the pass, the daemon loop and reports; `agent/execute.rs`
//!   carries a plan out, `agent/software.rs` recovers and rolls back
//!   releases by hand;
//! - side effects behind traits: [`host`] (commands, services, reboot, free
//!   space) and [`transport`] (content over HTTP with `Range`, or from a
//!   bundle directory); fakes live in `touchline-testkit`;
//! - [`error`]: why a pass did not converge ([`error::PassError`]);
//!   [`condition`]: what the report says is wrong, keyed by
//!   [`condition::Item`]; [`phase`]: the phase, changed only by
//!   [`phase::next`];
//! - [`fetch`] (the content store, resumable downloads), [`apply`] (the
//!   video tree and `configuration.json`), [`release`] and [`unpack`]
//!   (packages and the switch journal), [`state`], [`queue`] (reports kept
//!   while offline), [`pull`] (the controller's endpoints), [`clock`],
//!   [`metrics`], [`config`], [`fsx`];
//! - [`selfupdate`]: the agent's own releases (journal, launcher, trial);
//!   `agent/upgrade.rs` is the pass step that stages and selects them;
//! - [`status`], [`diagnose`], [`notify`]: the commands around it.
//!
//! Tests: unit tests beside the code (`plan/tests.rs` holds the plan's),
//! in-process tests through the fakes (`tests/host.rs`,
//! `tests/transport.rs`), and the real binaries (`tests/e2e/`,
//! `tests/release.rs`).

pub mod agent;
pub mod apply;
pub mod beneath;
pub mod clock;
pub mod condition;
pub mod config;
pub mod diagnose;
pub mod enroll;
pub mod error;
pub mod fetch;
pub mod fsx;
pub mod host;
pub mod inventory;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod phase;
pub mod plan;
pub mod pull;
pub mod queue;
pub mod release;
pub mod selfupdate;
pub mod state;
pub mod status;
pub mod transport;
pub mod unpack;

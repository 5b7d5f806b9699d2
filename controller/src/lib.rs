//! `touchline-controller`: the library behind the `touchline` binary
//! (`main.rs` parses arguments; [`cli`] holds each command's body).
//!
//! From the manifests to the wire, one module per concern:
//! - manifests: [`source`] (a directory), [`git`] (the bare mirror),
//!   [`follow`] (the [`follow::ManifestSource`] trait over both), [`yaml`]
//!   (typed parsing plus `file:line` of everything), [`model`], [`validate`]
//!   (`path:line:col` diagnostics), [`diag`];
//! - rendering: [`render`] and [`merge`] (pure layering with the origin of
//!   each value), [`explain`], [`bundles`], [`revision`], [`keys`],
//!   [`example`];
//! - state: [`store`] (the [`store::Store`] trait, typed bookkeeping) on
//!   [`redb_store`]; [`point`] and [`history`] (metrics history and its
//!   tiers), [`content`], [`tokens`], [`config`];
//! - the running controller: [`fleet`] (the commit pipeline), [`alerts`]
//!   (pure rules and state machine), [`notify`] (engine, texts, delivery
//!   behind [`notify::Sender`]), [`outbox`], [`liveness`] (online, overdue,
//!   offline, stale), [`status`] (the typed read side), [`i18n`];
//! - HTTP: [`app`] (shared state), [`http`] (router; agents' API,
//!   operators' API, authentication extractors), [`web`] (the status page),
//!   [`session`], [`html`], [`metrics`]; [`serve`] (the daemon), [`demo`].
//!
//! Pure logic (layering, merging, validation, alert steps) works on values
//! in memory and is unit-tested without files; the router is tested in
//! process (`tests/router.rs`, `oneshot` over a directory-backed fleet);
//! the binary end to end (`tests/`), with `touchline-testkit` as harness.

pub mod actions;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod backup;
pub mod bundles;
pub mod cli;
pub mod commit_status;
pub mod config;
pub mod content;
pub mod demo;
pub mod diag;
pub mod enroll;
pub mod example;
pub mod explain;
pub mod fleet;
pub mod follow;
pub mod git;
pub mod history;
pub mod html;
pub mod http;
pub mod i18n;
pub mod import;
pub mod install;
pub mod keys;
pub mod listen;
pub mod liveness;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod plan;
pub mod point;
pub mod progress;
pub mod redb_store;
pub mod remote;
pub mod render;
pub mod revision;
pub mod rollout;
pub mod serve;
pub mod session;
pub mod source;
pub mod status;
pub mod store;
pub mod tokens;
pub mod user_cli;
pub mod users;
pub mod validate;
pub mod web;
pub mod yaml;

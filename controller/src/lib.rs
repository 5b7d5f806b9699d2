//! `touchline-controller`: the library behind the `touchline` binary.
//!
//! Layout, one module per concern:
//! - [`source`]: reading manifest files (a directory; later a git commit)
//!   with size caps, into bytes in memory.
//! - [`yaml`]: typed parsing plus node positions (`file:line` for everything).
//! - [`model`]: the parsed manifests, per file.
//! - [`validate`]: every semantic check, as `path:line:col` diagnostics.
//! - [`render`] and [`merge`]: layering into per-site bundles, with the
//!   provenance of each value; [`explain`] prints it.
//! - [`revision`]: serial, commit and times of a bundle from a git checkout.
//! - [`keys`]: signing keys on disk.
//! - [`example`]: deterministic content for the example fleet.
//!
//! Pure logic (layering, merging, validation) works on values in memory and
//! is unit-tested without files; the CLI is tested through the built binary
//! (`controller/tests/`).

pub mod alerts;
pub mod app;
pub mod bundles;
pub mod cli;
pub mod config;
pub mod content;
pub mod demo;
pub mod diag;
pub mod example;
pub mod explain;
pub mod fleet;
pub mod follow;
pub mod git;
pub mod history;
pub mod html;
pub mod http;
pub mod i18n;
pub mod keys;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod point;
pub mod redb_store;
pub mod render;
pub mod revision;
pub mod serve;
pub mod session;
pub mod source;
pub mod status;
pub mod store;
pub mod tokens;
pub mod validate;
pub mod web;
pub mod yaml;

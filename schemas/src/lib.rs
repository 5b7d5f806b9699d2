//! `touchline-schemas`: the contract between the Touchline controller and its
//! agents. No I/O lives here: only types, parsing, canonical encoding,
//! digests and signatures, so that both sides (and any third-party tool)
//! agree byte for byte.
//!
//! Layout:
//! - [`id`], [`path`], [`duration`]: validated newtypes parsed once at the
//!   edge (site, group and video ids, release versions, sha256, safe target
//!   paths, human durations).
//! - [`manifest`]: what operators write in the manifests repository; unknown
//!   fields are refused.
//! - [`bundle`]: the rendered per-site bundle, its canonical JSON, limits and
//!   the verification order the agent follows; unknown fields are tolerated.
//! - [`sign`]: SSHSIG (OpenSSH signature format) over Ed25519.
//! - [`report`]: what agents report.
//! - [`schema`]: the JSON Schemas generated from these types.
//!
//! Test with `cargo test -p touchline-schemas`; the checked-in JSON Schemas
//! are compared against the types by `tests/json_schemas.rs`
//! (`TOUCHLINE_BLESS=1` rewrites them).

pub mod action;
pub mod bundle;
pub mod canonical;
pub mod duration;
pub mod enroll;
pub mod id;
pub mod manifest;
pub mod neopro;
pub mod path;
pub mod report;
pub mod rollout;
pub mod schema;
pub mod sign;

pub use bundle::{Bundle, BundleError, BundleFile, Expectations, verify_bundle};
pub use duration::HumanDuration;
pub use id::{GroupId, IdError, LabelKey, ReleaseVersion, Sha256, SiteId, VideoId};
pub use path::{PathError, TargetPath};
pub use sign::{NAMESPACE, SigningKey, TrustedKeys};

//! External tools: outside CI a missing one skips the test with the reason
//! printed; in CI (`CI=true`) it fails the test (`.ci/run` installs them).

use std::path::PathBuf;

/// Whether this run is in CI.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Looks a program up on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// The program's path (on `PATH`, or at one of `also`); outside CI `None`
/// with a printed reason when it is missing; in CI a missing tool panics.
pub fn require_tool(program: &str, install_hint: &str) -> Option<PathBuf> {
    require_tool_at(program, &[], install_hint)
}

/// [`require_tool`], also looking at fixed paths (`/usr/sbin/nginx`).
pub fn require_tool_at(program: &str, also: &[&str], install_hint: &str) -> Option<PathBuf> {
    let found = also
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which(program));
    match found {
        Some(p) => Some(p),
        None if in_ci() => panic!("`{program}` is required in CI: {install_hint}"),
        None => {
            eprintln!(
                "SKIPPED: `{program}` is not installed ({install_hint}); `.ci/run` installs it"
            );
            None
        }
    }
}

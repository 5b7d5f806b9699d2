//! What the controller's benchmarks share: a token for every site of a
//! synthetic fleet, the operator they act as, readings of `/proc`, and the
//! change to the fleet that touches every site.

// Each benchmark uses some of these.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use touchline_controller::redb_store::RedbStore;
use touchline_controller::store::Store;
use touchline_controller::tokens::Token;
use touchline_testkit::ControllerFiles;

/// Mints a token for each of the `sites` synthetic sites (`site-00000`…)
/// straight into the store, before the controller starts; `(site, token)`.
pub fn mint_site_tokens(store: &RedbStore, sites: usize) -> Vec<(String, String)> {
    (0..sites)
        .map(|i| {
            let site = touchline_schemas::SiteId::new(&format!("site-{i:05}")).unwrap();
            let t = Token::generate().unwrap();
            store.set_site_token(&site, &t.hash()).unwrap();
            (site.to_string(), t.reveal().to_owned())
        })
        .collect()
}

/// A synthetic fleet of `sites` sites (60 groups, 200 videos) in a git
/// repository, a token minted for each, and the config of one admin
/// operator `name` with `token`; `(files, [(site, token)])`.
pub fn synthetic_fleet(
    sites: usize,
    name: &str,
    token: &str,
) -> (ControllerFiles, Vec<(String, String)>) {
    let files = ControllerFiles::with_repo(|repo| {
        touchline_testkit::synthetic::generate(
            repo,
            &touchline_testkit::synthetic::Size {
                sites,
                groups: 60,
                videos: 200,
            },
        );
    });
    let tokens = mint_site_tokens(&RedbStore::open(&files.data()).unwrap(), sites);
    admin_config(&files, name, token);
    (files, tokens)
}

/// The controller config: one admin operator `name` with `token`.
pub fn admin_config(files: &ControllerFiles, name: &str, token: &str) {
    files.config(&format!(
        "[[operators]]\nname = \"{name}\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        Token::new(token).hash().to_hex()
    ));
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 when gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sets the fleet-wide `volume:` of the synthetic fleet in `repo` (not
/// committed): a change every site's bundle carries.
pub fn set_fleet_volume(repo: &Path, volume: u32) {
    let file = repo.join("fleet.yaml");
    let fleet = std::fs::read_to_string(&file).unwrap();
    let changed: String = fleet
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("volume:") {
                format!("      volume: {volume}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(changed, fleet, "the fleet sets a volume");
    std::fs::write(file, changed).unwrap();
}

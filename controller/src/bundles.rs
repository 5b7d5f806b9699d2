//! Rendering and signing every site at once, on every core, and writing the
//! result to a directory: `<site>.json` (the exact signed bytes) and, with a
//! key, `<site>.json.sig`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow};
use touchline_schemas::{SigningKey, SiteId};

use crate::render::{BundleMeta, CatalogIndex, render_site};
use crate::validate::Checked;

/// One site's bundle bytes and, when signed, its armored signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The site.
    pub site: SiteId,
    /// Canonical bundle bytes.
    pub body: Vec<u8>,
    /// SSHSIG over `body`.
    pub signature: Option<String>,
    /// Digest of the desired state alone (serial, commit and times left
    /// out): equal digests mean the box has nothing new to do. Computed on
    /// request (it costs a second serialization).
    pub desired: Option<touchline_schemas::Sha256>,
}

/// The digest of a bundle's desired state, without serial, commit and times.
pub fn desired_digest(b: &touchline_schemas::Bundle) -> touchline_schemas::Sha256 {
    let normalized = touchline_schemas::Bundle {
        serial: 0,
        step: 0,
        commit: None,
        issued_at: jiff::Timestamp::UNIX_EPOCH,
        expires_at: jiff::Timestamp::UNIX_EPOCH,
        ..b.clone()
    };
    normalized.digest()
}

/// Signs the bundles that are not signed yet, on every core.
pub fn sign_all(key: &SigningKey, items: &mut [Signed]) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(chunk)
            .map(|part| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for s in part.iter_mut().filter(|s| s.signature.is_none()) {
                        s.signature = Some(key.sign(&s.body).with_context(|| {
                            format!("failed to sign the bundle of `{}`", s.site)
                        })?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a signing thread panicked"))??;
        }
        Ok(())
    })
}

/// Renders (and signs, with a key) every site of `checked`, in site order;
/// with `desired`, also computes each bundle's desired-state digest.
pub fn render_all(
    checked: &Checked,
    meta: &BundleMeta,
    key: Option<&SigningKey>,
    desired: bool,
) -> anyhow::Result<Vec<Signed>> {
    let sites: Vec<&SiteId> = checked.manifests.sites.keys().collect();
    render_sites(checked, &sites, meta, key, desired)
}

/// [`render_all`] for `sites` alone, in their order.
pub fn render_sites(
    checked: &Checked,
    sites: &[&SiteId],
    meta: &BundleMeta,
    key: Option<&SigningKey>,
    desired: bool,
) -> anyhow::Result<Vec<Signed>> {
    let catalog = CatalogIndex::new(&checked.manifests);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(sites.len().max(1));
    let chunk = sites.len().div_ceil(threads).max(1);
    let one = |site: &SiteId| -> anyhow::Result<Signed> {
        let r = render_site(&checked.manifests, &checked.members, &catalog, site, meta)?;
        let body = r.bundle.to_canonical_json();
        let desired = desired.then(|| desired_digest(&r.bundle));
        let signature = key
            .map(|k| k.sign(&body))
            .transpose()
            .with_context(|| format!("failed to sign the bundle of `{site}`"))?;
        Ok(Signed {
            site: site.clone(),
            body,
            signature,
            desired,
        })
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .chunks(chunk)
            .map(|part| {
                let one = &one;
                scope.spawn(move || {
                    part.iter()
                        .map(|s| one(s))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(sites.len());
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow!("a rendering thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// Renders (and signs) every site into `out`; returns how many.
///
/// Files are written in place: a reader racing the writer could see a torn
/// `<site>.json`, and its signature check would refuse it (nothing outside
/// the signed bytes is trusted). The controller serves bundles from its
/// store, not from this directory.
pub fn write_all(
    checked: &Checked,
    meta: &BundleMeta,
    out: &Path,
    key: Option<&SigningKey>,
) -> anyhow::Result<usize> {
    let all = render_all(checked, meta, key, false)?;
    for s in &all {
        write(&out.join(format!("{}.json", s.site)), &s.body)?;
        if let Some(sig) = &s.signature {
            write(&out.join(format!("{}.json.sig", s.site)), sig.as_bytes())?;
        }
    }
    Ok(all.len())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)
        .with_context(|| format!("failed to create `{}`", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("failed to write `{}`", path.display()))
}

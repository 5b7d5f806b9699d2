//! Writing rendered bundles to a directory: `<site>.json` (the exact signed
//! bytes) and, with a key, `<site>.json.sig`. Rendering and signing run on
//! every core; each file is written to a temporary and renamed, so a reader
//! never sees half a bundle.

use std::path::Path;

use anyhow::{Context, anyhow};
use touchline_schemas::{SigningKey, SiteId};

use crate::render::{BundleMeta, CatalogIndex, render_site};
use crate::validate::Checked;

/// Renders (and signs) every site of `checked` into `out`; returns how many.
pub fn write_all(
    checked: &Checked,
    meta: &BundleMeta,
    out: &Path,
    key: Option<&SigningKey>,
) -> anyhow::Result<usize> {
    let sites: Vec<&SiteId> = checked.manifests.sites.keys().collect();
    let catalog = CatalogIndex::new(&checked.manifests);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(sites.len().max(1));
    let chunk = sites.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = sites
            .chunks(chunk)
            .map(|part| {
                let catalog = &catalog;
                scope.spawn(move || -> anyhow::Result<()> {
                    for site in part {
                        let r =
                            render_site(&checked.manifests, &checked.members, catalog, site, meta)?;
                        let bytes = r.bundle.to_canonical_json();
                        write_atomic(&out.join(format!("{site}.json")), &bytes)?;
                        if let Some(key) = key {
                            let sig = key.sign(&bytes).with_context(|| {
                                format!("failed to sign the bundle of `{site}`")
                            })?;
                            write_atomic(&out.join(format!("{site}.json.sig")), sig.as_bytes())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("a rendering thread panicked"))??;
        }
        Ok(sites.len())
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".touchline-")
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{}`", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(())
}

//! Deterministic example content, so that the example fleet's catalog names
//! real bytes without committing videos: the content of catalog entry `id`
//! of `size` bytes is the concatenation of
//! `sha256("touchline-example\0" || id || "\0" || counter as u64 LE)` blocks,
//! cut to `size`. Release packages (`release-<version>`) are real tar.gz
//! archives of a tiny stand-in NEOPRO app ([`example_release`]), so that the
//! demo's boxes install, health check and switch them.
//! `touchline content generate-example` writes the files and checks each
//! against the manifests' sha256.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Writes the example content of `id` (`size` bytes) to `out`; returns its
/// sha256.
pub fn write_example<W: Write>(id: &str, size: u64, mut out: W) -> io::Result<[u8; 32]> {
    if let Some(version) = id.strip_prefix("release-") {
        let bytes = example_release(version)?;
        out.write_all(&bytes)?;
        out.flush()?;
        return Ok(Sha256::digest(&bytes).into());
    }
    let mut whole = Sha256::new();
    let mut left = size;
    let mut counter: u64 = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    while left > 0 {
        buf.clear();
        while buf.len() < 64 * 1024 && left > 0 {
            let mut h = Sha256::new();
            h.update(b"touchline-example\0");
            h.update(id.as_bytes());
            h.update(b"\0");
            h.update(counter.to_le_bytes());
            let block = h.finalize();
            let take = usize::try_from(left.min(32)).unwrap_or(32);
            buf.extend_from_slice(&block[..take]);
            left -= take as u64;
            counter += 1;
        }
        whole.update(&buf);
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(whole.finalize().into())
}

/// The example release package of `version`: a deterministic tar.gz
/// (fixed order, modes, owners and times) holding `VERSION`, `bin/neopro`
/// (a POSIX shell script; `sh bin/neopro health` is the example fleet's
/// health check) and `www/index.html`.
pub fn example_release(version: &str) -> io::Result<Vec<u8>> {
    let script = format!(
        "#!/bin/sh\n# Stand-in NEOPRO player of the Touchline example fleet, release {version}.\nhere=\"$(cd \"$(dirname \"$0\")/..\" && pwd)\"\ncase \"$1\" in\n  health) test -f \"$here/www/index.html\" && echo \"neopro $(cat \"$here/VERSION\"): ok\" ;;\n  version) cat \"$here/VERSION\" ;;\n  *) echo \"usage: neopro health|version\" >&2; exit 2 ;;\nesac\n"
    );
    let page = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>NEOPRO {version}</title>\n<h1>NEOPRO {version}</h1>\n<p>Lecteur de démonstration (flotte d'exemple Touchline).</p>\n"
    );
    let files: [(&str, Vec<u8>, u32); 3] = [
        ("VERSION", format!("{version}\n").into_bytes(), 0o644),
        ("bin/neopro", script.into_bytes(), 0o755),
        ("www/index.html", page.into_bytes(), 0o644),
    ];
    let mut gz = Vec::new();
    {
        let enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(&mut gz, flate2::Compression::best());
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        for dir in ["bin/", "www/"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(0);
            tar.append_data(&mut h, dir, io::empty())?;
        }
        for (path, data, mode) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(0);
            tar.append_data(&mut h, path, data.as_slice())?;
        }
        tar.into_inner()?.finish()?;
    }
    Ok(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let mut a = Vec::new();
        let ha = write_example("x", 100_000, &mut a).unwrap();
        let mut b = Vec::new();
        let hb = write_example("x", 100_000, &mut b).unwrap();
        assert_eq!(a.len(), 100_000);
        assert_eq!((a.clone(), ha), (b, hb));
        let direct: [u8; 32] = Sha256::digest(&a).into();
        assert_eq!(ha, direct);
        let mut c = Vec::new();
        write_example("y", 100_000, &mut c).unwrap();
        assert_ne!(a, c);
        let mut d = Vec::new();
        write_example("x", 33, &mut d).unwrap();
        assert_eq!(&d[..], &a[..33]);
    }

    #[test]
    fn example_releases_are_deterministic_tarballs() {
        let a = example_release("2.1.3").unwrap();
        assert_eq!(a, example_release("2.1.3").unwrap());
        assert_ne!(a, example_release("2.1.2").unwrap());
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["bin/", "www/", "VERSION", "bin/neopro", "www/index.html"]
        );
    }
}

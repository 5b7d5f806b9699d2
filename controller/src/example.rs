//! Deterministic example content, so that the example fleet's catalog names
//! real bytes without committing videos: the content of catalog entry `id`
//! of `size` bytes is the concatenation of
//! `sha256("touchline-example\0" || id || "\0" || counter as u64 LE)` blocks,
//! cut to `size`. `touchline content generate-example` writes the files and
//! checks each against the catalog's sha256.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Writes the example content of `id` (`size` bytes) to `out`; returns its
/// sha256.
pub fn write_example<W: Write>(id: &str, size: u64, mut out: W) -> io::Result<[u8; 32]> {
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
}

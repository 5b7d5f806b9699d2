//! One-time enrollment codes and the sealed answer that carries a new
//! box's identity.
//!
//! A code is 16 symbols of Crockford's base32 (80 random bits), shown as
//! `K7QF-2MXD-9RTA-PL4C`. Neither side ever sends it: from the code, HKDF
//! (SHA-256) derives
//! - a **lookup id**, which the box sends; the controller files the code
//!   under the lookup id's sha256 ([`LookupId::storage_key`]), so its store
//!   holds nothing that redeems a code, and the code itself is stored
//!   nowhere;
//! - a **seal key**, with which the controller encrypts and authenticates
//!   its answer (ChaCha20-Poly1305, the lookup id as associated data); the
//!   controller keeps it wrapped with a key derived from the lookup id
//!   ([`SealKey::wrap`]), which only the box's request brings.
//!
//! A controller that did not mint the code knows neither, so it cannot
//! answer with its own keys or settings: the box refuses any answer that
//! does not open with the key only the code and the minting controller
//! share. Whoever watches the exchange sees the lookup id and ciphertext,
//! never the site token.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::SiteId;

/// The symbols of a code: digits and capitals without I, L, O and U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a code (5 bits each: 80 bits).
pub const CODE_SYMBOLS: usize = 16;
/// The path a box posts its lookup id to.
pub const ENROLL_PATH: &str = "/v1/enroll";
/// Largest enrollment request body the controller reads.
pub const MAX_REQUEST_BYTES: usize = 1024;
/// The agent.toml keys that make a box's identity: an enrollment writes
/// them from its answer, never from settings (the controller's
/// `[enrollment.agent]` or the box's own).
pub const IDENTITY_KEYS: [&str; 5] = [
    "site_id",
    "token",
    "token_file",
    "trusted_keys",
    "controller_url",
];
/// Largest sealed answer a box reads.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

const SALT: &[u8] = b"touchline enrollment v1";
const LOOKUP_INFO: &[u8] = b"lookup";
const SEAL_INFO: &[u8] = b"seal";
const WRAP_INFO: &[u8] = b"wrap";
const STORE_PREFIX: &[u8] = b"touchline enrollment store v1\0";

/// A one-time enrollment code (a secret: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollCode([u8; CODE_SYMBOLS]);

impl fmt::Debug for EnrollCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrollCode(…)")
    }
}

/// Why typed text is not a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Too few or too many symbols.
    #[error(
        "an enrollment code has {CODE_SYMBOLS} letters and digits (like K7QF-2MXD-9RTA-PL4C); this one has {0}: check it was copied whole"
    )]
    Length(usize),
    /// A character no code holds.
    #[error(
        "`{0}` (symbol {1}) is not in an enrollment code: codes use the digits and the letters A-Z without I, L, O and U; check it was typed right"
    )]
    Character(char, usize),
}

impl EnrollCode {
    /// A fresh code: 80 bits from the OS.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 10];
        getrandom::fill(&mut bytes)?;
        let mut bits: u128 = 0;
        for b in bytes {
            bits = (bits << 8) | u128::from(b);
        }
        let mut out = [0u8; CODE_SYMBOLS];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (CODE_SYMBOLS - 1 - i);
            *slot = ALPHABET[((bits >> shift) & 31) as usize];
        }
        Ok(Self(out))
    }

    /// Reads a code as a person typed it: any case, with or without dashes
    /// and spaces; `O` reads as `0`, `I` and `L` as `1`.
    pub fn parse(text: &str) -> Result<Self, CodeError> {
        let mut out = [0u8; CODE_SYMBOLS];
        let mut n = 0usize;
        for c in text.trim().chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            let up = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            let known = u8::try_from(up).ok().filter(|b| ALPHABET.contains(b));
            match known {
                Some(b) => {
                    if n < CODE_SYMBOLS {
                        out[n] = b;
                    }
                    n += 1;
                }
                None => return Err(CodeError::Character(c, n + 1)),
            }
        }
        if n != CODE_SYMBOLS {
            return Err(CodeError::Length(n));
        }
        Ok(Self(out))
    }

    /// The code as shown to people: four groups of four.
    pub fn reveal(&self) -> String {
        let s: Vec<String> = self
            .0
            .chunks(4)
            .map(|c| c.iter().map(|&b| char::from(b)).collect())
            .collect();
        s.join("-")
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(SALT), &self.0).expand(info, &mut out);
        out
    }

    /// What the box sends and the controller stores.
    pub fn lookup(&self) -> LookupId {
        LookupId(hex::encode(self.derive(LOOKUP_INFO)))
    }

    /// The key of the answer.
    pub fn seal_key(&self) -> SealKey {
        SealKey(self.derive(SEAL_INFO))
    }
}

/// The lookup id of a code: 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LookupId(String);

impl LookupId {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the controller files a code under: the sha256 of the lookup
    /// id (64 hex digits). Whoever reads the store cannot present it.
    pub fn storage_key(&self) -> String {
        let mut h = <Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, STORE_PREFIX);
        sha2::Digest::update(&mut h, self.0.as_bytes());
        hex::encode(sha2::Digest::finalize(h))
    }

    fn wrap_cipher(&self) -> ChaCha20Poly1305 {
        let mut k = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit: cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(SALT), self.0.as_bytes()).expand(WRAP_INFO, &mut k);
        ChaCha20Poly1305::new(&k.into())
    }
}

impl TryFrom<String> for LookupId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s))
        } else {
            Err("a lookup id is 64 lower-case hex digits".into())
        }
    }
}

impl From<LookupId> for String {
    fn from(l: LookupId) -> String {
        l.0
    }
}

impl fmt::Display for LookupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key that seals an answer (secret: `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(…)")
    }
}

/// Why a sealed answer did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The nonce or ciphertext is not hex of the right size.
    #[error("the answer is not a sealed enrollment answer ({0})")]
    Malformed(&'static str),
    /// Authentication failed.
    #[error(
        "the answer is not sealed with this code's key: it does not come from the controller that minted the code (a wrong address, or someone in between)"
    )]
    Forged,
    /// The OS gave no randomness.
    #[error("no randomness for a nonce: {0}")]
    Random(String),
}

impl SealKey {
    /// The key as the controller stores it: encrypted with a key derived
    /// from `lookup` (hex of nonce and ciphertext).
    pub fn wrap(&self, lookup: &LookupId) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ct = lookup
            .wrap_cipher()
            .encrypt(&Nonce::from(nonce), &self.0[..])
            .map_err(|_| SealError::Malformed("too long to seal"))?;
        Ok(format!("{}{}", hex::encode(nonce), hex::encode(ct)))
    }

    /// The stored key, unwrapped with the `lookup` a box presented.
    pub fn unwrap(lookup: &LookupId, wrapped: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(wrapped).map_err(|_| SealError::Malformed("not hex"))?;
        if bytes.len() != 12 + 32 + 16 {
            return Err(SealError::Malformed("not a wrapped key"));
        }
        let (nonce, ct) = bytes.split_at(12);
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        let plain = lookup
            .wrap_cipher()
            .decrypt(&Nonce::from(n), ct)
            .map_err(|_| SealError::Forged)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&plain);
        Ok(Self(out))
    }

    /// Encrypts and authenticates `plain`, bound to `lookup`.
    pub fn seal(&self, lookup: &LookupId, plain: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let cipher = ChaCha20Poly1305::new(&self.0.into());
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: lookup.as_str().as_bytes(),
                },
            )
            .map_err(|_| SealError::Malformed("too long to seal"))?;
        Ok(Sealed {
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        })
    }

    /// Opens an answer sealed for `lookup`: the plaintext, or why not.
    pub fn open(&self, lookup: &LookupId, s: &Sealed) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; 12];
        hex::decode_to_slice(&s.nonce, &mut nonce)
            .map_err(|_| SealError::Malformed("nonce is not 24 hex digits"))?;
        let sealed =
            hex::decode(&s.sealed).map_err(|_| SealError::Malformed("sealed is not hex"))?;
        ChaCha20Poly1305::new(&self.0.into())
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed,
                    aad: lookup.as_str().as_bytes(),
                },
            )
            .map_err(|_| SealError::Forged)
    }
}

/// A box's request: `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The code's lookup id.
    pub lookup: LookupId,
    /// The box's host name, for the audit log and the site page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// The controller's answer on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// 12 bytes, hex.
    pub nonce: String,
    /// Ciphertext and tag, hex.
    pub sealed: String,
}

/// What a sealed answer holds.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollAnswer {
    /// The box's site.
    pub site_id: SiteId,
    /// Its site token (secret).
    pub token: String,
    /// The public keys whose bundle signatures the box accepts
    /// (`authorized_keys` lines).
    pub trusted_keys: String,
    /// The controller's public address, when configured (else the box keeps
    /// the one it enrolled with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_url: Option<String>,
    /// Agent settings for new boxes (agent.toml keys: strings, whole
    /// numbers, lists of strings), from the controller's config.
    #[serde(default)]
    pub agent: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for EnrollAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollAnswer")
            .field("site_id", &self.site_id)
            .field("token", &"…")
            .field("controller_url", &self.controller_url)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_typeable_and_read_back_as_typed() {
        let a = EnrollCode::generate().unwrap();
        let b = EnrollCode::generate().unwrap();
        assert_ne!(a, b);
        let shown = a.reveal();
        assert_eq!(shown.len(), 19);
        assert_eq!(shown.matches('-').count(), 3);
        assert_eq!(EnrollCode::parse(&shown).unwrap(), a);
        // Lower case, spaces instead of dashes, O for 0 and l for 1.
        let typed = shown.to_lowercase().replace('-', " ");
        assert_eq!(EnrollCode::parse(&typed).unwrap(), a);
        let c = EnrollCode::parse("K7QF-2MXD-9RTA-P14C").unwrap();
        assert_eq!(EnrollCode::parse("k7qf2mxd9rtapl4c").unwrap(), c);
        assert_eq!(EnrollCode::parse("K7QF-2MXD-9RTA-PI4C").unwrap(), c);
        assert_eq!(format!("{a:?}"), "EnrollCode(…)");
    }

    #[test]
    fn mistyped_codes_say_what_is_wrong() {
        assert_eq!(
            EnrollCode::parse("K7QF-2MXD-9RTA-PL4").unwrap_err(),
            CodeError::Length(15)
        );
        assert_eq!(
            EnrollCode::parse("K7QF-2MXD-9RTA-PL4CC").unwrap_err(),
            CodeError::Length(17)
        );
        let e = EnrollCode::parse("K7QF-2MXU-9RTA-PL4C").unwrap_err();
        assert_eq!(e, CodeError::Character('U', 8));
        assert!(e.to_string().contains("without I, L, O and U"), "{e}");
        assert_eq!(
            EnrollCode::parse("K7QF-2MXÉ-9RTA-PL4C").unwrap_err(),
            CodeError::Character('É', 8)
        );
    }

    #[test]
    fn the_five_bit_symbols_cover_eighty_bits() {
        // Every symbol of the alphabet appears in some position over many
        // codes, and no two of 2,000 codes collide.
        let mut seen = std::collections::HashSet::new();
        let mut symbols = std::collections::HashSet::new();
        for _ in 0..2000 {
            let c = EnrollCode::generate().unwrap();
            symbols.extend(c.0);
            assert!(seen.insert(c.reveal()));
        }
        assert_eq!(symbols.len(), 32);
    }

    #[test]
    fn only_the_minting_side_can_seal_an_answer_the_box_opens() {
        let code = EnrollCode::generate().unwrap();
        let lookup = code.lookup();
        assert_ne!(lookup.as_str(), code.reveal());
        let key = code.seal_key();
        let sealed = key.seal(&lookup, b"{\"site_id\":\"x\"}").unwrap();
        assert_eq!(key.open(&lookup, &sealed).unwrap(), b"{\"site_id\":\"x\"}");
        // The stored form reads back with the lookup id, and only with it.
        let wrapped = key.wrap(&lookup).unwrap();
        let stored = SealKey::unwrap(&lookup, &wrapped).unwrap();
        assert_eq!(stored.open(&lookup, &sealed).unwrap().len(), 15);
        let other_lookup = EnrollCode::generate().unwrap().lookup();
        assert_eq!(
            SealKey::unwrap(&other_lookup, &wrapped).unwrap_err(),
            SealError::Forged
        );
        assert!(!wrapped.contains(&hex::encode(key.0)));
        // The store's key is not the lookup id.
        assert_eq!(lookup.storage_key().len(), 64);
        assert_ne!(lookup.storage_key(), lookup.as_str());
        // Another code's key (a controller that did not mint it) is refused.
        let other = EnrollCode::generate().unwrap().seal_key();
        let forged = other.seal(&lookup, b"{\"site_id\":\"evil\"}").unwrap();
        assert_eq!(key.open(&lookup, &forged).unwrap_err(), SealError::Forged);
        // A flipped bit is refused.
        let mut bad = sealed.clone();
        let flip = if bad.sealed.starts_with('0') {
            "1"
        } else {
            "0"
        };
        bad.sealed.replace_range(0..1, flip);
        assert_eq!(key.open(&lookup, &bad).unwrap_err(), SealError::Forged);
        // An answer sealed for another lookup id is refused.
        let elsewhere = EnrollCode::generate().unwrap().lookup();
        let moved = key.seal(&elsewhere, b"{}").unwrap();
        assert_eq!(key.open(&lookup, &moved).unwrap_err(), SealError::Forged);
        assert!(matches!(
            key.open(
                &lookup,
                &Sealed {
                    nonce: "zz".into(),
                    sealed: String::new()
                }
            ),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn lookup_ids_are_checked_when_read() {
        let ok: Result<LookupId, _> = serde_json::from_str(&format!("\"{}\"", "a".repeat(64)));
        assert!(ok.is_ok());
        for bad in ["\"abc\"", &format!("\"{}\"", "A".repeat(64))] {
            assert!(serde_json::from_str::<LookupId>(bad).is_err(), "{bad}");
        }
    }
}

//! SSHSIG signatures (the OpenSSH format git uses for signed commits) over
//! the exact bundle bytes, with Ed25519 keys.
//!
//! A bundle signed here verifies with the stock tool:
//!
//! ```text
//! ssh-keygen -Y verify -f allowed_signers -I touchline -n bundle@touchline \
//!     -s bundle.json.sig < bundle.json
//! ```

pub use ssh_key::HashAlg;
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey, SshSig};

/// The SSHSIG namespace of bundle signatures: a signature made for another
/// purpose (a git commit, a file) can never pass as a bundle signature.
pub const NAMESPACE: &str = "bundle@touchline";
/// Largest signature file accepted, checked before parsing.
pub const MAX_SIGNATURE_BYTES: usize = 16 * 1024;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not an OpenSSH private key.
    #[error("not an OpenSSH private key: {0}")]
    Private(ssh_key::Error),
    /// Passphrase-protected keys cannot sign unattended.
    #[error(
        "the private key is encrypted with a passphrase; the controller needs an unencrypted key (protect it with file permissions)"
    )]
    Encrypted,
    /// Only Ed25519.
    #[error("the key is {0}, but Touchline signs with Ed25519 keys only (ssh-keygen -t ed25519)")]
    Algorithm(String),
    /// A line of a trusted-keys file did not hold a public key.
    #[error(
        "line {line}: no public key found (expected `ssh-ed25519 AAAA…` or an allowed_signers line)"
    )]
    PublicLine {
        /// 1-based line number.
        line: usize,
    },
    /// A key line was found but does not parse.
    #[error("line {line}: invalid public key")]
    Public {
        /// 1-based line number.
        line: usize,
        /// The parser's reason.
        source: ssh_key::Error,
    },
    /// The file lists no key at all.
    #[error("no public key found: a trusted-keys file needs at least one `ssh-ed25519 AAAA…` line")]
    Empty,
    /// Encoding failed.
    #[error("failed to encode the key: {0}")]
    Encode(ssh_key::Error),
}

/// Why a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Over [`MAX_SIGNATURE_BYTES`].
    #[error("signature is {0} bytes, over the {MAX_SIGNATURE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not an SSHSIG PEM block.
    #[error("not an SSH signature (expected a `-----BEGIN SSH SIGNATURE-----` block): {0}")]
    Parse(ssh_key::Error),
    /// Parsed, but not in the canonical encoding (altered in transit).
    #[error(
        "signature is malformed (not the canonical SSHSIG encoding): it was altered or truncated"
    )]
    NotCanonical,
    /// Made for another purpose.
    #[error("signature namespace is `{found}`, expected `{expected}`")]
    Namespace {
        /// The signature's namespace.
        found: String,
        /// The one required.
        expected: String,
    },
    /// Made by a key that is not trusted.
    #[error("signed by untrusted key {fingerprint}; trusted: {trusted}")]
    Untrusted {
        /// SHA256 fingerprint of the signing key.
        fingerprint: String,
        /// Fingerprints of the trusted keys.
        trusted: String,
    },
    /// The key is trusted but the bytes do not match.
    #[error(
        "signature by {fingerprint} does not match the bundle bytes (modified in transit or on disk)"
    )]
    Mismatch {
        /// SHA256 fingerprint of the signing key.
        fingerprint: String,
    },
    /// Signing failed.
    #[error("failed to sign: {0}")]
    Sign(ssh_key::Error),
}

/// The controller's signing key.
///
/// Signing builds the SSHSIG envelope with `ssh-key` and computes the Ed25519
/// signature with a cached `ed25519-dalek` key: `PrivateKey::sign` rebuilds
/// and re-checks the dalek key on every call, which tripled the cost of
/// signing ten thousand bundles.
#[derive(Clone)]
pub struct SigningKey {
    key: PrivateKey,
    dalek: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public_key_openssh())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random Ed25519 key.
    pub fn generate() -> Self {
        let mut rng = ssh_key::rand_core::OsRng;
        // Ed25519 key generation only draws 32 random bytes; it cannot fail
        // for this algorithm short of the OS RNG failing, which panics in
        // getrandom anyway.
        let key = match PrivateKey::random(&mut rng, Algorithm::Ed25519) {
            Ok(k) => k,
            Err(e) => panic!("failed to generate an Ed25519 key: {e}"),
        };
        match Self::from_private(key) {
            Ok(k) => k,
            Err(e) => panic!("failed to generate an Ed25519 key: {e}"),
        }
    }

    fn from_private(key: PrivateKey) -> Result<Self, KeyError> {
        let Some(pair) = key.key_data().ed25519() else {
            return Err(KeyError::Algorithm(key.algorithm().to_string()));
        };
        let dalek = ed25519_dalek::SigningKey::try_from(pair).map_err(KeyError::Private)?;
        Ok(Self { key, dalek })
    }

    /// Parses an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn from_openssh(text: &[u8]) -> Result<Self, KeyError> {
        let key = PrivateKey::from_openssh(text).map_err(KeyError::Private)?;
        if key.is_encrypted() {
            return Err(KeyError::Encrypted);
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::Algorithm(key.algorithm().to_string()));
        }
        Self::from_private(key)
    }

    /// The private key in OpenSSH format (keep it 0600).
    pub fn to_openssh(&self) -> Result<String, KeyError> {
        self.key
            .to_openssh(LineEnding::LF)
            .map(|z| z.as_str().to_owned())
            .map_err(KeyError::Encode)
    }

    /// Sets the key comment (shown in the public key line).
    pub fn set_comment(&mut self, comment: &str) {
        self.key.set_comment(comment);
    }

    /// The public key line, e.g. `ssh-ed25519 AAAA… touchline`.
    pub fn public_key_openssh(&self) -> String {
        // Encoding an in-memory Ed25519 public key does not fail.
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// `SHA256:…` fingerprint.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// Signs `msg`; returns the armored signature (`bundle.json.sig`).
    pub fn sign(&self, msg: &[u8]) -> Result<String, SignatureError> {
        self.sign_in(NAMESPACE, msg)
    }

    /// Signs `msg` in `namespace` (a signature made for one purpose never
    /// verifies for another: `action@touchline` is not `bundle@touchline`).
    pub fn sign_in(&self, namespace: &str, msg: &[u8]) -> Result<String, SignatureError> {
        use ed25519_dalek::Signer as _;
        let signed_data =
            SshSig::signed_data(namespace, HashAlg::Sha512, msg).map_err(SignatureError::Sign)?;
        let raw = self.dalek.sign(&signed_data);
        let signature = ssh_key::Signature::new(Algorithm::Ed25519, raw.to_bytes().to_vec())
            .map_err(SignatureError::Sign)?;
        SshSig::new(
            self.key.public_key().key_data().clone(),
            namespace,
            HashAlg::Sha512,
            signature,
        )
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(SignatureError::Sign)
    }
}

/// The public keys a box trusts.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// Parses one key per line, as in `authorized_keys` (`ssh-ed25519 AAAA…
    /// comment`) or `allowed_signers` (`principals [options] ssh-ed25519
    /// AAAA…`). Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(parse_key_line(line, i + 1)?);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// From keys already parsed.
    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Verifies an armored SSHSIG over `msg` in the bundle namespace;
    /// returns the key that signed.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<&PublicKey, SignatureError> {
        self.verify_in(NAMESPACE, msg, signature)
    }

    /// Verifies an armored SSHSIG over `msg` in `namespace` (`git` for
    /// SSH-signed git commits).
    pub fn verify_in(
        &self,
        namespace: &str,
        msg: &[u8],
        signature: &[u8],
    ) -> Result<&PublicKey, SignatureError> {
        if signature.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::TooLarge(signature.len()));
        }
        let sig = SshSig::from_pem(signature).map_err(SignatureError::Parse)?;
        // ssh-key's decoder tolerates some malformed length prefixes and
        // versions. Accept only the canonical encoding: re-encoding the parsed
        // signature must give back the same base64, so that no byte of a
        // signature can change without it being rejected.
        let canonical = sig.to_pem(LineEnding::LF).map_err(SignatureError::Parse)?;
        let strip = |t: &[u8]| -> Vec<u8> {
            t.iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect()
        };
        if strip(canonical.as_bytes()) != strip(signature) {
            return Err(SignatureError::NotCanonical);
        }
        if sig.namespace() != namespace {
            return Err(SignatureError::Namespace {
                found: sig.namespace().chars().take(64).collect(),
                expected: namespace.to_owned(),
            });
        }
        let signer = PublicKey::from(sig.public_key().clone());
        let fingerprint = signer.fingerprint(HashAlg::Sha256).to_string();
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            let trusted = self
                .keys
                .iter()
                .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SignatureError::Untrusted {
                fingerprint,
                trusted,
            });
        };
        // The algorithm label inside the signature blob is not covered by
        // the signature; ssh-key does not compare it with the key's, OpenSSH
        // does. Refuse a mismatch so that no byte of a signature can change
        // without the signature being rejected.
        if sig.signature().algorithm() != key.algorithm() || sig.version() != 1 {
            return Err(SignatureError::Mismatch { fingerprint });
        }
        key.verify(namespace, msg, &sig)
            .map_err(|_| SignatureError::Mismatch { fingerprint })?;
        Ok(key)
    }
}

/// Finds the key in an `authorized_keys` or `allowed_signers` line: the
/// first field that names a key algorithm starts the key.
fn parse_key_line(line: &str, lineno: usize) -> Result<PublicKey, KeyError> {
    let mut rest = line;
    loop {
        let field_start = rest.trim_start();
        if field_start.is_empty() {
            return Err(KeyError::PublicLine { line: lineno });
        }
        if is_key_algorithm(field_start) {
            return PublicKey::from_openssh(field_start).map_err(|source| KeyError::Public {
                line: lineno,
                source,
            });
        }
        // Skip one field; a quoted field (allowed_signers options such as
        // namespaces="a,b") may contain spaces.
        rest = skip_field(field_start);
    }
}

fn is_key_algorithm(field: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|p| field.starts_with(p))
}

fn skip_field(s: &str) -> &str {
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return &s[i..],
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).unwrap();
        let sig = key.sign(b"hello").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        trusted.verify(b"hello", sig.as_bytes()).unwrap();
        let err = trusted.verify(b"hellO", sig.as_bytes()).unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn untrusted_key_is_named() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let trusted = TrustedKeys::parse(&other.public_key_openssh()).unwrap();
        let err = trusted
            .verify(b"x", key.sign(b"x").unwrap().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key.fingerprint()), "{err}");
        assert!(err.contains(&other.fingerprint()), "{err}");
    }

    #[test]
    fn allowed_signers_and_authorized_keys_lines() {
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        let text = format!(
            "# comment\n\ntouchline,ops@example.org namespaces=\"bundle@touchline,file\" {}\n{} spare key\n",
            a.public_key_openssh(),
            b.public_key_openssh()
        );
        let trusted = TrustedKeys::parse(&text).unwrap();
        assert_eq!(trusted.keys().len(), 2);
        trusted
            .verify(b"m", b.sign(b"m").unwrap().as_bytes())
            .unwrap();
        trusted
            .verify(b"m", a.sign(b"m").unwrap().as_bytes())
            .unwrap();
    }

    #[test]
    fn bad_key_files() {
        assert!(matches!(
            TrustedKeys::parse("# nothing\n"),
            Err(KeyError::Empty)
        ));
        let err = TrustedKeys::parse("just words\n").unwrap_err().to_string();
        assert!(err.starts_with("line 1: no public key found"), "{err}");
        let err = TrustedKeys::parse("\nssh-ed25519 AAAAnotbase64\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: invalid public key"), "{err}");
        assert!(SigningKey::from_openssh(b"garbage").is_err());
    }

    #[test]
    fn the_fast_path_signs_exactly_like_ssh_key() {
        // Ed25519 is deterministic: the same key and message give the same
        // signature, so our envelope must equal ssh-key's own.
        let key = SigningKey::generate();
        let reference = key
            .key
            .sign(NAMESPACE, HashAlg::Sha512, b"msg")
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(key.sign(b"msg").unwrap(), reference);
    }

    #[test]
    fn private_key_round_trips() {
        let key = SigningKey::generate();
        let text = key.to_openssh().unwrap();
        let back = SigningKey::from_openssh(text.as_bytes()).unwrap();
        assert_eq!(back.public_key_openssh(), key.public_key_openssh());
    }

    #[test]
    fn any_changed_character_of_a_signature_is_rejected() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).unwrap();
        let sig = key.sign(b"bundle").unwrap();
        let lines: Vec<&str> = sig.lines().collect();
        let (first, last) = (1, lines.len() - 1);
        let mut tried = 0;
        for l in first..last {
            for i in 0..lines[l].len() {
                let mut changed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                let c = changed[l].as_bytes()[i];
                if c == b'=' {
                    continue;
                }
                let r = if c == b'A' { "B" } else { "A" };
                changed[l].replace_range(i..i + 1, r);
                let text = changed.join("\n");
                assert!(
                    trusted.verify(b"bundle", text.as_bytes()).is_err(),
                    "line {l} char {i} changed and still accepted"
                );
                tried += 1;
            }
        }
        assert!(tried > 200);
    }

    #[test]
    fn garbage_signatures() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).unwrap();
        assert!(matches!(
            trusted.verify(b"x", b"nope"),
            Err(SignatureError::Parse(_))
        ));
        let huge = vec![b'A'; MAX_SIGNATURE_BYTES + 1];
        assert!(matches!(
            trusted.verify(b"x", &huge),
            Err(SignatureError::TooLarge(_))
        ));
    }
}

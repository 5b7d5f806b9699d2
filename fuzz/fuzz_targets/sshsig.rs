//! SSHSIG parsing and verification: armored signatures and trusted-key
//! files from the input. Never a panic, never accepted unless it is the key's.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use touchline_schemas::{SigningKey, TrustedKeys};

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        TrustedKeys::parse(&SigningKey::generate().public_key_openssh()).expect("own key parses")
    })
}

fuzz_target!(|data: &[u8]| {
    // As a signature of a fixed message: a forgery never verifies.
    assert!(trusted().verify(b"bundle bytes", data).is_err());
    // As a trusted-keys file.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TrustedKeys::parse(text);
    }
});

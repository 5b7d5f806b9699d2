//! Bundle verification on bytes the controller's key signed: the parse and
//! every check after the signature (site, serial, times, paths, sizes).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use touchline_schemas::{Expectations, SigningKey, SiteId, TrustedKeys, verify_bundle};

struct Keys {
    key: SigningKey,
    trusted: TrustedKeys,
    site: SiteId,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::parse(&key.public_key_openssh()).expect("own key parses");
        Keys {
            key,
            trusted,
            site: SiteId::new("cesson-handball").expect("valid id"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let Ok(sig) = k.key.sign(data) else {
        return;
    };
    let now = jiff::Timestamp::from_second(1_795_000_000).expect("valid time");
    let expect = Expectations {
        site: &k.site,
        last_accepted: None,
        now,
    };
    if let Ok(b) = verify_bundle(data, sig.as_bytes(), &k.trusted, expect) {
        // An accepted bundle is its own canonical form again.
        let again = b.to_canonical_json();
        assert!(touchline_schemas::Bundle::from_slice(&again).is_ok());
    }
});

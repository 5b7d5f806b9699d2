//! Manifest parse + validate: one file of the example fleet (chosen by the
//! first byte) replaced by the input. Never a panic; libFuzzer's timeout
//! catches inputs whose time grows faster than their size.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use touchline_controller::source::{self, SourceSet};
use touchline_controller::validate;

fn example() -> &'static SourceSet {
    static SET: OnceLock<SourceSet> = OnceLock::new();
    SET.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet-manifests");
        source::read_dir(&root).expect("the example fleet reads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, yaml)) = data.split_first() else {
        return;
    };
    let mut set = example().clone();
    let i = usize::from(which) % set.files.len();
    set.files[i].content = Ok(yaml.to_vec());
    let checked = validate::check(&set);
    // Every diagnostic renders (positions inside the file, escaped names).
    for d in &checked.diags.0 {
        let _ = d.to_string();
    }
});

//! Records the build time: the agent never believes a clock earlier than
//! its own build (a Pi without a clock battery boots in 1970).
//! `SOURCE_DATE_EPOCH` wins for reproducible builds.

fn main() {
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    // Day resolution so that rebuilding the same day does not relink.
    println!(
        "cargo:rustc-env=TOUCHLINE_BUILD_EPOCH={}",
        epoch / 86_400 * 86_400
    );
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}

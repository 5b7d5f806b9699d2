//! The checked-in JSON Schemas must match the types. Run with
//! `TOUCHLINE_BLESS=1` to rewrite them after changing a type.

use std::path::Path;

#[test]
fn json_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let bless = std::env::var_os("TOUCHLINE_BLESS").is_some();
    let mut stale = Vec::new();
    for (name, schema) in touchline_schemas::schema::all() {
        let want = touchline_schemas::schema::render(&schema);
        let path = dir.join(name);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if bless {
                std::fs::write(&path, want).unwrap();
            } else {
                stale.push(name);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "checked-in JSON Schemas are out of date: {stale:?}; run `TOUCHLINE_BLESS=1 cargo test -p touchline-schemas --test json_schemas` and commit schemas/json/"
    );
}

#[test]
fn schemas_are_draft_2020_12_and_strict_for_manifests() {
    for (name, schema) in touchline_schemas::schema::all() {
        let v = serde_json::to_value(&schema).unwrap();
        assert_eq!(
            v["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        let strict = !matches!(name, "bundle.schema.json" | "report.schema.json");
        assert_eq!(v["additionalProperties"] == false, strict, "{name}");
    }
}

//! JSON Schemas (draft 2020-12) generated from the types, checked in under
//! `schemas/json/`. Editors use them for completion through the
//! `yaml-language-server` modeline in each manifest; CI validates the example
//! fleet with an independent validator. The test `json_schemas_are_current`
//! fails when the checked-in copies drift from the types.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};

use crate::bundle::Bundle;
use crate::manifest::{AgentRelease, Catalog, Fleet, Group, Release, Site};
use crate::report::ReportBatch;

fn schema_for<T: JsonSchema>(id: &str) -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert(
        "$id".into(),
        format!("https://touchline.invalid/schemas/{id}").into(),
    );
    schema
}

/// Every schema as `(file name, schema)`.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "fleet.schema.json",
            schema_for::<Fleet>("fleet.schema.json"),
        ),
        ("site.schema.json", schema_for::<Site>("site.schema.json")),
        (
            "group.schema.json",
            schema_for::<Group>("group.schema.json"),
        ),
        (
            "catalog.schema.json",
            schema_for::<Catalog>("catalog.schema.json"),
        ),
        (
            "release.schema.json",
            schema_for::<Release>("release.schema.json"),
        ),
        (
            "agent-release.schema.json",
            schema_for::<AgentRelease>("agent-release.schema.json"),
        ),
        (
            "bundle.schema.json",
            schema_for::<Bundle>("bundle.schema.json"),
        ),
        (
            "report.schema.json",
            schema_for::<ReportBatch>("report.schema.json"),
        ),
    ]
}

/// The text of a schema file as checked in (pretty JSON, trailing newline).
pub fn render(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

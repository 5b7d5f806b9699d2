//! The checked-in JSON Schemas, checked by an independent validator
//! (`check-jsonschema`, from PyPI): they accept the example fleet and reject
//! broken manifests from the corpus.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn schema(name: &str) -> PathBuf {
    touchline_testkit::repo_root()
        .join("schemas/json")
        .join(name)
}

fn check(tool: &Path, schema_name: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool)
        .arg("--schemafile")
        .arg(schema(schema_name))
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn yaml_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn schemas_accept_the_example_fleet() {
    let Some(tool) =
        touchline_testkit::require_tool("check-jsonschema", "pip install check-jsonschema")
    else {
        return;
    };
    let fleet = touchline_testkit::repo_root().join("fleet-manifests");
    for (schema_name, files) in [
        ("fleet.schema.json", vec![fleet.join("fleet.yaml")]),
        (
            "catalog.schema.json",
            vec![fleet.join("videos/catalog.yaml")],
        ),
        ("site.schema.json", yaml_in(&fleet.join("sites"))),
        ("group.schema.json", yaml_in(&fleet.join("groups"))),
        ("release.schema.json", yaml_in(&fleet.join("releases"))),
    ] {
        assert!(!files.is_empty());
        let (ok, text) = check(&tool, schema_name, &files);
        assert!(ok, "{schema_name} rejected the example fleet:\n{text}");
    }
}

#[test]
fn schemas_reject_broken_manifests_from_the_corpus() {
    let Some(tool) =
        touchline_testkit::require_tool("check-jsonschema", "pip install check-jsonschema")
    else {
        return;
    };
    let bad = touchline_testkit::data("bad");
    let cases = [
        ("unknown-field", "site.schema.json", "sites/alpha.yaml"),
        ("wrong-type", "group.schema.json", "groups/football.yaml"),
        ("bad-sha256", "catalog.schema.json", "videos/catalog.yaml"),
        ("bad-site-id", "site.schema.json", "sites/Alpha_FC.yaml"),
        (
            "negative-size",
            "catalog.schema.json",
            "videos/catalog.yaml",
        ),
        ("bad-window", "fleet.schema.json", "fleet.yaml"),
        ("bad-duration", "fleet.schema.json", "fleet.yaml"),
        ("bad-version", "release.schema.json", "releases/1.0.0.yaml"),
        ("short-sha256", "release.schema.json", "releases/1.0.0.yaml"),
        ("config-not-object", "site.schema.json", "sites/alpha.yaml"),
    ];
    for (case, schema_name, file) in cases {
        let path = bad.join(case).join(file);
        let (ok, text) = check(&tool, schema_name, &[path]);
        assert!(!ok, "{schema_name} accepted tests/data/bad/{case}/{file}");
        assert!(text.contains("Schema validation errors"), "{case}: {text}");
    }
    // The valid fixture passes, so the rejections above are about the breakage.
    let base = touchline_testkit::data("base");
    let (ok, text) = check(&tool, "site.schema.json", &yaml_in(&base.join("sites")));
    assert!(ok, "{text}");
}

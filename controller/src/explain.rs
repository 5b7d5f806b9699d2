//! `touchline explain`: every desired value of a site with the file:line that
//! set it and the layers it overrode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::merge;
use crate::render::{Rendered, Why};

/// Plain text for a terminal.
pub fn text(r: &Rendered) -> String {
    let b = &r.bundle;
    let e = &r.explain;
    let mut out = String::new();
    let _ = writeln!(out, "site {} (serial {})", b.site, b.serial);

    let _ = writeln!(out, "\nlayers, first to last (later wins):");
    let _ = writeln!(out, "  fleet.yaml defaults");
    for m in &e.groups {
        let why: Vec<String> = m
            .why
            .iter()
            .map(|w| match w {
                Why::Selector(o) => format!("selector at {o}"),
                Why::Listed(o) => format!("listed at {o}"),
                Why::Joined(o) => format!("joined at {o}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "  group {} (priority {}): {}",
            m.group,
            m.priority,
            why.join("; ")
        );
    }
    let _ = writeln!(out, "  sites/{}.yaml overrides", b.site);

    for (title, traced) in [
        ("software", &e.software),
        ("agent release", &e.agent_release),
    ] {
        if title == "agent release" && traced.is_none() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        match traced {
            Some(t) => {
                let by = t
                    .set_by
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let _ = writeln!(out, "  version {}  set by {by}", t.value);
                for (o, v) in t.overridden.iter().rev() {
                    let _ = writeln!(out, "    overrides {v} from {o}");
                }
            }
            None => {
                let _ = writeln!(out, "  none pinned (the box keeps whatever it runs)");
            }
        }
    }

    let present = e.videos.values().filter(|t| t.removed_by.is_none()).count();
    let _ = writeln!(
        out,
        "\nvideos: {present} on the box, {} bytes",
        b.files_bytes()
    );
    let paths = video_paths(b);
    for (id, t) in &e.videos {
        let added: Vec<String> = t.added_by.iter().map(ToString::to_string).collect();
        match &t.removed_by {
            None => {
                let _ = writeln!(
                    out,
                    "  + {id}  {}  added by {}",
                    paths.get(id.as_str()).map_or("", String::as_str),
                    added.join(", ")
                );
            }
            Some(o) => {
                let _ = writeln!(
                    out,
                    "  - {id}  removed by {o} (added by {})",
                    added.join(", ")
                );
            }
        }
    }

    let _ = writeln!(out, "\nconfig (configuration.json):");
    let leaves = merge::leaves(&b.config);
    for (pointer, value) in &leaves {
        if pointer == &format!("/{}", crate::render::LIBRARY_KEY) {
            let _ = writeln!(
                out,
                "  {pointer}  generated from the videos above (videos/catalog.yaml)"
            );
            continue;
        }
        let touches = e.config.touches.get(pointer);
        let set_by = touches
            .and_then(|t| t.last())
            .map(|t| t.origin.to_string())
            .unwrap_or_default();
        let _ = writeln!(out, "  {pointer} = {value}  set by {set_by}");
        for t in touches.into_iter().flatten().rev().skip(1) {
            let what = if t.removed { "removed" } else { "set" };
            let _ = writeln!(out, "    overrides {what} at {}", t.origin);
        }
    }
    for (pointer, touches) in &e.config.touches {
        let is_leaf = leaves.iter().any(|(p, _)| p == pointer);
        let is_parent = leaves
            .iter()
            .any(|(p, _)| p.starts_with(&format!("{pointer}/")));
        if !is_leaf
            && !is_parent
            && let Some(last) = touches.last()
        {
            let _ = writeln!(out, "  {pointer} removed by {}", last.origin);
        }
    }

    let _ = writeln!(out, "\nagent:");
    for (k, t) in &e.agent {
        let by = t
            .set_by
            .as_ref()
            .map(|o| format!("set by {o}"))
            .unwrap_or_else(|| "default".into());
        let _ = writeln!(out, "  {k} = {}  {by}", t.value);
        for (o, v) in t.overridden.iter().rev() {
            let _ = writeln!(out, "    overrides {v} from {o}");
        }
    }
    out
}

/// Each video's path on the box, by id, from the bundle's generated
/// video library.
fn video_paths(b: &touchline_schemas::Bundle) -> BTreeMap<String, String> {
    b.config
        .get(crate::render::LIBRARY_KEY)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["subcategories"].as_array().into_iter().flatten())
        .flat_map(|s| s["videos"].as_array().into_iter().flatten())
        .filter_map(|v| Some((v["id"].as_str()?.to_owned(), v["path"].as_str()?.to_owned())))
        .collect()
}

/// What a site's bundle holds, each with where it came from: the videos
/// on the box (id, path, the manifest `file:line`s that added it) and the
/// `configuration.json` leaves (pointer, value, the `file:line` that set
/// it; the generated video library says so).
pub fn provenance(r: &Rendered) -> (Vec<[String; 3]>, Vec<[String; 3]>) {
    let e = &r.explain;
    let b = &r.bundle;
    let paths = video_paths(b);
    let videos = e
        .videos
        .iter()
        .filter(|(_, t)| t.removed_by.is_none())
        .map(|(id, t)| {
            [
                id.to_string(),
                paths.get(id.as_str()).cloned().unwrap_or_default(),
                t.added_by
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let library = format!("/{}", crate::render::LIBRARY_KEY);
    let config = merge::leaves(&b.config)
        .into_iter()
        .map(|(pointer, value)| {
            let set_by = if pointer == library {
                "videos/catalog.yaml".to_owned()
            } else {
                e.config
                    .touches
                    .get(&pointer)
                    .and_then(|t| t.last())
                    .map(|t| t.origin.to_string())
                    .unwrap_or_default()
            };
            let value = if pointer == library {
                format!("[{} videos]", paths.len())
            } else {
                value.to_string()
            };
            [pointer, value, set_by]
        })
        .collect();
    (videos, config)
}

/// The same as JSON, for tools.
pub fn json(r: &Rendered) -> Value {
    let e = &r.explain;
    let (video_rows, config_rows) = provenance(r);
    let config: serde_json::Map<String, Value> = e
        .config
        .touches
        .iter()
        .map(|(p, t)| {
            let hist: Vec<Value> = t
                .iter()
                .map(|t| json!({"at": t.origin.to_string(), "removed": t.removed}))
                .collect();
            (p.clone(), Value::Array(hist))
        })
        .collect();
    json!({
        "site": e.site,
        "serial": r.bundle.serial,
        "groups": e.groups,
        "software": e.software,
        "agent_release": e.agent_release,
        "videos": e.videos,
        "config": config,
        "agent": e.agent,
        "video_rows": video_rows,
        "config_rows": config_rows,
    })
}

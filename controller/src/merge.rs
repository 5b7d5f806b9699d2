//! JSON Merge Patch (RFC 7386), layer by layer, remembering which layer
//! touched each key so that `explain` can say who set a value and whom it
//! overrode.

use std::collections::BTreeMap;

use serde_json::Value;
use touchline_schemas::manifest::JsonObject;

use crate::yaml::Origin;

/// What a layer did at one JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The file:line that did it.
    pub origin: Origin,
    /// `null` in a patch: the key was deleted.
    pub removed: bool,
}

/// For each JSON pointer (`/club/name`), the layers that set or removed it, in
/// order. When a value replaces a whole object (or a deletion removes one),
/// the touches below it are folded into the pointer itself, so nothing that
/// was overridden is forgotten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigTrace {
    /// Pointer → touches, oldest first.
    pub touches: BTreeMap<String, Vec<Touch>>,
}

impl ConfigTrace {
    fn fold_subtree(&mut self, pointer: &str) -> Vec<Touch> {
        let prefix = format!("{pointer}/");
        let below: Vec<String> = self
            .touches
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut folded = self.touches.remove(pointer).unwrap_or_default();
        for k in below {
            folded.extend(self.touches.remove(&k).unwrap_or_default());
        }
        folded
    }

    fn record(&mut self, pointer: String, touch: Touch) {
        let mut history = self.fold_subtree(&pointer);
        history.push(touch);
        self.touches.insert(pointer, history);
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Applies `patch` to `target` (RFC 7386), recording touches.
/// `origin_of(keys)` gives the file:line of the patch node at `keys`.
pub fn apply(
    target: &mut JsonObject,
    patch: &JsonObject,
    trace: &mut ConfigTrace,
    origin_of: &dyn Fn(&[&str]) -> Origin,
) {
    let mut keys = Vec::new();
    apply_at(target, patch, trace, origin_of, &mut keys, "");
}

fn apply_at<'p>(
    target: &mut JsonObject,
    patch: &'p JsonObject,
    trace: &mut ConfigTrace,
    origin_of: &dyn Fn(&[&str]) -> Origin,
    keys: &mut Vec<&'p str>,
    pointer: &str,
) {
    for (k, v) in patch {
        keys.push(k);
        let child = format!("{pointer}/{}", escape(k));
        match v {
            Value::Null => {
                if target.remove(k).is_some() {
                    trace.record(
                        child,
                        Touch {
                            origin: origin_of(keys),
                            removed: true,
                        },
                    );
                }
            }
            Value::Object(sub) => {
                let slot = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(JsonObject::new()));
                if !slot.is_object() {
                    // A scalar or array replaced by an object: its history
                    // stays at this pointer, marked as replaced.
                    trace.record(
                        child.clone(),
                        Touch {
                            origin: origin_of(keys),
                            removed: true,
                        },
                    );
                    *slot = Value::Object(JsonObject::new());
                }
                if let Value::Object(obj) = slot {
                    apply_at(obj, sub, trace, origin_of, keys, &child);
                    // An empty object is a leaf: say who left it there.
                    if obj.is_empty()
                        && trace
                            .touches
                            .get(&child)
                            .is_none_or(|t| t.last().is_some_and(|t| t.removed))
                    {
                        trace.record(
                            child.clone(),
                            Touch {
                                origin: origin_of(keys),
                                removed: false,
                            },
                        );
                    }
                }
            }
            other => {
                trace.record(
                    child,
                    Touch {
                        origin: origin_of(keys),
                        removed: false,
                    },
                );
                target.insert(k.clone(), other.clone());
            }
        }
        keys.pop();
    }
}

/// Every leaf of `doc` (a non-object value or an empty object) by pointer.
pub fn leaves(doc: &JsonObject) -> Vec<(String, &Value)> {
    fn walk<'a>(obj: &'a JsonObject, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
        for (k, v) in obj {
            let p = format!("{prefix}/{}", escape(k));
            match v {
                Value::Object(o) if !o.is_empty() => walk(o, &p, out),
                _ => out.push((p, v)),
            }
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::Pos;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::Arc;

    fn origin(n: u32) -> Origin {
        Origin {
            file: Arc::from(format!("layer{n}")),
            pos: Pos { line: n, col: 1 },
        }
    }

    fn obj(v: Value) -> JsonObject {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rfc7386_examples() {
        // Appendix A of RFC 7386, the cases whose target and patch are objects.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = obj(target);
            apply(&mut t, &obj(patch), &mut ConfigTrace::default(), &|_| {
                origin(1)
            });
            assert_eq!(Value::Object(t), want);
        }
    }

    #[test]
    fn trace_remembers_overrides_and_removals() {
        let mut doc = JsonObject::new();
        let mut trace = ConfigTrace::default();
        apply(
            &mut doc,
            &obj(json!({"club": {"name": "A", "colors": {"main": "red"}}})),
            &mut trace,
            &|_| origin(1),
        );
        apply(
            &mut doc,
            &obj(json!({"club": {"name": "B"}})),
            &mut trace,
            &|_| origin(2),
        );
        apply(
            &mut doc,
            &obj(json!({"club": {"colors": "blue"}})),
            &mut trace,
            &|_| origin(3),
        );
        let name = &trace.touches["/club/name"];
        assert_eq!(
            name.iter().map(|t| t.origin.pos.line).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // The object `colors` replaced by a scalar: the old leaf is folded in.
        let colors = &trace.touches["/club/colors"];
        assert_eq!(
            colors.iter().map(|t| t.origin.pos.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(!trace.touches.contains_key("/club/colors/main"));
        apply(
            &mut doc,
            &obj(json!({"club": {"name": null}})),
            &mut trace,
            &|_| origin(4),
        );
        assert!(trace.touches["/club/name"].last().unwrap().removed);
        assert_eq!(Value::Object(doc), json!({"club": {"colors": "blue"}}));
    }

    #[test]
    fn pointers_escape_slash_and_tilde() {
        let mut doc = JsonObject::new();
        let mut trace = ConfigTrace::default();
        apply(
            &mut doc,
            &obj(json!({"a/b": {"c~d": 1}})),
            &mut trace,
            &|_| origin(1),
        );
        assert!(trace.touches.contains_key("/a~1b/c~0d"));
        assert_eq!(leaves(&doc)[0].0, "/a~1b/c~0d");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0i64..5).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_obj() -> impl Strategy<Value = JsonObject> {
        prop::collection::btree_map("[a-c]", arb_json(), 0..4).prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        /// Our merge equals the `json-patch` crate's RFC 7386 merge, layer after layer.
        #[test]
        fn agrees_with_json_patch(layers in prop::collection::vec(arb_obj(), 1..5)) {
            let mut ours = JsonObject::new();
            let mut theirs = Value::Object(JsonObject::new());
            let mut trace = ConfigTrace::default();
            for (i, layer) in layers.iter().enumerate() {
                let o = origin(u32::try_from(i).unwrap());
                apply(&mut ours, layer, &mut trace, &|_| o.clone());
                json_patch::merge(&mut theirs, &Value::Object(layer.clone()));
            }
            prop_assert_eq!(Value::Object(ours.clone()), theirs);
            // Every leaf has a recorded origin whose last touch is a set.
            for (p, _) in leaves(&ours) {
                let touches = trace.touches.get(&p);
                prop_assert!(touches.is_some_and(|t| !t.last().unwrap().removed), "{}", p);
            }
        }
    }
}

//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings and numbers as serde_json writes them. Equal values
//! give byte-identical output, whatever map type produced them.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` canonically.
pub fn to_canonical_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(1024);
    write_value(&value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            // Sort explicitly: serde_json's `preserve_order` feature may be on
            // through another crate, and then maps keep insertion order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                write_value(v, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(v, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, 2, {"y": null, "x": "é\n"}], "c": true}});
        let out = String::from_utf8(to_canonical_vec(&v).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"a":{"c":true,"z":[1,2,{"x":"é\n","y":null}]},"b":1}"#
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zé\"\\\\ ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Parsing the canonical form and encoding again is the identity, and
        /// it means the same value.
        #[test]
        fn canonical_is_a_fixed_point(v in arb_json()) {
            let once = to_canonical_vec(&v).unwrap();
            let back: Value = serde_json::from_slice(&once).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_canonical_vec(&back).unwrap(), once);
        }
    }
}

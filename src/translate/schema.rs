//! Tool JSON-schema repair (`docs/translation.md`, "Tool schemas").
//!
//! Upstreams reject some schemas that clients send happily: an `array` without `items`, an
//! `object` without `properties`, a missing top-level schema, and keys that are not JSON
//! Schema at all (`$schema`, Anthropic's `cache_control`, `defer_loading`). [`repair`] fixes
//! exactly those, walking every place a subschema can live, and changes nothing else: a valid
//! schema comes back byte-for-byte equal.

use serde_json::{Map, Value};

/// Keys that are never part of a tool schema upstream.
const FOREIGN_KEYS: &[&str] = &["$schema", "cache_control", "defer_loading"];
/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
];
/// Keywords whose value is an array of subschemas.
const MANY: &[&str] = &["prefixItems", "oneOf", "anyOf", "allOf"];
/// Keywords whose value is a map of name → subschema.
const MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Repairs a tool's parameter schema in place; see the module docs. A missing (`null`) or
/// non-object schema becomes `{"type":"object","properties":{}}`.
pub fn repair(schema: &mut Value) {
    match schema {
        Value::Object(map) => repair_node(map),
        _ => *schema = empty_object_schema(),
    }
}

/// `{"type":"object","properties":{}}`, the schema of a tool without parameters.
pub fn empty_object_schema() -> Value {
    let mut map = Map::new();
    map.insert("type".into(), Value::String("object".into()));
    map.insert("properties".into(), Value::Object(Map::new()));
    Value::Object(map)
}

fn has_type(map: &Map<String, Value>, wanted: &str) -> bool {
    match map.get("type") {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(types)) => types.iter().any(|t| t.as_str() == Some(wanted)),
        _ => false,
    }
}

fn repair_node(map: &mut Map<String, Value>) {
    for key in FOREIGN_KEYS {
        map.remove(*key);
    }
    if has_type(map, "array") && !map.contains_key("items") && !map.contains_key("prefixItems") {
        map.insert("items".into(), Value::Object(Map::new()));
    }
    if has_type(map, "object") && !map.contains_key("properties") {
        map.insert("properties".into(), Value::Object(Map::new()));
    }
    for key in ONE {
        // `items` may also be the old tuple form (an array); `additionalProperties` a bool.
        match map.get_mut(*key) {
            Some(Value::Object(sub)) => repair_node(sub),
            Some(Value::Array(subs)) => repair_all(subs),
            _ => {}
        }
    }
    for key in MANY {
        if let Some(Value::Array(subs)) = map.get_mut(*key) {
            repair_all(subs);
        }
    }
    for key in MAP {
        if let Some(Value::Object(subs)) = map.get_mut(*key) {
            for sub in subs.values_mut() {
                if let Value::Object(sub) = sub {
                    repair_node(sub);
                }
            }
        }
    }
}

fn repair_all(subs: &mut [Value]) {
    for sub in subs {
        if let Value::Object(sub) = sub {
            repair_node(sub);
        }
    }
}

/// Whether a schema meets strict mode's rules (every object closed with
/// `additionalProperties:false` and all its properties required), so that asking the upstream
/// for `strict:true` cannot turn a working tool into a 400.
pub fn is_strict_compatible(schema: &Value) -> bool {
    let Value::Object(map) = schema else {
        return true;
    };
    if has_type(map, "object") {
        if map.get("additionalProperties") != Some(&Value::Bool(false)) {
            return false;
        }
        let props = map.get("properties").and_then(Value::as_object);
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = props {
            if !props.keys().all(|k| required.contains(&k.as_str())) {
                return false;
            }
        }
    }
    ONE.iter()
        .filter_map(|k| map.get(*k))
        .chain(
            MANY.iter()
                .filter_map(|k| map.get(*k))
                .flat_map(|v| v.as_array().map(|a| a.iter()).into_iter().flatten()),
        )
        .chain(
            MAP.iter()
                .filter_map(|k| map.get(*k))
                .flat_map(|v| v.as_object().map(|o| o.values()).into_iter().flatten()),
        )
        .all(is_strict_compatible)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repaired(mut v: Value) -> Value {
        repair(&mut v);
        v
    }

    #[test]
    fn array_without_items_gets_items_including_nullable_arrays() {
        assert_eq!(
            repaired(json!({"type":"object","properties":{
                "a":{"type":"array"},
                "b":{"type":["array","null"]},
                "c":{"type":"array","prefixItems":[{"type":"string"}]}
            }})),
            json!({"type":"object","properties":{
                "a":{"type":"array","items":{}},
                "b":{"type":["array","null"],"items":{}},
                "c":{"type":"array","prefixItems":[{"type":"string"}]}
            }})
        );
    }

    #[test]
    fn object_without_properties_and_missing_schema() {
        assert_eq!(
            repaired(json!({"type":"object"})),
            json!({"type":"object","properties":{}})
        );
        assert_eq!(
            repaired(Value::Null),
            json!({"type":"object","properties":{}})
        );
        assert_eq!(
            repaired(json!("x")),
            json!({"type":"object","properties":{}})
        );
    }

    #[test]
    fn foreign_keys_go_everywhere_but_property_names_stay() {
        assert_eq!(
            repaired(json!({
                "$schema":"http://json-schema.org/draft-07/schema#",
                "type":"object",
                "cache_control":{"type":"ephemeral"},
                "properties":{
                    "cache_control":{"type":"string","defer_loading":true},
                    "u":{"anyOf":[{"type":"array"},{"$ref":"#/$defs/o"}]}
                },
                "$defs":{"o":{"type":"object","$schema":"x"}}
            })),
            json!({
                "type":"object",
                "properties":{
                    "cache_control":{"type":"string"},
                    "u":{"anyOf":[{"type":"array","items":{}},{"$ref":"#/$defs/o"}]}
                },
                "$defs":{"o":{"type":"object","properties":{}}}
            })
        );
    }

    #[test]
    fn nested_places_are_all_walked() {
        let v = repaired(json!({"type":"object","properties":{},
            "additionalProperties":{"type":"array"},
            "patternProperties":{"^x":{"type":"object"}},
            "not":{"type":"array"},
            "if":{"type":"array"},"then":{"type":"array"},"else":{"type":"array"},
            "definitions":{"d":{"type":"array"}},
            "oneOf":[{"type":"array"}],"allOf":[{"type":"object"}],
            "items":[{"type":"array"}]
        }));
        assert_eq!(v["additionalProperties"]["items"], json!({}));
        assert_eq!(v["patternProperties"]["^x"]["properties"], json!({}));
        for k in ["not", "if", "then", "else"] {
            assert_eq!(v[k]["items"], json!({}), "{k}");
        }
        assert_eq!(v["definitions"]["d"]["items"], json!({}));
        assert_eq!(v["oneOf"][0]["items"], json!({}));
        assert_eq!(v["allOf"][0]["properties"], json!({}));
        assert_eq!(v["items"][0]["items"], json!({}));
    }

    #[test]
    fn a_valid_schema_is_unchanged() {
        let valid = json!({
            "type":"object",
            "properties":{
                "city":{"type":"string","description":"City name","enum":["a","b"]},
                "days":{"type":"integer","minimum":1},
                "tags":{"type":"array","items":{"type":"string"}},
                "opts":{"anyOf":[{"type":"null"},{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}]}
            },
            "required":["city"],
            "additionalProperties":false
        });
        assert_eq!(repaired(valid.clone()), valid);
    }

    #[test]
    fn strict_compatibility() {
        assert!(is_strict_compatible(
            &json!({"type":"object","properties":{"a":{"type":"string"}},"required":["a"],"additionalProperties":false})
        ));
        assert!(!is_strict_compatible(
            &json!({"type":"object","properties":{"a":{"type":"string"}},"required":[],"additionalProperties":false})
        ));
        assert!(!is_strict_compatible(
            &json!({"type":"object","properties":{}})
        ));
        assert!(!is_strict_compatible(
            &json!({"type":"object","properties":{"a":{"type":"object","properties":{}}},"required":["a"],"additionalProperties":false})
        ));
    }
}

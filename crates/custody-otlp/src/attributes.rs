//! OTLP attribute values as JSON, and a bag of attributes that mapping takes
//! from, so that whatever no convention claims is kept.

use std::collections::BTreeMap;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde_json::{Map, Value};

/// An OTLP value as JSON: arrays and key-value lists nest, bytes are base64.
pub fn to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, to_json))).collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // Dictionary-encoded strings belong to the profiles signal; traces never use them.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}

/// Attributes by key, taken one by one; what is left is kept as it came.
#[derive(Debug, Clone, Default)]
pub struct Bag(BTreeMap<String, Value>);

impl Bag {
    pub fn new(attributes: &[KeyValue]) -> Self {
        Self(attributes.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, to_json))).collect())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// Removes `key` and returns its value.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// The first of `keys` present, as text (numbers and booleans are written out); all of them removed.
    pub fn take_text(&mut self, keys: &[&str]) -> Option<String> {
        self.take_first(keys, |value| match value {
            Value::String(s) if !s.is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
    }

    /// The first of `keys` present as a non-negative integer (or a string of one); all of them removed.
    pub fn take_count(&mut self, keys: &[&str]) -> Option<u64> {
        self.take_first(keys, |value| match value {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// The value of the first of `keys` present (a newer name before its
    /// deprecated ones), converted; every one of them is removed, so none is
    /// kept twice in the record's attributes.
    fn take_first<T>(&mut self, keys: &[&str], convert: impl Fn(Value) -> Option<T>) -> Option<T> {
        let mut found = None;
        for key in keys {
            if let Some(value) = self.take(key)
                && found.is_none()
            {
                found = convert(value);
            }
        }
        found
    }

    /// Removes every `prefix.…` key and rebuilds the nested value it flattens:
    /// `p.0.message.role = "user"` becomes `[{"message": {"role": "user"}}]`.
    /// Objects whose keys are all indexes become arrays, in index order.
    pub fn take_nested(&mut self, prefix: &str) -> Option<Value> {
        let dotted = format!("{prefix}.");
        let keys: Vec<String> =
            self.0.range(dotted.clone()..).map(|(k, _)| k.clone()).take_while(|k| k.starts_with(&dotted)).collect();
        if keys.is_empty() {
            return None;
        }
        let mut root = Map::new();
        for key in keys {
            let value = self.0.remove(&key).unwrap_or(Value::Null);
            insert_path(&mut root, &key[dotted.len()..], value);
        }
        Some(arrays_from_indexes(Value::Object(root)))
    }

    /// A value that may be JSON text (as most instrumentations send structured
    /// content) or already structured.
    pub fn take_json(&mut self, key: &str) -> Option<Value> {
        self.take(key).map(parse_if_text)
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0.into_iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// JSON text parsed, anything else as it is (text that is not JSON stays text).
pub fn parse_if_text(value: Value) -> Value {
    match value {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

fn insert_path(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_owned(), value);
            return;
        }
        let child = node.entry(part.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            // A key that is both a value and a prefix (`a = 1`, `a.b = 2`): the deeper one wins.
            *child = Value::Object(Map::new());
        }
        let Value::Object(next) = child else { return };
        node = next;
    }
}

fn arrays_from_indexes(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed: Option<BTreeMap<usize, Value>> =
                map.iter().map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v.clone()))).collect();
            match indexed {
                Some(items) if !items.is_empty() => {
                    Value::Array(items.into_values().map(arrays_from_indexes).collect())
                }
                _ => Value::Object(map.into_iter().map(|(k, v)| (k, arrays_from_indexes(v))).collect()),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use serde_json::json;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
    }

    #[test]
    fn values_of_every_type_become_json() {
        use any_value::Value as V;
        let nested = V::KvlistValue(KeyValueList { values: vec![kv("n", V::IntValue(-3))] });
        let array = V::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(V::BoolValue(true)) }, AnyValue { value: Some(V::DoubleValue(0.5)) }],
        });
        let bag = Bag::new(&[
            kv("s", V::StringValue("x".into())),
            kv("a", array),
            kv("k", nested),
            kv("b", V::BytesValue(vec![1, 2])),
        ]);
        assert_eq!(Value::Object(bag.into_map()), json!({"s": "x", "a": [true, 0.5], "k": {"n": -3}, "b": "AQI="}));
    }

    #[test]
    fn flattened_keys_nest_back_in_index_order() {
        use any_value::Value as V;
        let mut bag = Bag::new(&[
            kv("p.10.role", V::StringValue("late".into())),
            kv("p.2.role", V::StringValue("user".into())),
            kv("p.2.content", V::StringValue("hi".into())),
            kv("p.2.tool_calls.0.name", V::StringValue("f".into())),
            kv("other", V::IntValue(1)),
        ]);
        assert_eq!(
            bag.take_nested("p").unwrap(),
            json!([{"role": "user", "content": "hi", "tool_calls": [{"name": "f"}]}, {"role": "late"}])
        );
        assert_eq!(bag.take_nested("p"), None, "taken");
        assert_eq!(bag.take_count(&["other"]), Some(1));
        assert!(bag.is_empty());
    }

    #[test]
    fn the_first_present_key_wins_and_all_are_taken() {
        use any_value::Value as V;
        let mut bag = Bag::new(&[kv("new", V::StringValue("a".into())), kv("old", V::StringValue("b".into()))]);
        assert_eq!(bag.take_text(&["new", "old"]).as_deref(), Some("a"));
        assert!(bag.is_empty());
        let mut bag = Bag::new(&[kv("n", V::StringValue("12".into()))]);
        assert_eq!(bag.take_count(&["n"]), Some(12));
    }
}

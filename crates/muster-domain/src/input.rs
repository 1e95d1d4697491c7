//! Reading a JSON object field by field, so that one answer names every bad field.
//!
//! serde stops at the first error; an API user wants to hear about all of them. [`ObjectReader`]
//! takes each known key out of the object, converts it, records a [`FieldErrors`] entry for each
//! failure, and finally reports every key nobody asked for.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::validation::FieldErrors;

/// A value in a partial update: absent (keep), `null` (clear) or a new value.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    Absent,
    Null,
    Value(T),
}

/// Takes typed fields out of a JSON object, collecting errors.
pub struct ObjectReader<'e> {
    object: Map<String, Value>,
    errors: &'e mut FieldErrors,
}

impl<'e> ObjectReader<'e> {
    /// Starts reading `value`, which must be a JSON object.
    pub fn new(value: Value, errors: &'e mut FieldErrors) -> Option<Self> {
        match value {
            Value::Object(object) => Some(Self { object, errors }),
            other => {
                errors.add(
                    "",
                    format!("expected a JSON object, found {}", kind(&other)),
                );
                None
            }
        }
    }

    /// A field in a partial update.
    pub fn patch<T: DeserializeOwned>(&mut self, key: &str) -> Patch<T> {
        match self.object.remove(key) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(v) => match serde_json::from_value::<T>(v) {
                Ok(t) => Patch::Value(t),
                Err(e) => {
                    self.errors.add(key, clean_serde_message(&e.to_string()));
                    Patch::Absent
                }
            },
        }
    }

    /// An optional field: absent and `null` both give `None`.
    pub fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.patch(key) {
            Patch::Value(v) => Some(v),
            _ => None,
        }
    }

    /// A required field: absent or `null` is an error.
    pub fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let present = self.object.get(key).is_some_and(|v| !v.is_null());
        let value = self.optional(key);
        if !present {
            self.errors.add(key, "is required");
        }
        value
    }

    /// The errors collected so far, for readers of nested values.
    pub fn errors(&mut self) -> &mut FieldErrors {
        self.errors
    }

    /// Records a problem found while reading.
    pub fn error(&mut self, field: &str, message: &str) {
        self.errors.add(field, message);
    }

    /// Removes keys that are accepted but ignored (read-only fields echoed back by a client).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.object.remove(*k);
        }
    }

    /// Reports every key that was not read.
    pub fn finish(self) {
        for key in self.object.keys() {
            self.errors.add(key.clone(), "unknown field");
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's messages end with " at line 0 column 0" for `from_value`; drop that noise.
fn clean_serde_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem() {
        let mut errors = FieldErrors::default();
        let mut r = ObjectReader::new(
            json!({"a": "x", "b": 1, "c": null, "extra": true, "ro": 5}),
            &mut errors,
        )
        .unwrap();
        let a: Option<u32> = r.optional("a");
        let b: Option<u32> = r.required("b");
        let c: Patch<String> = r.patch("c");
        let d: Option<String> = r.required("d");
        r.ignore(&["ro"]);
        r.finish();
        assert_eq!((a, b, c, d), (None, Some(1), Patch::Null, None));
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "d", "extra"]);
        assert!(errors.0[0].message.contains("invalid type"));
        assert!(!errors.0[0].message.contains("line"));
    }

    #[test]
    fn rejects_non_objects() {
        let mut errors = FieldErrors::default();
        assert!(ObjectReader::new(json!([1]), &mut errors).is_none());
        assert_eq!(
            errors.0[0].message,
            "expected a JSON object, found an array"
        );
    }
}

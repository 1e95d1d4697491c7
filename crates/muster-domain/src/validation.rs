//! Field-level validation errors, collected so that one answer names every bad field.

use serde::Serialize;

/// One problem with one field of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field's path, e.g. `name`, `ip_addresses[2].address`, `labels.env`.
    pub field: String,
    pub message: String,
}

/// Every problem found in one input; empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was added, else the errors.
    pub fn finish<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Checks a string's length in characters, and that it holds no control characters
    /// (tabs and line breaks are allowed only in multi-line text).
    pub fn check_len(&mut self, field: &str, value: &str, max: usize) {
        self.check_text(field, value, max, false);
    }

    /// Like [`check_len`](Self::check_len) for multi-line text (notes): tabs and line breaks
    /// allowed.
    pub fn check_multiline(&mut self, field: &str, value: &str, max: usize) {
        self.check_text(field, value, max, true);
    }

    fn check_text(&mut self, field: &str, value: &str, max: usize, multiline: bool) {
        if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        }
        let bad = |c: char| c.is_control() && !(multiline && matches!(c, '\t' | '\n' | '\r'));
        if value.chars().any(bad) {
            self.add(field, "must not contain control characters");
        }
    }

    /// Checks an optional string: trimmed non-empty when present, at most `max` characters.
    pub fn check_opt(&mut self, field: &str, value: &Option<String>, max: usize) {
        if let Some(v) = value {
            self.check_len(field, v, max);
        }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

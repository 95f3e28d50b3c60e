//! Why a line was rejected.
//!
//! Every error belongs to one line: the parser reports it and moves on to the next line, so
//! one bad line never hides the rest of a body. The kinds are owned (no borrow of the body)
//! so callers can keep them after the body is gone; building one copies at most
//! [`MAX_EXCERPT_CHARS`] characters of the offending key or value.

/// The longest key or value, in characters, that an error message quotes.
const MAX_EXCERPT_CHARS: usize = 64;

/// A line that is not valid line protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line_number}: {kind}")]
pub struct LineError<'a> {
    /// 1-based number of the line within the body (the first line, if a string field spans
    /// several).
    pub line_number: usize,
    /// The raw line without its line ending.
    pub original: &'a [u8],
    /// What is wrong with it.
    pub kind: LineErrorKind,
}

impl LineError<'_> {
    /// The original line as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn original_lossy(&self) -> String {
        String::from_utf8_lossy(self.original).into_owned()
    }
}

/// What is wrong with a line. Keys and values are unescaped and cut to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("missing measurement name before the first comma")]
    MissingMeasurement,
    #[error("tag set has an empty tag key")]
    MissingTagKey,
    #[error("tag `{key}` has no value")]
    MissingTagValue { key: String },
    #[error("duplicate tag `{key}`")]
    DuplicateTag { key: String },
    #[error(
        "no fields: a line needs at least one `key=value` field after the measurement and tags"
    )]
    MissingFields,
    #[error("field set has an empty field key")]
    MissingFieldKey,
    #[error("field `{key}` has no value")]
    MissingFieldValue { key: String },
    #[error(
        "field `{key}` has invalid value `{value}`: expected a float, an integer with `i`, \
         an unsigned integer with `u`, a quoted string, or a boolean"
    )]
    InvalidFieldValue { key: String, value: String },
    #[error("field `{key}` value `{value}` is outside the signed 64-bit integer range")]
    IntegerOutOfRange { key: String, value: String },
    #[error("field `{key}` value `{value}` is outside the unsigned 64-bit integer range")]
    UnsignedOutOfRange { key: String, value: String },
    #[error("field `{key}` value `{value}` is outside the 64-bit float range")]
    FloatOutOfRange { key: String, value: String },
    #[error("field `{key}` has a string value with no closing quote")]
    UnterminatedString { key: String },
    #[error(
        "field `{key}` has characters after the closing quote of its string value; \
         escape quotes inside strings as `\\\"`"
    )]
    CharactersAfterString { key: String },
    #[error("duplicate field `{key}`")]
    DuplicateField { key: String },
    #[error("invalid timestamp `{value}`: expected an integer")]
    InvalidTimestamp { value: String },
    #[error("timestamp `{value}` is outside the signed 64-bit integer range")]
    TimestampOutOfRange { value: String },
    #[error("unexpected `{text}` after the timestamp")]
    TrailingCharacters { text: String },
}

/// `text` cut to [`MAX_EXCERPT_CHARS`] characters, for quoting in an error message.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_line_number_and_key() {
        let e = LineError {
            line_number: 3,
            original: b"cpu,host=a,host=b f=1",
            kind: LineErrorKind::DuplicateTag { key: "host".into() },
        };
        assert_eq!(e.to_string(), "line 3: duplicate tag `host`");
    }

    #[test]
    fn invalid_value_message_lists_accepted_types() {
        let kind = LineErrorKind::InvalidFieldValue {
            key: "usage".into(),
            value: "1.2.3".into(),
        };
        assert_eq!(
            kind.to_string(),
            "field `usage` has invalid value `1.2.3`: expected a float, an integer with `i`, \
             an unsigned integer with `u`, a quoted string, or a boolean"
        );
    }

    #[test]
    fn original_lossy_replaces_invalid_utf8() {
        let e = LineError {
            line_number: 1,
            original: b"cpu\xff f=1",
            kind: LineErrorKind::InvalidUtf8,
        };
        assert_eq!(e.original_lossy(), "cpu\u{fffd} f=1");
    }

    #[test]
    fn excerpt_cuts_long_text_at_a_char_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}

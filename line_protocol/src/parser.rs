//! The line splitter and the per-line parser.
//!
//! [`LineParser`] finds each line with `memchr`, validates UTF-8 once per body (not per
//! token), and hands the line to a [`Cursor`], which walks it once, left to right, jumping
//! between structural bytes found 16 at a time ([`crate::scan`]). Tokens are sliced out of
//! the validated text, so a name or value without escapes is borrowed; only an escape that
//! changes the text allocates.

use std::borrow::Cow;

use memchr::{memchr, memchr_iter, memchr2};

use crate::error::{LineError, LineErrorKind, excerpt};
use crate::scan::next_structural;

/// A field value, borrowed from the body where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    /// `1`, `-1.5`, `2.5e-3`.
    F64(f64),
    /// `1i`, `-7i`.
    I64(i64),
    /// `1u`.
    U64(u64),
    /// `"text"`, unescaped; borrowed unless it contained `\"` or `\\`.
    String(Cow<'a, str>),
    /// `t`, `T`, `true`, `True`, `TRUE` and the same spellings of false.
    Bool(bool),
}

/// One parsed line.
///
/// [`LineParser::next_line`] overwrites it in place, clearing the `Vec`s but keeping their
/// capacity, so parsing a body allocates only for names and strings that contain escapes.
/// After an error its contents are unspecified, except `line_number` and `original`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedLine<'a> {
    /// The measurement name, unescaped.
    pub measurement: Cow<'a, str>,
    /// Unescaped tag keys and values, in line order.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Unescaped field keys and their values, in line order; never empty.
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// The timestamp as written; no precision applied.
    pub timestamp: Option<i64>,
    /// 1-based line number within the body.
    pub line_number: usize,
    /// The raw line without its line ending.
    pub original: &'a [u8],
}

/// Parses a body of line protocol one line at a time.
///
/// ```
/// use line_protocol::{FieldValue, LineParser, ParsedLine};
///
/// let body = b"cpu,host=a usage=0.5,count=3i 1700000000000000000\nbad line\n";
/// let mut parser = LineParser::new(body);
/// let mut line = ParsedLine::default();
///
/// parser.next_line(&mut line).unwrap().unwrap();
/// assert_eq!(line.measurement, "cpu");
/// assert_eq!(line.fields[1], ("count".into(), FieldValue::I64(3)));
///
/// let error = parser.next_line(&mut line).unwrap().unwrap_err();
/// assert_eq!(error.to_string(), "line 2: field `line` has no value");
/// assert!(parser.next_line(&mut line).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct LineParser<'a> {
    body: &'a [u8],
    /// Start of the next unread line.
    pos: usize,
    /// Number of the line that starts at `pos`.
    line_number: usize,
    /// `body[valid_start..]` up to its first invalid UTF-8 byte (or the end of the body).
    valid: &'a str,
    valid_start: usize,
    /// Scratch space for finding duplicate keys in long lines.
    scratch: Vec<usize>,
}

impl<'a> LineParser<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self {
            body,
            pos: 0,
            line_number: 1,
            valid: "",
            valid_start: 0,
            scratch: Vec::new(),
        }
    }

    /// Parses the next non-blank, non-comment line into `line`. None at end of body.
    pub fn next_line(&mut self, line: &mut ParsedLine<'a>) -> Option<Result<(), LineError<'a>>> {
        let body = self.body;
        loop {
            let start = self.pos;
            if start >= body.len() {
                return None;
            }
            let newline = memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
            let line_number = self.line_number;
            let mut content = start;
            while content < newline && is_blank(body[content]) {
                content += 1;
            }
            if content == newline || body[content] == b'#' {
                self.pos = newline + 1;
                self.line_number += 1;
                continue;
            }

            let text = self.valid_text_from(start);
            let mut cursor = Cursor {
                text,
                bytes: text.as_bytes(),
                raw: &body[start..],
                pos: content - start,
                end: trim_end(&body[start..], content - start, newline - start),
                line_end: newline - start,
                extra_newlines: 0,
                scratch: &mut self.scratch,
            };
            let result = if newline - start > text.len() {
                Err(LineErrorKind::InvalidUtf8)
            } else {
                cursor.parse(line)
            };

            let line_end = start + cursor.line_end;
            self.pos = line_end + 1;
            self.line_number += 1 + cursor.extra_newlines;
            let original = strip_cr(&body[start..line_end]);
            line.line_number = line_number;
            line.original = original;
            return Some(result.map_err(|kind| LineError {
                line_number,
                original,
                kind,
            }));
        }
    }

    /// The longest valid UTF-8 text starting at `start`, which must be a line start.
    ///
    /// Validates from `start` to the end of the body, or to the first invalid byte, and
    /// remembers the result, so a valid body is validated once in total.
    fn valid_text_from(&mut self, start: usize) -> &'a str {
        if start >= self.valid_start + self.valid.len() {
            let rest = &self.body[start..];
            self.valid = match std::str::from_utf8(rest) {
                Ok(text) => text,
                Err(e) => std::str::from_utf8(&rest[..e.valid_up_to()])
                    .expect("bytes before `valid_up_to` are valid UTF-8"),
            };
            self.valid_start = start;
        }
        // `start` follows a `\n` (or is 0), so it is a char boundary of `valid`.
        &self.valid[start - self.valid_start..]
    }
}

/// Leading and trailing whitespace of a line, which the parser ignores.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r')
}

/// `hi` moved back over trailing whitespace, but not before `lo`.
fn trim_end(raw: &[u8], lo: usize, mut hi: usize) -> usize {
    while hi > lo && is_blank(raw[hi - 1]) {
        hi -= 1;
    }
    hi
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Which token a name scan reads; they differ in where they stop and what `\` escapes.
#[derive(Clone, Copy)]
enum Name {
    /// Stops at `,` or ` `; escapes `\,` `\ ` `\\`.
    Measurement,
    /// Stops at `,` ` ` or `=`; escapes `\,` `\=` `\ ` `\\`.
    Key,
    /// Stops at `,` or ` `; escapes `\,` `\=` `\ ` `\\`.
    TagValue,
}

impl Name {
    fn escapes(self, byte: u8) -> bool {
        match self {
            Self::Measurement => matches!(byte, b',' | b' ' | b'\\'),
            Self::Key | Self::TagValue => matches!(byte, b',' | b'=' | b' ' | b'\\'),
        }
    }
}

/// The byte a name scan stopped at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Comma,
    Space,
    Equals,
    End,
}

/// Parses one line. Positions are offsets from the line's first byte.
struct Cursor<'a, 's> {
    /// The line and what follows it, up to the first invalid UTF-8 byte.
    text: &'a str,
    bytes: &'a [u8],
    /// The line and the rest of the body, raw.
    raw: &'a [u8],
    pos: usize,
    /// End of the line's content, before trailing whitespace.
    end: usize,
    /// Offset of the `\n` ending the line (or of the end of the body).
    line_end: usize,
    /// Newlines inside string fields, which do not end the line.
    extra_newlines: usize,
    /// Reused by [`first_repeat_sorted`].
    scratch: &'s mut Vec<usize>,
}

impl<'a> Cursor<'a, '_> {
    fn parse(&mut self, line: &mut ParsedLine<'a>) -> Result<(), LineErrorKind> {
        line.tags.clear();
        line.fields.clear();
        line.timestamp = None;

        let (measurement, stop) = self.name(Name::Measurement);
        if measurement.is_empty() {
            return Err(LineErrorKind::MissingMeasurement);
        }
        line.measurement = measurement;
        match stop {
            Stop::Comma => self.tags(line)?,
            Stop::Space => {}
            // Measurement names stop at `,`, ` ` or the end only.
            Stop::End | Stop::Equals => return Err(LineErrorKind::MissingFields),
        }

        self.skip_spaces();
        if self.pos >= self.end {
            return Err(LineErrorKind::MissingFields);
        }
        self.fields(line)?;

        self.skip_spaces();
        if self.pos < self.end {
            line.timestamp = Some(self.timestamp()?);
        }
        Ok(())
    }

    /// The tag set after the measurement's `,`; leaves `pos` at the ` ` that ends it.
    fn tags(&mut self, line: &mut ParsedLine<'a>) -> Result<(), LineErrorKind> {
        loop {
            self.pos += 1; // the `,`
            let (key, stop) = self.name(Name::Key);
            if key.is_empty() {
                return Err(LineErrorKind::MissingTagKey);
            }
            if stop != Stop::Equals {
                return Err(LineErrorKind::MissingTagValue { key: excerpt(&key) });
            }
            self.pos += 1; // the `=`
            let (value, stop) = self.name(Name::TagValue);
            if value.is_empty() {
                return Err(LineErrorKind::MissingTagValue { key: excerpt(&key) });
            }
            if repeats_pairwise(&line.tags, &key) {
                return Err(LineErrorKind::DuplicateTag { key: excerpt(&key) });
            }
            line.tags.push((key, value));
            match stop {
                Stop::Comma => {}
                Stop::Space => {
                    return match first_repeat_sorted(&line.tags, self.scratch) {
                        Some(key) => Err(LineErrorKind::DuplicateTag { key: excerpt(key) }),
                        None => Ok(()),
                    };
                }
                // Tag values stop at `,`, ` ` or the end only.
                Stop::End | Stop::Equals => return Err(LineErrorKind::MissingFields),
            }
        }
    }

    /// The field set; leaves `pos` at the ` ` after it or at the end.
    fn fields(&mut self, line: &mut ParsedLine<'a>) -> Result<(), LineErrorKind> {
        loop {
            let (key, stop) = self.name(Name::Key);
            if key.is_empty() {
                return Err(LineErrorKind::MissingFieldKey);
            }
            if stop != Stop::Equals {
                return Err(LineErrorKind::MissingFieldValue { key: excerpt(&key) });
            }
            self.pos += 1; // the `=`
            let value = self.field_value(&key)?;
            if repeats_pairwise(&line.fields, &key) {
                return Err(LineErrorKind::DuplicateField { key: excerpt(&key) });
            }
            line.fields.push((key, value));
            // A value ends at `,`, ` ` or the end of the line.
            if self.pos >= self.end || self.bytes[self.pos] == b' ' {
                return match first_repeat_sorted(&line.fields, self.scratch) {
                    Some(key) => Err(LineErrorKind::DuplicateField { key: excerpt(key) }),
                    None => Ok(()),
                };
            }
            self.pos += 1; // the `,`
        }
    }

    fn field_value(&mut self, key: &str) -> Result<FieldValue<'a>, LineErrorKind> {
        let start = self.pos;
        if start < self.end && self.bytes[start] == b'"' {
            return self.string_value(key);
        }
        // Other values end at `,` or ` `; a `=` or `\` inside one makes it invalid.
        let mut i = next_structural(self.raw, start, self.end);
        while i < self.end && !matches!(self.bytes[i], b',' | b' ') {
            i = next_structural(self.raw, i + 1, self.end);
        }
        self.pos = i;
        let token = &self.text[start..i];
        scalar_value(token).map_err(|e| {
            let key = excerpt(key);
            let value = excerpt(token);
            match e {
                ScalarError::Missing => LineErrorKind::MissingFieldValue { key },
                ScalarError::Invalid => LineErrorKind::InvalidFieldValue { key, value },
                ScalarError::IntegerRange => LineErrorKind::IntegerOutOfRange { key, value },
                ScalarError::UnsignedRange => LineErrorKind::UnsignedOutOfRange { key, value },
                ScalarError::FloatRange => LineErrorKind::FloatOutOfRange { key, value },
            }
        })
    }

    /// A `"`-quoted string starting at `pos`. It may contain raw newlines, which then do not
    /// end the line: the line is extended to the `\n` after the closing quote.
    fn string_value(&mut self, key: &str) -> Result<FieldValue<'a>, LineErrorKind> {
        let open = self.pos;
        let mut i = open + 1;
        let mut escaped = false;
        let close = loop {
            let Some(offset) = memchr2(b'"', b'\\', &self.raw[i..]) else {
                return Err(LineErrorKind::UnterminatedString { key: excerpt(key) });
            };
            let at = i + offset;
            if self.raw[at] == b'"' {
                break at;
            }
            // Only `\"` and `\\` are escapes; any other backslash is literal.
            if matches!(self.raw.get(at + 1), Some(b'"' | b'\\')) {
                escaped = true;
                i = at + 2;
            } else {
                i = at + 1;
            }
        };

        if close > self.line_end {
            self.extra_newlines += memchr_iter(b'\n', &self.raw[self.line_end..close]).count();
            self.line_end = memchr(b'\n', &self.raw[close..]).map_or(self.raw.len(), |o| close + o);
            self.end = trim_end(self.raw, close + 1, self.line_end);
            if self.line_end > self.text.len() {
                return Err(LineErrorKind::InvalidUtf8);
            }
        }

        let content = &self.text[open + 1..close];
        let value = if escaped {
            Cow::Owned(unescape_string(content))
        } else {
            Cow::Borrowed(content)
        };
        self.pos = close + 1;
        if self.pos < self.end && !matches!(self.bytes[self.pos], b',' | b' ') {
            return Err(LineErrorKind::CharactersAfterString { key: excerpt(key) });
        }
        Ok(FieldValue::String(value))
    }

    fn timestamp(&mut self) -> Result<i64, LineErrorKind> {
        let start = self.pos;
        let mut i = start;
        while i < self.end && !is_blank(self.bytes[i]) {
            i += 1;
        }
        let token = &self.text[start..i];
        let timestamp = parse_i64(token.as_bytes()).map_err(|e| match e {
            IntError::Invalid => LineErrorKind::InvalidTimestamp {
                value: excerpt(token),
            },
            IntError::Overflow => LineErrorKind::TimestampOutOfRange {
                value: excerpt(token),
            },
        })?;
        // `end` excludes trailing whitespace, so anything left is more than whitespace.
        if i < self.end {
            let rest = self.text[i..self.end].trim_start_matches([' ', '\t', '\r']);
            return Err(LineErrorKind::TrailingCharacters {
                text: excerpt(rest),
            });
        }
        self.pos = i;
        Ok(timestamp)
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.end && self.bytes[self.pos] == b' ' {
            self.pos += 1;
        }
    }

    /// Reads a measurement, key or tag value at `pos`, leaving `pos` at the byte it stopped at.
    // Inlined so the returned `Cow` stays in registers.
    #[inline(always)]
    fn name(&mut self, kind: Name) -> (Cow<'a, str>, Stop) {
        let start = self.pos;
        // The unescaped name, once an escape has made it differ from the input.
        let mut owned: Option<String> = None;
        // Start of the input not yet copied into `owned`.
        let mut copied_to = start;
        let mut i = next_structural(self.raw, start, self.end);
        while i < self.end {
            match self.bytes[i] {
                b',' | b' ' => break,
                b'=' if matches!(kind, Name::Key) => break,
                b'\\' => match self.bytes.get(i + 1) {
                    Some(&next) if i + 1 < self.end && kind.escapes(next) => {
                        let out = owned.get_or_insert_with(String::new);
                        out.push_str(&self.text[copied_to..i]);
                        out.push(char::from(next));
                        i += 2;
                        copied_to = i;
                    }
                    // A backslash that escapes nothing is literal.
                    _ => i += 1,
                },
                // `=` in a measurement or tag value is literal.
                _ => i += 1,
            }
            i = next_structural(self.raw, i, self.end);
        }
        self.pos = i;
        let stop = if i >= self.end {
            Stop::End
        } else {
            match self.bytes[i] {
                b',' => Stop::Comma,
                b' ' => Stop::Space,
                _ => Stop::Equals,
            }
        };
        let name = match owned {
            None => Cow::Borrowed(&self.text[start..i]),
            Some(mut out) => {
                out.push_str(&self.text[copied_to..i]);
                Cow::Owned(out)
            }
        };
        (name, stop)
    }
}

/// The content of a quoted string with `\"` and `\\` unescaped.
fn unescape_string(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        match rest.as_bytes().get(at + 1) {
            Some(&next @ (b'"' | b'\\')) => {
                out.push(char::from(next));
                rest = &rest[at + 2..];
            }
            _ => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why a non-string field value did not parse.
enum ScalarError {
    Missing,
    Invalid,
    IntegerRange,
    UnsignedRange,
    FloatRange,
}

/// Parses a float, integer (`i`), unsigned (`u`) or boolean field value.
fn scalar_value(token: &str) -> Result<FieldValue<'static>, ScalarError> {
    let bytes = token.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return Err(ScalarError::Missing);
    };
    match last {
        b'i' => match parse_i64(&bytes[..bytes.len() - 1]) {
            Ok(v) => Ok(FieldValue::I64(v)),
            Err(IntError::Invalid) => Err(ScalarError::Invalid),
            Err(IntError::Overflow) => Err(ScalarError::IntegerRange),
        },
        b'u' => match parse_u64(&bytes[..bytes.len() - 1]) {
            Ok(v) => Ok(FieldValue::U64(v)),
            Err(IntError::Invalid) => Err(ScalarError::Invalid),
            Err(IntError::Overflow) => Err(ScalarError::UnsignedRange),
        },
        _ if matches!(first, b't' | b'T' | b'f' | b'F') => match token {
            "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
            _ => Err(ScalarError::Invalid),
        },
        _ => {
            // Past an optional `-`, a digit or `.` rules out what Rust's float syntax has
            // beyond InfluxDB's (`+`, `inf`, `infinity`, `nan`); the rest is the same syntax
            // (`is_float_syntax` in the tests spells it out).
            let unsigned = usize::from(first == b'-');
            if !matches!(bytes.get(unsigned), Some(b'0'..=b'9' | b'.')) {
                return Err(ScalarError::Invalid);
            }
            match token.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(FieldValue::F64(v)),
                Ok(_) => Err(ScalarError::FloatRange),
                Err(_) => Err(ScalarError::Invalid),
            }
        }
    }
}

/// `-?(digits[.digits*] | .digits)([eE][+-]?digits)?`: what InfluxDB accepts as a float.
/// Rust's own parser also takes `inf`, `nan` and a leading `+`, which InfluxDB rejects.
#[cfg(test)]
fn is_float_syntax(bytes: &[u8]) -> bool {
    let n = bytes.len();
    let mut i = usize::from(bytes.first() == Some(&b'-'));
    let mut digits = 0;
    while i < n && bytes[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < n && bytes[i] == b'.' {
        i += 1;
        while i < n && bytes[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < n && matches!(bytes[i], b'e' | b'E') {
        i += 1;
        if i < n && matches!(bytes[i], b'+' | b'-') {
            i += 1;
        }
        let exponent_start = i;
        while i < n && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == exponent_start {
            return false;
        }
    }
    i == n
}

enum IntError {
    Invalid,
    Overflow,
}

/// `-?digits` as an i64.
fn parse_i64(bytes: &[u8]) -> Result<i64, IntError> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let magnitude = parse_u64(digits)?;
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        if magnitude > i64::MAX as u64 + 1 {
            return Err(IntError::Overflow);
        }
        Ok(0i64.wrapping_sub_unsigned(magnitude))
    } else {
        i64::try_from(magnitude).map_err(|_| IntError::Overflow)
    }
}

/// `digits` as a u64.
fn parse_u64(digits: &[u8]) -> Result<u64, IntError> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(IntError::Invalid);
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(IntError::Overflow)
    })
}

/// Keys of a tag or field set compared pairwise; past this many, duplicates are found by
/// sorting instead.
const PAIRWISE_KEYS: usize = 16;

/// Whether `key` repeats one of `earlier`, checked pairwise while `earlier` is short.
///
/// Pairwise comparison is the fastest check for the usual handful of keys (most pairs
/// differ in length) but quadratic: a 10 MB line of 1 M fields would take minutes. Longer
/// sets get [`first_repeat_sorted`] once they are complete.
fn repeats_pairwise<V>(earlier: &[(Cow<'_, str>, V)], key: &str) -> bool {
    earlier.len() < PAIRWISE_KEYS && earlier.iter().any(|(k, _)| k == key)
}

/// The first key, in line order, that repeats an earlier key, for sets longer than
/// [`PAIRWISE_KEYS`] (shorter ones were checked by [`repeats_pairwise`]). `scratch` is kept
/// between lines.
fn first_repeat_sorted<'e, V>(
    entries: &'e [(Cow<'_, str>, V)],
    scratch: &mut Vec<usize>,
) -> Option<&'e str> {
    if entries.len() <= PAIRWISE_KEYS {
        return None;
    }
    let key = |i: usize| entries[i].0.as_ref();
    scratch.clear();
    scratch.extend(0..entries.len());
    // Stable, so equal keys stay in line order: the second of each run is its first repeat.
    scratch.sort_by(|&a, &b| key(a).cmp(key(b)));
    scratch
        .windows(2)
        .filter(|pair| key(pair[0]) == key(pair[1]))
        .map(|pair| pair[1])
        .min()
        .map(key)
}

#[cfg(test)]
mod tests;

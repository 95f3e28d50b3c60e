//! Zero-copy parser for InfluxDB line protocol, the write format of the ingest path.
//!
//! ```text
//! HTTP body (&[u8]) --LineParser::next_line--> ParsedLine<'body> (reused) --> ingester builders
//!                                          \--> LineError<'body> (line number, raw line, kind)
//! ```
//!
//! # Grammar
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! - Lines end at `\n`; a `\r` before it is dropped. Leading and trailing spaces and tabs are
//!   ignored. Lines that are blank or whose first non-blank character is `#` are skipped but
//!   still counted for line numbers. One or more spaces separate the three sections.
//! - Measurement: non-empty; ends at an unescaped `,` (tags follow) or ` `. `\,` `\ ` and
//!   `\\` are escapes.
//! - Tag keys, tag values and field keys: non-empty; `\,` `\=` `\ ` and `\\` are escapes. A
//!   tag value may contain an unescaped `=`.
//! - In all of these a backslash before any other character is a literal backslash, and a
//!   newline always ends the line.
//! - Field values: a float (`-1.5`, `1`, `.5`, `2e-3`; no `+`, `inf` or `nan`), an integer
//!   `-12i` (i64), an unsigned integer `12u` (u64), a string `"..."` in which only `\"` and
//!   `\\` are escapes and which may span lines, or a boolean (`t`, `T`, `true`, `True`,
//!   `TRUE`, and the same for false). At least one field; a key may appear once per line, as
//!   may a tag key.
//! - Timestamp: an optional signed i64, as written (the caller applies the precision).
//! - Every line is parsed on its own: a bad line is reported with its number and the next
//!   line is parsed as usual. Invalid UTF-8 fails the line it is in.
//!
//! A raw newline inside a string field's quotes is part of the value, as in InfluxDB: the
//! line continues after the closing quote. It only does so while the line parses up to that
//! string; if the line fails earlier, the next physical line is parsed as a new line. A
//! string with no closing quote in the rest of the body fails its line alone.
//!
//! # Zero-copy invariant
//!
//! Names, keys, tag values and strings are [`Cow::Borrowed`](std::borrow::Cow) slices of the
//! body unless an escape changed them; only then is a `String` allocated. [`ParsedLine`] is
//! reused across lines, so a body without escapes is parsed without heap allocation once
//! its `Vec`s have grown to the widest line. The body is validated as UTF-8 once, not per
//! token.

mod error;
mod parser;
mod scan;

pub use error::{LineError, LineErrorKind};
pub use parser::{FieldValue, LineParser, ParsedLine};

#[cfg(test)]
mod proptests;

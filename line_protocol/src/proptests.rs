//! Property tests: written lines parse back to what was written, and no input panics.

use std::collections::HashSet;

use proptest::prelude::*;

use crate::{FieldValue, LineParser, ParsedLine};

/// An owned line, as a client would build it.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, Value)>,
    timestamp: Option<i64>,
}

#[derive(Debug, Clone)]
enum Value {
    F64(f64),
    I64(i64),
    U64(u64),
    String(String),
    /// The value and which of its five spellings to write.
    Bool(bool, usize),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            // Bitwise, so -0.0 and 0.0 differ.
            (Self::F64(a), Self::F64(b)) => a.to_bits() == b.to_bits(),
            (Self::I64(a), Self::I64(b)) => a == b,
            (Self::U64(a), Self::U64(b)) => a == b,
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bool(a, _), Self::Bool(b, _)) => a == b,
            _ => false,
        }
    }
}

impl Line {
    fn from_parsed(line: &ParsedLine<'_>) -> Self {
        Self {
            measurement: line.measurement.to_string(),
            tags: line
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: line
                .fields
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        FieldValue::F64(v) => Value::F64(*v),
                        FieldValue::I64(v) => Value::I64(*v),
                        FieldValue::U64(v) => Value::U64(*v),
                        FieldValue::String(v) => Value::String(v.to_string()),
                        FieldValue::Bool(v) => Value::Bool(*v, 0),
                    };
                    (k.to_string(), value)
                })
                .collect(),
            timestamp: line.timestamp,
        }
    }
}

/// Test-only line protocol writer: escapes exactly what the parser unescapes.
fn write_line(out: &mut String, line: &Line) {
    escape(out, &line.measurement, &[',', ' ', '\\']);
    for (key, value) in &line.tags {
        out.push(',');
        escape(out, key, &[',', '=', ' ', '\\']);
        out.push('=');
        escape(out, value, &[',', '=', ' ', '\\']);
    }
    out.push(' ');
    for (i, (key, value)) in line.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(out, key, &[',', '=', ' ', '\\']);
        out.push('=');
        match value {
            // Debug prints a form that parses back exactly, with an exponent when long.
            Value::F64(v) => out.push_str(&format!("{v:?}")),
            Value::I64(v) => out.push_str(&format!("{v}i")),
            Value::U64(v) => out.push_str(&format!("{v}u")),
            Value::String(v) => {
                out.push('"');
                escape(out, v, &['"', '\\']);
                out.push('"');
            }
            Value::Bool(v, spelling) => {
                let spellings = if *v {
                    ["t", "T", "true", "True", "TRUE"]
                } else {
                    ["f", "F", "false", "False", "FALSE"]
                };
                out.push_str(spellings[spelling % 5]);
            }
        }
    }
    if let Some(ts) = line.timestamp {
        out.push_str(&format!(" {ts}"));
    }
}

fn escape(out: &mut String, text: &str, specials: &[char]) {
    for c in text.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Names mixing plain characters with every character that needs escaping. No newlines:
/// line protocol cannot carry them outside strings.
fn name() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        'a', 'b', 'z', 'A', '0', '9', '_', '-', '.', ',', '=', ' ', '\\', '"', '#', '\t', 'é',
        '東', '🙂', 'i', 'u', 't',
    ]);
    prop::collection::vec(chars, 1..8).prop_map(|c| c.into_iter().collect())
}

/// A measurement name: a line whose first non-blank character is `#` is a comment, and
/// leading tabs are blank, so a measurement cannot start with either.
fn measurement() -> impl Strategy<Value = String> {
    name().prop_filter("starts a comment or with a blank", |m| {
        !m.starts_with(['#', '\t'])
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::F64),
        (-1e6f64..1e6).prop_map(Value::F64),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(Value::U64),
        // Any text, raw newlines and quotes included.
        any::<String>().prop_map(Value::String),
        "[a-z \"\\\\\n\r,=]{0,12}".prop_map(Value::String),
        (any::<bool>(), 0..5usize).prop_map(|(v, s)| Value::Bool(v, s)),
    ]
}

fn unique_keys<V>(pairs: Vec<(String, V)>) -> Vec<(String, V)> {
    let mut seen = HashSet::new();
    pairs
        .into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

fn line() -> impl Strategy<Value = Line> {
    (
        measurement(),
        prop::collection::vec((name(), name()), 0..5).prop_map(unique_keys),
        prop::collection::vec((name(), value()), 1..5).prop_map(unique_keys),
        any::<Option<i64>>(),
    )
        .prop_map(|(measurement, tags, fields, timestamp)| Line {
            measurement,
            tags,
            fields,
            timestamp,
        })
}

/// What may precede a line: nothing, a blank line or a comment.
fn filler() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "",
        "",
        "\n",
        "  \t\n",
        "# comment, with \"quote\n",
        "\r\n",
    ])
}

/// Every line of `body` as lines or errors, checking what holds for any input.
fn parse_checked(body: &[u8]) -> Vec<Result<Line, String>> {
    let mut parser = LineParser::new(body);
    let mut line = ParsedLine::default();
    let mut out = Vec::new();
    let mut last_line_number = 0;
    let body_range = body.as_ptr_range();
    while let Some(result) = parser.next_line(&mut line) {
        let (line_number, original) = match &result {
            Ok(()) => (line.line_number, line.original),
            Err(e) => (e.line_number, e.original),
        };
        assert!(line_number > last_line_number, "line numbers increase");
        last_line_number = line_number;
        let range = original.as_ptr_range();
        assert!(
            original.is_empty() || (body_range.start <= range.start && range.end <= body_range.end),
            "original is a slice of the body"
        );
        assert!(
            !original.ends_with(b"\n"),
            "original excludes the line ending"
        );
        out.push(match result {
            Ok(()) => {
                assert!(!line.measurement.is_empty());
                assert!(!line.fields.is_empty());
                Ok(Line::from_parsed(&line))
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = e.original_lossy();
                Err(e.to_string())
            }
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn written_lines_parse_back_unchanged(
        lines in prop::collection::vec((filler(), line(), any::<bool>()), 1..6),
    ) {
        let mut body = String::new();
        let mut expected_numbers = Vec::new();
        for (filler, line, crlf) in &lines {
            body.push_str(filler);
            expected_numbers.push(1 + body.matches('\n').count());
            write_line(&mut body, line);
            body.push_str(if *crlf { "\r\n" } else { "\n" });
        }

        let mut parser = LineParser::new(body.as_bytes());
        let mut parsed = ParsedLine::default();
        for ((_, expected, _), number) in lines.iter().zip(expected_numbers) {
            let result = parser.next_line(&mut parsed);
            prop_assert!(result.is_some(), "missing line in {:?}", body);
            if let Some(Err(e)) = result {
                prop_assert!(false, "{} in {:?}", e, body);
            }
            prop_assert_eq!(&Line::from_parsed(&parsed), expected);
            prop_assert_eq!(parsed.line_number, number);
        }
        prop_assert!(parser.next_line(&mut parsed).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
        parse_checked(&body);
    }

    #[test]
    fn structured_garbage_never_panics(
        body in prop::collection::vec(
            prop::sample::select(b"ab,= \\\"\n\r\t#1-.eiutF\xff\xc3\xa9".to_vec()),
            0..200,
        ),
    ) {
        parse_checked(&body);
    }

    /// Whatever parses, however odd, means the same after a round trip through the writer.
    #[test]
    fn parsed_garbage_rewrites_to_the_same_line(
        body in prop::collection::vec(
            prop::sample::select(b"ab,= \\\"\n\t#1-.eiutF\xc3\xa9".to_vec()),
            0..120,
        ),
    ) {
        for line in parse_checked(&body).into_iter().flatten() {
            // The writer cannot express a newline in a name or a measurement that starts a
            // comment or with a blank; the parser never produces them.
            let all_names = std::iter::once(&line.measurement)
                .chain(line.tags.iter().flat_map(|(k, v)| [k, v]))
                .chain(line.fields.iter().map(|(k, _)| k));
            for name in all_names {
                prop_assert!(!name.contains('\n'), "a name holds a newline: {:?}", line);
            }
            prop_assert!(!line.measurement.starts_with(['#', '\t', '\r']), "{:?}", line);
            let mut written = String::new();
            write_line(&mut written, &line);
            let reparsed = parse_checked(written.as_bytes());
            prop_assert_eq!(reparsed.len(), 1, "{:?}", written);
            prop_assert_eq!(reparsed[0].as_ref(), Ok(&line), "{:?}", written);
        }
    }
}

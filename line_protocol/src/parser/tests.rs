use std::borrow::Cow;

use crate::{FieldValue, LineError, LineErrorKind, LineParser, ParsedLine};

/// Every line of `body`, each parsed into a fresh `ParsedLine`.
fn parse_all(body: &[u8]) -> Vec<Result<ParsedLine<'_>, LineError<'_>>> {
    let mut parser = LineParser::new(body);
    let mut out = Vec::new();
    loop {
        let mut line = ParsedLine::default();
        match parser.next_line(&mut line) {
            None => return out,
            Some(Ok(())) => out.push(Ok(line)),
            Some(Err(e)) => out.push(Err(e)),
        }
    }
}

/// The single line of `body`, which must parse.
fn one(body: &str) -> ParsedLine<'_> {
    let mut lines = parse_all(body.as_bytes());
    assert_eq!(lines.len(), 1, "expected one line in {body:?}");
    lines
        .remove(0)
        .unwrap_or_else(|e| panic!("{body:?} failed: {e}"))
}

/// The error of the single line of `body`, which must fail.
fn error(body: &str) -> LineErrorKind {
    let mut lines = parse_all(body.as_bytes());
    assert_eq!(lines.len(), 1, "expected one line in {body:?}");
    match lines.remove(0) {
        Ok(line) => panic!("{body:?} parsed as {line:?}"),
        Err(e) => e.kind,
    }
}

fn field<'a>(line: &'a ParsedLine<'_>, key: &str) -> &'a FieldValue<'a> {
    &line
        .fields
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no field {key}"))
        .1
}

fn tags<'a>(line: &'a ParsedLine<'_>) -> Vec<(&'a str, &'a str)> {
    line.tags
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect()
}

fn key(k: &str) -> String {
    k.to_owned()
}

// ---- structure ----

#[test]
fn parses_measurement_tags_fields_and_timestamp() {
    let line = one("cpu,host=a,region=west usage=0.5,count=3i 1700000000000000000");
    assert_eq!(line.measurement, "cpu");
    assert_eq!(tags(&line), [("host", "a"), ("region", "west")]);
    assert_eq!(
        line.fields,
        vec![
            ("usage".into(), FieldValue::F64(0.5)),
            ("count".into(), FieldValue::I64(3))
        ]
    );
    assert_eq!(line.timestamp, Some(1_700_000_000_000_000_000));
    assert_eq!(line.line_number, 1);
    assert_eq!(
        line.original,
        b"cpu,host=a,region=west usage=0.5,count=3i 1700000000000000000"
    );
}

#[test]
fn parses_line_without_tags() {
    let line = one("cpu value=1");
    assert_eq!(line.measurement, "cpu");
    assert!(line.tags.is_empty());
    assert_eq!(line.fields, vec![("value".into(), FieldValue::F64(1.0))]);
    assert_eq!(line.timestamp, None);
}

#[test]
fn keeps_tags_and_fields_in_line_order() {
    let line = one("m,z=1,a=2,m=3 z=1,a=2,m=3");
    assert_eq!(tags(&line), [("z", "1"), ("a", "2"), ("m", "3")]);
    let keys: Vec<&str> = line.fields.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn accepts_several_spaces_between_sections() {
    let line = one("cpu,host=a   value=1   123");
    assert_eq!(tags(&line), [("host", "a")]);
    assert_eq!(line.timestamp, Some(123));
}

#[test]
fn ignores_leading_and_trailing_whitespace() {
    let line = one(" \t cpu value=1 123 \t ");
    assert_eq!(line.measurement, "cpu");
    assert_eq!(line.timestamp, Some(123));
    assert_eq!(line.original, b" \t cpu value=1 123 \t ");
    assert_eq!(one("cpu value=1  ").timestamp, None);
}

#[test]
fn tag_value_may_contain_unescaped_equals() {
    assert_eq!(tags(&one("m,expr=a=b f=1")), [("expr", "a=b")]);
}

#[test]
fn measurement_may_contain_unescaped_equals() {
    assert_eq!(one("a=b f=1").measurement, "a=b");
}

#[test]
fn unicode_names_and_values() {
    let line = one("température,ville=Zürich,城市=東京 湿度=0.5,note=\"ça va 🙂\"");
    assert_eq!(line.measurement, "température");
    assert_eq!(tags(&line), [("ville", "Zürich"), ("城市", "東京")]);
    assert_eq!(field(&line, "湿度"), &FieldValue::F64(0.5));
    assert_eq!(field(&line, "note"), &FieldValue::String("ça va 🙂".into()));
}

// ---- escaping ----

#[test]
fn measurement_escapes_comma_space_and_backslash() {
    assert_eq!(one(r"my\,meas\ ure f=1").measurement, "my,meas ure");
    assert_eq!(one(r"a\\b f=1").measurement, r"a\b");
}

#[test]
fn measurement_keeps_backslash_before_equals_and_other_characters() {
    assert_eq!(one(r"a\=b f=1").measurement, r"a\=b");
    assert_eq!(one(r"a\nb f=1").measurement, r"a\nb");
}

#[test]
fn tag_keys_and_values_escape_comma_equals_space_and_backslash() {
    let line = one(r"m,k\,e\=y\ 1=v\,a\=l\ 1,k2=x\\y f=1");
    assert_eq!(tags(&line), [("k,e=y 1", "v,a=l 1"), ("k2", r"x\y")]);
}

#[test]
fn field_keys_escape_comma_equals_space_and_backslash() {
    let line = one(r"m f\,i\=e\ l\\d=1");
    assert_eq!(line.fields[0].0, r"f,i=e l\d");
}

#[test]
fn backslash_before_other_characters_is_literal() {
    // `\ ` escapes the first space, so the field set begins after the second one.
    let line = one(r"m,t\ag=v\al\  f\ield=1");
    assert_eq!(tags(&line), [(r"t\ag", r"v\al ")]);
    assert_eq!(line.fields[0].0, r"f\ield");
}

#[test]
fn escaped_backslash_before_separator_ends_the_name() {
    let line = one(r"m,t=a\\,u=b f=1");
    assert_eq!(tags(&line), [("t", r"a\"), ("u", "b")]);
}

#[test]
fn backslash_at_end_of_line_is_literal() {
    assert_eq!(error("m,t=a\\"), LineErrorKind::MissingFields);
    assert_eq!(
        error("m f\\"),
        LineErrorKind::MissingFieldValue { key: key("f\\") }
    );
}

#[test]
fn names_without_escapes_borrow_from_the_body() {
    let line = one("cpu,host=a value=\"text\"");
    assert!(matches!(line.measurement, Cow::Borrowed(_)));
    assert!(matches!(line.tags[0].0, Cow::Borrowed(_)));
    assert!(matches!(line.tags[0].1, Cow::Borrowed(_)));
    assert!(matches!(line.fields[0].0, Cow::Borrowed(_)));
    assert!(matches!(
        line.fields[0].1,
        FieldValue::String(Cow::Borrowed(_))
    ));
}

#[test]
fn literal_backslash_still_borrows() {
    let line = one(r#"c\pu,h\ost=a v\al="a\b""#);
    assert!(matches!(line.measurement, Cow::Borrowed(r"c\pu")));
    assert!(matches!(line.tags[0].0, Cow::Borrowed(r"h\ost")));
    assert!(matches!(
        line.fields[0].1,
        FieldValue::String(Cow::Borrowed(r"a\b"))
    ));
}

#[test]
fn escaped_names_are_owned() {
    let line = one(r#"c\ pu,h\=st=a\,b v\ al="q\"uote""#);
    assert!(matches!(line.measurement, Cow::Owned(_)));
    assert!(matches!(line.tags[0].0, Cow::Owned(_)));
    assert!(matches!(line.tags[0].1, Cow::Owned(_)));
    assert!(matches!(line.fields[0].0, Cow::Owned(_)));
    assert!(matches!(
        line.fields[0].1,
        FieldValue::String(Cow::Owned(_))
    ));
}

// ---- field values ----

#[test]
fn parses_floats() {
    let cases = [
        ("1", 1.0),
        ("-1", -1.0),
        ("1.5", 1.5),
        ("-1.5e10", -1.5e10),
        ("1e-3", 1e-3),
        ("1E+3", 1e3),
        (".5", 0.5),
        ("1.", 1.0),
        ("-0", -0.0),
        (
            "58.1317132304976170",
            "58.1317132304976170".parse().unwrap(),
        ),
        ("1e-400", 0.0),
    ];
    for (text, expected) in cases {
        let body = format!("m f={text}");
        assert_eq!(
            field(&one(&body), "f"),
            &FieldValue::F64(expected),
            "{text}"
        );
    }
}

#[test]
fn rejects_malformed_floats() {
    for text in [
        "1.2.3", "+1", "inf", "-inf", "nan", "NaN", "Infinity", "1e", "1e+", "-", ".", "e5",
        "1_000", "0x10", "1.5x", "--1",
    ] {
        let body = format!("m f={text}");
        assert_eq!(
            error(&body),
            LineErrorKind::InvalidFieldValue {
                key: key("f"),
                value: text.to_owned()
            },
            "{text}"
        );
    }
}

#[test]
fn rejects_float_overflow() {
    assert_eq!(
        error("m f=1e400"),
        LineErrorKind::FloatOutOfRange {
            key: key("f"),
            value: "1e400".into()
        }
    );
}

#[test]
fn parses_signed_integers() {
    assert_eq!(field(&one("m f=123i"), "f"), &FieldValue::I64(123));
    assert_eq!(field(&one("m f=-123i"), "f"), &FieldValue::I64(-123));
    assert_eq!(field(&one("m f=0i"), "f"), &FieldValue::I64(0));
    assert_eq!(
        field(&one("m f=9223372036854775807i"), "f"),
        &FieldValue::I64(i64::MAX)
    );
    assert_eq!(
        field(&one("m f=-9223372036854775808i"), "f"),
        &FieldValue::I64(i64::MIN)
    );
}

#[test]
fn rejects_signed_integers_out_of_range() {
    for text in [
        "9223372036854775808i",
        "-9223372036854775809i",
        "99999999999999999999999i",
    ] {
        assert_eq!(
            error(&format!("m f={text}")),
            LineErrorKind::IntegerOutOfRange {
                key: key("f"),
                value: text.into()
            }
        );
    }
}

#[test]
fn rejects_malformed_integers() {
    for text in ["i", "-i", "1.5i", "+1i", "1ii", "0x1i", "1e3i"] {
        let body = format!("m f={text}");
        assert!(
            matches!(error(&body), LineErrorKind::InvalidFieldValue { .. }),
            "{text}"
        );
    }
}

#[test]
fn parses_unsigned_integers() {
    assert_eq!(field(&one("m f=0u"), "f"), &FieldValue::U64(0));
    assert_eq!(
        field(&one("m f=18446744073709551615u"), "f"),
        &FieldValue::U64(u64::MAX)
    );
}

#[test]
fn rejects_unsigned_out_of_range_and_negative() {
    assert_eq!(
        error("m f=18446744073709551616u"),
        LineErrorKind::UnsignedOutOfRange {
            key: key("f"),
            value: "18446744073709551616u".into()
        }
    );
    assert_eq!(
        error("m f=-1u"),
        LineErrorKind::InvalidFieldValue {
            key: key("f"),
            value: "-1u".into()
        }
    );
}

#[test]
fn parses_every_boolean_spelling() {
    for text in ["t", "T", "true", "True", "TRUE"] {
        assert_eq!(
            field(&one(&format!("m f={text}")), "f"),
            &FieldValue::Bool(true),
            "{text}"
        );
    }
    for text in ["f", "F", "false", "False", "FALSE"] {
        assert_eq!(
            field(&one(&format!("m f={text}")), "f"),
            &FieldValue::Bool(false),
            "{text}"
        );
    }
}

#[test]
fn rejects_other_boolean_spellings() {
    for text in ["tRUE", "yes", "tru", "falsey", "FaLsE"] {
        assert!(matches!(
            error(&format!("m f={text}")),
            LineErrorKind::InvalidFieldValue { .. }
        ));
    }
}

#[test]
fn parses_strings_with_separators_inside() {
    let line = one(r#"m s="a, b=c d",n=1i"#);
    assert_eq!(field(&line, "s"), &FieldValue::String("a, b=c d".into()));
    assert_eq!(field(&line, "n"), &FieldValue::I64(1));
}

#[test]
fn parses_empty_string() {
    assert_eq!(
        field(&one(r#"m s="""#), "s"),
        &FieldValue::String("".into())
    );
}

#[test]
fn string_escapes_only_quote_and_backslash() {
    let line = one(r#"m s="say \"hi\" \\ \n \, end\\""#);
    assert_eq!(
        field(&line, "s"),
        &FieldValue::String(r#"say "hi" \ \n \, end\"#.into())
    );
}

#[test]
fn string_may_contain_raw_newlines() {
    let body = "m s=\"two\nlines\",n=1i 5\nm n=2i\n";
    let lines = parse_all(body.as_bytes());
    let first = lines[0].as_ref().unwrap();
    assert_eq!(field(first, "s"), &FieldValue::String("two\nlines".into()));
    assert_eq!(field(first, "n"), &FieldValue::I64(1));
    assert_eq!(first.timestamp, Some(5));
    assert_eq!(first.line_number, 1);
    assert_eq!(first.original, b"m s=\"two\nlines\",n=1i 5");
    let second = lines[1].as_ref().unwrap();
    assert_eq!(second.line_number, 3);
    assert_eq!(lines.len(), 2);
}

#[test]
fn string_keeps_crlf_inside_quotes() {
    let lines = parse_all(b"m s=\"a\r\nb\"\r\nm n=1i\r\n");
    assert_eq!(
        field(lines[0].as_ref().unwrap(), "s"),
        &FieldValue::String("a\r\nb".into())
    );
    assert_eq!(lines[1].as_ref().unwrap().line_number, 3);
}

#[test]
fn rejects_unterminated_string_and_parses_next_line() {
    let lines = parse_all(b"m s=\"open\nm n=1i\n");
    assert_eq!(
        lines[0].as_ref().unwrap_err().kind,
        LineErrorKind::UnterminatedString { key: key("s") }
    );
    assert_eq!(lines[0].as_ref().unwrap_err().original, b"m s=\"open");
    let next = lines[1].as_ref().unwrap();
    assert_eq!(next.line_number, 2);
    assert_eq!(field(next, "n"), &FieldValue::I64(1));
}

#[test]
fn rejects_characters_after_closing_quote() {
    assert_eq!(
        error(r#"m s="a"b"#),
        LineErrorKind::CharactersAfterString { key: key("s") }
    );
}

#[test]
fn quote_only_starts_a_string_at_the_start_of_a_field_value() {
    let line = one(r#"m,t="a" f"k=1"#);
    assert_eq!(tags(&line), [("t", "\"a\"")]);
    assert_eq!(line.fields[0].0, "f\"k");
    assert_eq!(
        error(r#"m f=a"b""#),
        LineErrorKind::InvalidFieldValue {
            key: key("f"),
            value: "a\"b\"".into()
        }
    );
}

// ---- timestamps ----

#[test]
fn timestamp_is_optional() {
    assert_eq!(one("m f=1").timestamp, None);
}

#[test]
fn parses_negative_and_extreme_timestamps() {
    assert_eq!(one("m f=1 -1").timestamp, Some(-1));
    assert_eq!(one("m f=1 0").timestamp, Some(0));
    assert_eq!(one("m f=1 9223372036854775807").timestamp, Some(i64::MAX));
    assert_eq!(one("m f=1 -9223372036854775808").timestamp, Some(i64::MIN));
}

#[test]
fn rejects_invalid_timestamps() {
    for text in ["1.5", "abc", "12a", "+5", "-", "1e9"] {
        assert_eq!(
            error(&format!("m f=1 {text}")),
            LineErrorKind::InvalidTimestamp { value: text.into() },
            "{text}"
        );
    }
}

#[test]
fn rejects_timestamp_out_of_range() {
    assert_eq!(
        error("m f=1 9223372036854775808"),
        LineErrorKind::TimestampOutOfRange {
            value: "9223372036854775808".into()
        }
    );
}

#[test]
fn rejects_characters_after_timestamp() {
    assert_eq!(
        error("m f=1 123 456"),
        LineErrorKind::TrailingCharacters { text: "456".into() }
    );
}

// ---- lines ----

#[test]
fn skips_blank_and_comment_lines_but_counts_them() {
    let body = b"# header\n\n   \n\t# indented comment\nm f=1\n\n# tail\nm f=2";
    let lines = parse_all(body);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].as_ref().unwrap().line_number, 5);
    assert_eq!(lines[1].as_ref().unwrap().line_number, 8);
}

#[test]
fn comment_lines_may_hold_anything() {
    let lines = parse_all(b"# \"unclosed \xff\nm f=1\n");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].as_ref().unwrap().line_number, 2);
}

#[test]
fn hash_after_start_is_part_of_the_line() {
    assert_eq!(one("m#1 f=1").measurement, "m#1");
}

#[test]
fn strips_crlf_line_endings() {
    let lines = parse_all(b"m,t=a f=1i 10\r\nm f=\"s\"\r\n\r\nm f=t\r\n");
    assert_eq!(lines.len(), 3);
    let first = lines[0].as_ref().unwrap();
    assert_eq!(first.timestamp, Some(10));
    assert_eq!(first.original, b"m,t=a f=1i 10");
    assert_eq!(
        field(lines[1].as_ref().unwrap(), "f"),
        &FieldValue::String("s".into())
    );
    assert_eq!(lines[2].as_ref().unwrap().line_number, 4);
}

#[test]
fn empty_body_has_no_lines() {
    assert!(parse_all(b"").is_empty());
    assert!(parse_all(b"\n\n").is_empty());
}

#[test]
fn last_line_needs_no_newline() {
    assert_eq!(parse_all(b"m f=1\nm f=2").len(), 2);
}

#[test]
fn error_in_one_line_does_not_affect_the_next() {
    let lines = parse_all(b"m f=1\nm f=\nm,t f=1\nm f=2 x\nm f=3\n");
    assert!(lines[0].is_ok());
    assert_eq!(lines[1].as_ref().unwrap_err().line_number, 2);
    assert_eq!(lines[2].as_ref().unwrap_err().line_number, 3);
    assert_eq!(lines[3].as_ref().unwrap_err().line_number, 4);
    let last = lines[4].as_ref().unwrap();
    assert_eq!(last.line_number, 5);
    assert_eq!(field(last, "f"), &FieldValue::F64(3.0));
}

#[test]
fn error_reports_line_number_and_original_line() {
    let lines = parse_all(b"m f=1\n\nm,host=a,host=b f=1\r\n");
    let e = lines[1].as_ref().unwrap_err();
    assert_eq!(e.line_number, 3);
    assert_eq!(e.original, b"m,host=a,host=b f=1");
    assert_eq!(e.to_string(), "line 3: duplicate tag `host`");
}

#[test]
fn invalid_utf8_fails_only_its_line() {
    let lines = parse_all(b"m f=1\nm,t=\xff\xfe f=1\nm f=2\nm s=\"\xc3\" \nm f=3");
    assert_eq!(lines.len(), 5);
    assert!(lines[0].is_ok());
    let e = lines[1].as_ref().unwrap_err();
    assert_eq!(e.kind, LineErrorKind::InvalidUtf8);
    assert_eq!(e.line_number, 2);
    assert_eq!(e.original_lossy(), "m,t=\u{fffd}\u{fffd} f=1");
    assert!(lines[2].is_ok());
    assert_eq!(
        lines[3].as_ref().unwrap_err().kind,
        LineErrorKind::InvalidUtf8
    );
    assert_eq!(
        field(lines[4].as_ref().unwrap(), "f"),
        &FieldValue::F64(3.0)
    );
}

#[test]
fn invalid_utf8_inside_multiline_string_fails_that_line() {
    let lines = parse_all(b"m s=\"a\n\xff\"\nm f=1\n");
    assert_eq!(lines.len(), 2);
    let e = lines[0].as_ref().unwrap_err();
    assert_eq!(e.kind, LineErrorKind::InvalidUtf8);
    assert_eq!(e.original, b"m s=\"a\n\xff\"");
    assert_eq!(lines[1].as_ref().unwrap().line_number, 3);
}

#[test]
fn reuses_parsed_line_between_lines() {
    let body = b"a,t=1,u=2 f=1,g=2 5\nb h=3\n";
    let mut parser = LineParser::new(body);
    let mut line = ParsedLine::default();
    parser.next_line(&mut line).unwrap().unwrap();
    let capacity = line.tags.capacity();
    parser.next_line(&mut line).unwrap().unwrap();
    assert_eq!(line.measurement, "b");
    assert!(line.tags.is_empty());
    assert_eq!(line.fields, vec![("h".into(), FieldValue::F64(3.0))]);
    assert_eq!(line.timestamp, None);
    assert_eq!(line.line_number, 2);
    assert_eq!(line.tags.capacity(), capacity);
}

// ---- each error kind ----

#[test]
fn rejects_missing_measurement() {
    assert_eq!(error(",t=a f=1"), LineErrorKind::MissingMeasurement);
}

#[test]
fn rejects_missing_tag_key() {
    assert_eq!(error("m,=a f=1"), LineErrorKind::MissingTagKey);
    assert_eq!(error("m, f=1"), LineErrorKind::MissingTagKey);
    assert_eq!(error("m,t=a, f=1"), LineErrorKind::MissingTagKey);
}

#[test]
fn rejects_missing_tag_value() {
    assert_eq!(
        error("m,host= f=1"),
        LineErrorKind::MissingTagValue { key: key("host") }
    );
    assert_eq!(
        error("m,host f=1"),
        LineErrorKind::MissingTagValue { key: key("host") }
    );
    assert_eq!(
        error("m,host,t=a f=1"),
        LineErrorKind::MissingTagValue { key: key("host") }
    );
    assert_eq!(
        error("m,host=,t=a f=1"),
        LineErrorKind::MissingTagValue { key: key("host") }
    );
}

#[test]
fn rejects_duplicate_tag() {
    assert_eq!(
        error("m,a=1,b=2,a=3 f=1"),
        LineErrorKind::DuplicateTag { key: key("a") }
    );
    // Keys are compared unescaped: `a\b` and `a\\b` are both the key `a\b`.
    assert_eq!(
        error(r"m,a\b=1,a\\b=2 f=1"),
        LineErrorKind::DuplicateTag { key: key(r"a\b") }
    );
    assert_eq!(
        error(r"m,a\=b=1,a\=b=2 f=1"),
        LineErrorKind::DuplicateTag { key: key("a=b") }
    );
}

#[test]
fn detects_duplicates_among_many_keys() {
    let tags: Vec<String> = (0..200).map(|i| format!("tag{i}={i}")).collect();
    let fields: Vec<String> = (0..200).map(|i| format!("field{i}={i}")).collect();
    let body = format!("m,{} {}", tags.join(","), fields.join(","));
    let line = one(&body);
    assert_eq!(line.tags.len(), 200);
    assert_eq!(line.fields.len(), 200);
    let body = format!("m,{},tag150=x {}", tags.join(","), fields.join(","));
    assert_eq!(
        error(&body),
        LineErrorKind::DuplicateTag { key: key("tag150") }
    );
    let body = format!("m,{} {},field7=1", tags.join(","), fields.join(","));
    assert_eq!(
        error(&body),
        LineErrorKind::DuplicateField { key: key("field7") }
    );
}

#[test]
fn reports_the_first_repeat_in_line_order() {
    // `b` repeats before `a` does; the same with few keys (pairwise) and many (sorted).
    assert_eq!(
        error("m a=1,b=1,b=2,a=2"),
        LineErrorKind::DuplicateField { key: key("b") }
    );
    let filler: Vec<String> = (0..40).map(|i| format!("k{i}=1")).collect();
    let body = format!("m z=1,{},y=1,y=2,z=2", filler.join(","));
    assert_eq!(
        error(&body),
        LineErrorKind::DuplicateField { key: key("y") }
    );
    let body = format!("m,z=1,{},y=1,y=2,z=2 f=1", filler.join(","));
    assert_eq!(error(&body), LineErrorKind::DuplicateTag { key: key("y") });
}

#[test]
fn checks_a_line_of_200k_keys_for_duplicates_quickly() {
    // Pairwise comparison would take 2·10^10 string compares here.
    let fields: Vec<String> = (0..200_000).map(|i| format!("f{i}=1i")).collect();
    let body = fields.join(",");
    assert_eq!(one(&format!("m {body}")).fields.len(), 200_000);
    assert_eq!(
        error(&format!("m {body},f199999=2i")),
        LineErrorKind::DuplicateField {
            key: key("f199999")
        }
    );
}

#[test]
fn tag_and_field_may_share_a_key() {
    let line = one("m,x=a x=1");
    assert_eq!(tags(&line), [("x", "a")]);
    assert_eq!(line.fields[0].0, "x");
}

#[test]
fn rejects_line_without_fields() {
    assert_eq!(error("cpu"), LineErrorKind::MissingFields);
    assert_eq!(error("cpu "), LineErrorKind::MissingFields);
    assert_eq!(error("cpu,host=a"), LineErrorKind::MissingFields);
    assert_eq!(error("cpu,host=a   "), LineErrorKind::MissingFields);
}

#[test]
fn rejects_missing_field_key() {
    assert_eq!(error("m =1"), LineErrorKind::MissingFieldKey);
    assert_eq!(error("m f=1,"), LineErrorKind::MissingFieldKey);
    assert_eq!(error("m f=1,,g=2"), LineErrorKind::MissingFieldKey);
    assert_eq!(error("m f=1, g=2"), LineErrorKind::MissingFieldKey);
}

#[test]
fn rejects_missing_field_value() {
    assert_eq!(
        error("m f="),
        LineErrorKind::MissingFieldValue { key: key("f") }
    );
    assert_eq!(
        error("m f=,g=1"),
        LineErrorKind::MissingFieldValue { key: key("f") }
    );
    assert_eq!(
        error("m f= 1"),
        LineErrorKind::MissingFieldValue { key: key("f") }
    );
    assert_eq!(
        error("m f"),
        LineErrorKind::MissingFieldValue { key: key("f") }
    );
    assert_eq!(
        error("m a=1,b,c=2"),
        LineErrorKind::MissingFieldValue { key: key("b") }
    );
}

#[test]
fn rejects_duplicate_field() {
    assert_eq!(
        error("m a=1,b=2,a=3i"),
        LineErrorKind::DuplicateField { key: key("a") }
    );
}

#[test]
fn rejects_invalid_field_value_with_message() {
    let lines = parse_all(b"m usage=1.2.3");
    assert_eq!(
        lines[0].as_ref().unwrap_err().to_string(),
        "line 1: field `usage` has invalid value `1.2.3`: expected a float, an integer with \
         `i`, an unsigned integer with `u`, a quoted string, or a boolean"
    );
}

#[test]
fn error_messages_quote_at_most_64_characters() {
    let long = "x".repeat(1000);
    let kind = error(&format!("m f={long}"));
    let LineErrorKind::InvalidFieldValue { value, .. } = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(value, format!("{}…", "x".repeat(64)));
}

// ---- TSBS shape ----

#[test]
fn parses_tsbs_cpu_line() {
    let body = "cpu,hostname=host_0,region=eu-central-1,datacenter=eu-central-1a,rack=6,os=Ubuntu15.10,arch=x86,team=SF,service=19,service_version=1,service_environment=test usage_user=58.1317132304976170,usage_system=2.6224297271376256,usage_idle=24.9969495069947882,usage_nice=61.1357015044473434,usage_iowait=22.9647849160691461,usage_softirq=63.6499207106198313,usage_steal=44.8751316596664283,usage_guest=80.2370261143127170,usage_guest_nice=38.2302592622036636,usage_irq=63.6499207106198313 1451606400000000000";
    let line = one(body);
    assert_eq!(line.tags.len(), 10);
    assert_eq!(line.fields.len(), 10);
    assert_eq!(line.tags[9], ("service_environment".into(), "test".into()));
    assert_eq!(
        field(&line, "usage_irq"),
        &FieldValue::F64("63.6499207106198313".parse().unwrap())
    );
    assert_eq!(line.timestamp, Some(1_451_606_400_000_000_000));
}

// ---- float syntax ----

proptest::proptest! {
    /// The float branch (a first-byte guard, then Rust's parser) accepts exactly InfluxDB's
    /// float syntax, spelled out by `is_float_syntax`.
    #[test]
    fn float_values_follow_influxdb_syntax(token in "[-+0-9.eEnaINA_x ]{1,10}") {
        let accepted = matches!(
            super::scalar_value(&token),
            Ok(FieldValue::F64(_)) | Err(super::ScalarError::FloatRange)
        );
        proptest::prop_assert_eq!(accepted, super::is_float_syntax(token.as_bytes()), "{}", token);
    }
}

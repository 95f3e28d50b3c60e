//! Arbitrary bytes through `LineParser`: every line is `Ok` or `Err`, never a panic, and what
//! the parser reports stays consistent with the body.
//!
//! ```text
//! cd fuzz && cargo +nightly fuzz run line_protocol
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use line_protocol::{LineParser, ParsedLine};

fuzz_target!(|body: &[u8]| {
    let mut parser = LineParser::new(body);
    let mut line = ParsedLine::default();
    let body_range = body.as_ptr_range();
    let mut last_line_number = 0;
    while let Some(result) = parser.next_line(&mut line) {
        let (line_number, original) = match &result {
            Ok(()) => {
                assert!(
                    !line.measurement.is_empty(),
                    "a parsed line has a measurement"
                );
                assert!(!line.fields.is_empty(), "a parsed line has a field");
                (line.line_number, line.original)
            }
            Err(e) => {
                // Formatting must not panic either.
                let _ = e.to_string();
                let _ = e.original_lossy();
                (e.line_number, e.original)
            }
        };
        assert!(line_number > last_line_number, "line numbers increase");
        last_line_number = line_number;
        let range = original.as_ptr_range();
        assert!(
            original.is_empty() || (body_range.start <= range.start && range.end <= body_range.end),
            "the original line is a slice of the body"
        );
    }
});

//! `?` placeholders, as JDBC and ADBC users write them, read as `$1`, `$2`, ... in order:
//! DataFusion only knows the `$` forms.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `sql` with every `?` placeholder replaced by `$n`, counting from 1. A `?` inside a string,
/// identifier or comment is left alone; SQL that does not tokenize is returned unchanged, so
/// the parser reports the error.
pub(crate) fn number_question_marks(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('?') {
        return sql.into();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.into();
    };
    // Tokens locate themselves by line and column (both from 1, columns in characters).
    let mut marks: Vec<(u64, u64)> = tokens
        .iter()
        .filter(|t| matches!(&t.token, Token::Placeholder(p) if p == "?"))
        .map(|t| (t.span.start.line, t.span.start.column))
        .collect();
    if marks.is_empty() {
        return sql.into();
    }
    marks.reverse(); // popped from the end, in order of appearance
    let mut out = String::with_capacity(sql.len() + marks.len() * 2);
    let (mut line, mut column, mut n) = (1, 1, 0);
    for c in sql.chars() {
        if marks.last() == Some(&(line, column)) && c == '?' {
            marks.pop();
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::number_question_marks;

    #[test]
    fn question_marks_become_numbered_placeholders_in_order() {
        assert_eq!(
            number_question_marks("SELECT * FROM cpu WHERE host = ? AND usage > ?"),
            "SELECT * FROM cpu WHERE host = $1 AND usage > $2"
        );
    }

    #[test]
    fn question_marks_in_strings_identifiers_and_comments_stay() {
        let sql = "SELECT '?', \"a?\" -- why?\nFROM t WHERE x = ? /* ? */ AND y = 'it''s ?'";
        assert_eq!(
            number_question_marks(sql),
            "SELECT '?', \"a?\" -- why?\nFROM t WHERE x = $1 /* ? */ AND y = 'it''s ?'"
        );
    }

    #[test]
    fn statements_without_question_marks_are_unchanged() {
        assert_eq!(
            number_question_marks("SELECT $1, $name"),
            "SELECT $1, $name"
        );
    }
}

//! Line protocol body -> per-table Arrow batches, validated against the catalog.
//!
//! The parser fills one reusable [`ParsedLine`]; values go straight into per-table column
//! builders, so the hot path allocates per table and column, not per line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{Int32Type, Schema};
use arrow::error::ArrowError;
use catalog::{CatalogLimits, ColumnType, DatabaseSchema, SchemaChanges, TIME_COLUMN, TableSchema};
use line_protocol::{FieldValue, LineParser, ParsedLine};

use crate::{Precision, RejectedLine};

/// What a body turned into: rows per table, the schema changes they need, the rejected lines.
#[derive(Debug)]
pub(crate) struct BuiltWrite {
    pub(crate) tables: Vec<(String, RecordBatch)>,
    pub(crate) changes: SchemaChanges,
    pub(crate) rejected: Rejections,
    pub(crate) lines_written: usize,
}

/// How many rejected lines are reported in detail; the rest are only counted, so a body of
/// millions of bad lines costs no more memory than one of a hundred.
pub(crate) const MAX_REJECTED_DETAILS: usize = 100;

/// Why a line was rejected, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RejectReason {
    /// Not valid line protocol, or a timestamp out of range.
    Parse,
    /// Valid, but against the table's schema: a type conflict, `time` as a key, a tag and a
    /// field of one name.
    Schema,
    /// A new table or column past a catalog limit, or a name too long to store.
    Limit,
}

impl RejectReason {
    pub(crate) const ALL: [Self; 3] = [Self::Parse, Self::Schema, Self::Limit];

    fn as_str(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Schema => "schema",
            Self::Limit => "limit",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for RejectReason {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A line's rejection: why, and the message for the client.
type Rejection = (RejectReason, String);

/// Rejected lines: the first [`MAX_REJECTED_DETAILS`] in detail, all of them counted.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    pub(crate) details: Vec<RejectedLine>,
    pub(crate) total: usize,
    /// Counts in the order of [`RejectReason::ALL`].
    pub(crate) by_reason: [usize; 3],
}

impl Rejections {
    fn push(
        &mut self,
        reason: RejectReason,
        line_number: usize,
        original: &[u8],
        error_message: impl FnOnce() -> String,
    ) {
        self.total += 1;
        self.by_reason[reason as usize] += 1;
        if self.details.len() < MAX_REJECTED_DETAILS {
            self.details.push(RejectedLine {
                line_number,
                original_line: shorten(String::from_utf8_lossy(original).into_owned()),
                error_message: shorten(error_message()),
            });
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// Longest measurement name: the WAL stores table names with a 16-bit length.
const MAX_TABLE_NAME_BYTES: usize = u16::MAX as usize;

/// Parses and validates `body` against `db` (None when the database does not exist yet).
pub(crate) fn build_write(
    database: &str,
    db: Option<&DatabaseSchema>,
    limits: CatalogLimits,
    body: &[u8],
    precision: Precision,
    default_time_ns: i64,
) -> Result<BuiltWrite, ArrowError> {
    let existing_tables = db.map_or(0, |d| d.tables.len());
    let mut parser = LineParser::new(body);
    let mut line = ParsedLine::default();
    let mut tables: Vec<TableBuilder> = Vec::new();
    let mut table_index: HashMap<String, usize> = HashMap::new();
    let mut last_table: Option<usize> = None;
    let mut rejected = Rejections::default();
    let mut lines_written = 0;

    while let Some(result) = parser.next_line(&mut line) {
        if let Err(e) = result {
            rejected.push(RejectReason::Parse, e.line_number, e.original, || {
                e.kind.to_string()
            });
            continue;
        }
        if line.measurement.len() > MAX_TABLE_NAME_BYTES {
            rejected.push(RejectReason::Limit, line.line_number, line.original, || {
                format!("measurement name is longer than {MAX_TABLE_NAME_BYTES} bytes")
            });
            continue;
        }
        let t = match last_table {
            Some(i) if tables[i].name == line.measurement.as_ref() => i,
            _ => match table_index.get(line.measurement.as_ref()) {
                Some(&i) => i,
                None => {
                    let name = line.measurement.to_string();
                    let schema = db.and_then(|d| d.table(&name)).cloned();
                    let new_tables = tables.iter().filter(|t| t.schema.is_none()).count();
                    if schema.is_none()
                        && existing_tables + new_tables >= limits.max_tables_per_database
                    {
                        let e = catalog::Error::TooManyTables {
                            database: database.to_owned(),
                            limit: limits.max_tables_per_database,
                        };
                        rejected.push(RejectReason::Limit, line.line_number, line.original, || {
                            e.to_string()
                        });
                        continue;
                    }
                    tables.push(TableBuilder::new(
                        name.clone(),
                        schema,
                        database,
                        limits.max_columns_per_table,
                    ));
                    table_index.insert(name, tables.len() - 1);
                    tables.len() - 1
                }
            },
        };
        last_table = Some(t);
        match tables[t].push_line(&line, precision, default_time_ns) {
            Ok(()) => lines_written += 1,
            Err((reason, message)) => {
                rejected.push(reason, line.line_number, line.original, || message)
            }
        }
    }

    let mut changes = SchemaChanges::new(database);
    let mut batches = Vec::with_capacity(tables.len());
    for table in tables {
        if table.rows == 0 {
            continue;
        }
        let is_new = table.schema.is_none();
        if !table.new_columns.is_empty() || is_new {
            changes
                .tables
                .insert(table.name.clone(), table.new_columns.clone());
        }
        let name = table.name.clone();
        let batch = table.finish()?;
        if is_new {
            changes.sort_keys.insert(name.clone(), sort_key_of(&batch));
        }
        batches.push((name, batch));
    }
    Ok(BuiltWrite {
        tables: batches,
        changes,
        rejected,
        lines_written,
    })
}

/// The tag order a new table's rows are sorted by: the tags with the most distinct values in
/// its first write first (ties by name). The most distinct tag usually names the series (a
/// host, a device), so each series' rows are contiguous and ordered by it, and page and row
/// group statistics on that tag stay tight enough to skip data.
fn sort_key_of(batch: &RecordBatch) -> Vec<String> {
    let mut tags: Vec<(usize, &str)> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter_map(|(field, column)| {
            column
                .as_any_dictionary_opt()
                .map(|d| (d.values().len(), field.name().as_str()))
        })
        .collect();
    tags.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    tags.into_iter().map(|(_, name)| name.to_owned()).collect()
}

struct TableBuilder {
    name: String,
    database: String,
    max_columns: usize,
    /// The committed schema, if the table exists.
    schema: Option<Arc<TableSchema>>,
    /// Columns this write adds, with the type of their first use.
    new_columns: BTreeMap<String, ColumnType>,
    columns: Vec<ColumnBuilder>,
    column_index: HashMap<String, usize>,
    /// Column of each key of the previous line, in line order: lines of one table usually
    /// repeat their keys, so a string compare replaces a hash lookup.
    last_line_columns: Vec<usize>,
    time: TimestampNanosecondBuilder,
    rows: usize,
    /// Scratch: the column of each key of the line being added.
    line_columns: Vec<usize>,
    /// Scratch: keys of the line being added that the catalog does not have yet.
    line_new_columns: usize,
}

struct ColumnBuilder {
    name: String,
    column_type: ColumnType,
    values: Values,
}

enum Values {
    Tag(StringDictionaryBuilder<Int32Type>),
    Float(Float64Builder),
    Integer(Int64Builder),
    UInteger(UInt64Builder),
    String(StringBuilder),
    Boolean(BooleanBuilder),
}

impl Values {
    fn new(column_type: ColumnType) -> Self {
        match column_type {
            ColumnType::Tag => Self::Tag(StringDictionaryBuilder::new()),
            ColumnType::Float => Self::Float(Float64Builder::new()),
            ColumnType::Integer => Self::Integer(Int64Builder::new()),
            ColumnType::UInteger => Self::UInteger(UInt64Builder::new()),
            ColumnType::String => Self::String(StringBuilder::new()),
            ColumnType::Boolean => Self::Boolean(BooleanBuilder::new()),
            ColumnType::Time => unreachable!("time has its own builder"),
        }
    }

    fn len(&self) -> usize {
        use arrow::array::ArrayBuilder;
        match self {
            Self::Tag(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Integer(b) => b.len(),
            Self::UInteger(b) => b.len(),
            Self::String(b) => b.len(),
            Self::Boolean(b) => b.len(),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            Self::Tag(b) => b.append_nulls(n),
            Self::Float(b) => b.append_nulls(n),
            Self::Integer(b) => b.append_nulls(n),
            Self::UInteger(b) => b.append_nulls(n),
            Self::String(b) => b.append_nulls(n),
            Self::Boolean(b) => b.append_nulls(n),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Tag(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Integer(b) => Arc::new(b.finish()),
            Self::UInteger(b) => Arc::new(b.finish()),
            Self::String(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

fn field_type(value: &FieldValue<'_>) -> ColumnType {
    match value {
        FieldValue::F64(_) => ColumnType::Float,
        FieldValue::I64(_) => ColumnType::Integer,
        FieldValue::U64(_) => ColumnType::UInteger,
        FieldValue::String(_) => ColumnType::String,
        FieldValue::Bool(_) => ColumnType::Boolean,
    }
}

impl TableBuilder {
    fn new(
        name: String,
        schema: Option<Arc<TableSchema>>,
        database: &str,
        max_columns: usize,
    ) -> Self {
        Self {
            name,
            database: database.to_owned(),
            max_columns,
            schema,
            new_columns: BTreeMap::new(),
            columns: Vec::new(),
            column_index: HashMap::new(),
            last_line_columns: Vec::new(),
            time: TimestampNanosecondBuilder::new(),
            rows: 0,
            line_columns: Vec::new(),
            line_new_columns: 0,
        }
    }

    /// Adds one line, or explains why it is rejected (then nothing of it is added).
    fn push_line(
        &mut self,
        line: &ParsedLine<'_>,
        precision: Precision,
        default_time_ns: i64,
    ) -> Result<(), Rejection> {
        let time_ns = match line.timestamp {
            Some(ts) => precision.to_nanos(ts).ok_or_else(|| {
                let message = format!(
                    "timestamp {ts} is out of range for precision {}",
                    precision.name()
                );
                (RejectReason::Parse, message)
            })?,
            None => default_time_ns,
        };

        // Validate every key before touching a builder, so a rejected line leaves no trace.
        self.line_columns.clear();
        self.line_new_columns = 0;
        let keys = line
            .tags
            .iter()
            .map(|(k, _)| (k.as_ref(), ColumnType::Tag))
            .chain(line.fields.iter().map(|(k, v)| (k.as_ref(), field_type(v))));
        for (position, (key, sent)) in keys.enumerate() {
            let column = self.resolve_column(position, key, sent)?;
            self.line_columns.push(column);
        }

        if self
            .line_columns
            .iter()
            .filter(|&&c| c == usize::MAX)
            .count()
            > 1
        {
            // Two new keys of one line: the parser rejects a repeated tag or field, so only a
            // tag and a field of the same name can clash here.
            for (field, _) in &line.fields {
                if line.tags.iter().any(|(tag, _)| tag == field) {
                    return Err((
                        RejectReason::Schema,
                        format!("`{field}` is both a tag and a field in the line"),
                    ));
                }
            }
        }
        let mut columns = std::mem::take(&mut self.line_columns);
        for (position, column) in columns.iter_mut().enumerate() {
            if *column == usize::MAX {
                let (key, sent) = if position < line.tags.len() {
                    (line.tags[position].0.as_ref(), ColumnType::Tag)
                } else {
                    let (k, v) = &line.fields[position - line.tags.len()];
                    (k.as_ref(), field_type(v))
                };
                *column = self.add_column(key, sent);
            }
        }
        for (i, (_, value)) in line.tags.iter().enumerate() {
            if let Values::Tag(b) = &mut self.columns[columns[i]].values {
                b.append_value(value.as_ref());
            }
        }
        for (i, (_, value)) in line.fields.iter().enumerate() {
            let column = &mut self.columns[columns[line.tags.len() + i]].values;
            match (column, value) {
                (Values::Float(b), FieldValue::F64(v)) => b.append_value(*v),
                (Values::Integer(b), FieldValue::I64(v)) => b.append_value(*v),
                (Values::UInteger(b), FieldValue::U64(v)) => b.append_value(*v),
                (Values::String(b), FieldValue::String(v)) => b.append_value(v.as_ref()),
                (Values::Boolean(b), FieldValue::Bool(v)) => b.append_value(*v),
                _ => unreachable!("types were validated above"),
            }
        }
        self.time.append_value(time_ns);
        self.rows += 1;
        for c in &mut self.columns {
            if c.values.len() < self.rows {
                c.values.append_null();
            }
        }
        self.last_line_columns.clear();
        self.last_line_columns.extend_from_slice(&columns);
        self.line_columns = columns;
        Ok(())
    }

    /// The builder index of `key`, `usize::MAX` for a valid column this write has not seen yet,
    /// or the reason the line is rejected.
    fn resolve_column(
        &mut self,
        position: usize,
        key: &str,
        sent: ColumnType,
    ) -> Result<usize, Rejection> {
        let existing = match self.last_line_columns.get(position) {
            Some(&c) if self.columns[c].name == key => Some(c),
            _ => self.column_index.get(key).copied(),
        };
        if let Some(c) = existing {
            if self.line_columns.contains(&c) {
                return Err((
                    RejectReason::Schema,
                    format!("column `{key}` appears twice in the line"),
                ));
            }
            let column = &self.columns[c];
            if column.column_type != sent {
                return Err((
                    RejectReason::Schema,
                    conflict(&self.name, key, column.column_type, sent),
                ));
            }
            return Ok(c);
        }
        if key == TIME_COLUMN {
            return Err((
                RejectReason::Schema,
                format!(
                    "`{TIME_COLUMN}` is reserved for the timestamp and cannot be a tag or field"
                ),
            ));
        }
        let known = self
            .schema
            .as_ref()
            .and_then(|s| s.column_type(key))
            .or_else(|| self.new_columns.get(key).copied());
        if let Some(existing) = known
            && existing != sent
        {
            return Err((
                RejectReason::Schema,
                conflict(&self.name, key, existing, sent),
            ));
        }
        if known.is_none() {
            let committed = self.schema.as_ref().map_or(1, |s| s.columns.len());
            if committed + self.new_columns.len() + self.line_new_columns + 1 > self.max_columns {
                return Err((
                    RejectReason::Limit,
                    catalog::Error::TooManyColumns {
                        database: self.database.clone(),
                        table: self.name.clone(),
                        limit: self.max_columns,
                    }
                    .to_string(),
                ));
            }
            self.line_new_columns += 1;
        }
        // A new column can still clash with an earlier key of the same line (`m,a=1 a=2`).
        Ok(usize::MAX)
    }

    fn add_column(&mut self, key: &str, column_type: ColumnType) -> usize {
        if let Some(&c) = self.column_index.get(key) {
            return c;
        }
        let mut values = Values::new(column_type);
        values.append_nulls(self.rows);
        self.columns.push(ColumnBuilder {
            name: key.to_owned(),
            column_type,
            values,
        });
        self.column_index
            .insert(key.to_owned(), self.columns.len() - 1);
        if self
            .schema
            .as_ref()
            .and_then(|s| s.column_type(key))
            .is_none()
        {
            self.new_columns.insert(key.to_owned(), column_type);
        }
        self.columns.len() - 1
    }

    fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        // Builders reserve room for 1024 rows; a small write must not hold that in the buffer.
        let tight = |mut array: ArrayRef| {
            if let Some(a) = Arc::get_mut(&mut array) {
                a.shrink_to_fit();
            }
            array
        };
        let mut named: Vec<(String, ColumnType, ArrayRef)> = self
            .columns
            .iter_mut()
            .map(|c| (c.name.clone(), c.column_type, tight(c.values.finish())))
            .collect();
        let time: ArrayRef = Arc::new(self.time.finish());
        named.push((TIME_COLUMN.to_owned(), ColumnType::Time, tight(time)));
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let fields: Vec<_> = named.iter().map(|(n, t, _)| t.arrow_field(n)).collect();
        let arrays = named.into_iter().map(|(_, _, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
    }
}

impl Values {
    fn append_null(&mut self) {
        self.append_nulls(1);
    }
}

/// Longest `original_line` echoed back: a rejected 2 MB line must not make a 2 MB error.
const MAX_ECHOED_LINE_BYTES: usize = 1024;

fn shorten(mut line: String) -> String {
    if line.len() > MAX_ECHOED_LINE_BYTES {
        let mut end = MAX_ECHOED_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

fn conflict(table: &str, column: &str, existing: ColumnType, sent: ColumnType) -> String {
    format!("column `{column}` of table `{table}` is {existing}, this write sends {sent}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;
    use catalog::{DatabaseId, TableId};

    fn build(body: &str, db: Option<&DatabaseSchema>) -> BuiltWrite {
        build_write(
            "db",
            db,
            CatalogLimits::default(),
            body.as_bytes(),
            Precision::Nanosecond,
            42,
        )
        .unwrap()
    }

    fn rejected_line_numbers(built: &BuiltWrite) -> Vec<usize> {
        built
            .rejected
            .details
            .iter()
            .map(|r| r.line_number)
            .collect()
    }

    fn table(batch: &RecordBatch) -> String {
        pretty_format_batches(std::slice::from_ref(batch))
            .unwrap()
            .to_string()
    }

    fn db_with_float_usage() -> DatabaseSchema {
        let mut columns = BTreeMap::new();
        columns.insert(Arc::from("usage"), ColumnType::Float);
        columns.insert(Arc::from("time"), ColumnType::Time);
        let cpu = TableSchema {
            id: TableId(1),
            name: Arc::from("cpu"),
            columns,
            sort_key: Arc::from(Vec::new()),
            retention_period_ns: None,
        };
        let mut tables = BTreeMap::new();
        tables.insert(Arc::from("cpu"), Arc::new(cpu));
        DatabaseSchema {
            id: DatabaseId(1),
            name: Arc::from("db"),
            tables,
            retention_period_ns: None,
        }
    }

    #[test]
    fn lines_become_one_batch_per_table_with_nulls_for_missing_columns() {
        let built = build(
            "cpu,host=a usage=1 10\nmem free=2i 20\ncpu,host=b,dc=x idle=3 30\n",
            None,
        );
        assert_eq!(built.lines_written, 3);
        assert!(built.rejected.is_empty());
        let names: Vec<&str> = built.tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cpu", "mem"]);
        assert_eq!(
            table(&built.tables[0].1),
            "+----+------+------+-------------------------------+-------+\n\
             | dc | host | idle | time                          | usage |\n\
             +----+------+------+-------------------------------+-------+\n\
             |    | a    |      | 1970-01-01T00:00:00.000000010 | 1.0   |\n\
             | x  | b    | 3.0  | 1970-01-01T00:00:00.000000030 |       |\n\
             +----+------+------+-------------------------------+-------+"
        );
        let cpu = &built.changes.tables["cpu"];
        assert_eq!(cpu["host"], ColumnType::Tag);
        assert_eq!(cpu["usage"], ColumnType::Float);
        assert_eq!(built.changes.tables["mem"]["free"], ColumnType::Integer);
    }

    #[test]
    fn a_new_table_sorts_by_its_most_distinct_tags_first() {
        let built = build(
            "m,dc=x,host=a f=1 1\nm,dc=x,host=b f=1 2\nm,dc=y,host=c,az=1 f=1 3\n",
            None,
        );
        assert_eq!(built.changes.sort_keys["m"], ["host", "dc", "az"]);
        // An existing table keeps the key it was created with.
        let built = build("cpu,host=a,dc=x usage=1 1", Some(&db_with_float_usage()));
        assert!(built.changes.sort_keys.is_empty());
    }

    #[test]
    fn rejects_field_type_change_with_line_number_and_keeps_the_good_lines() {
        let db = db_with_float_usage();
        let built = build(
            "cpu usage=1 1\ncpu usage=\"x\" 2\ncpu usage=3i 3\ncpu usage=4 4",
            Some(&db),
        );
        assert_eq!(built.lines_written, 2);
        let rejected: Vec<(usize, &str)> = built
            .rejected
            .details
            .iter()
            .map(|r| (r.line_number, r.error_message.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    2,
                    "column `usage` of table `cpu` is a float field, this write sends a string field"
                ),
                (
                    3,
                    "column `usage` of table `cpu` is a float field, this write sends an integer field"
                ),
            ]
        );
        assert_eq!(built.tables[0].1.num_rows(), 2);
        assert!(built.changes.is_empty());
    }

    #[test]
    fn the_first_line_decides_a_new_columns_type_within_a_body() {
        let built = build("m f=1i 1\nm f=2 2", None);
        assert_eq!(built.lines_written, 1);
        assert_eq!(built.rejected.details[0].line_number, 2);
        assert!(
            built.rejected.details[0]
                .error_message
                .contains("is an integer field")
        );
    }

    #[test]
    fn a_name_used_as_tag_and_field_is_rejected() {
        let built = build("m,a=x a=1 1\nm,b=x c=1 2\nm b=2 3", None);
        assert_eq!(built.lines_written, 1);
        let lines = rejected_line_numbers(&built);
        assert_eq!(lines, [1, 3]);
    }

    #[test]
    fn time_is_reserved() {
        let built = build("m,time=x f=1 1\nm time=1 2", None);
        assert_eq!(built.lines_written, 0);
        assert_eq!(built.rejected.total, 2);
        assert!(built.rejected.details[0].error_message.contains("reserved"));
    }

    #[test]
    fn parse_errors_carry_line_numbers_and_original_text() {
        let built = build("m f=1 1\n\n# comment\nm f= 2\nm f=1 3", None);
        assert_eq!(built.lines_written, 2);
        assert_eq!(built.rejected.total, 1);
        assert_eq!(built.rejected.details[0].line_number, 4);
        assert_eq!(built.rejected.details[0].original_line, "m f= 2");
    }

    #[test]
    fn missing_timestamp_uses_the_request_time() {
        let built = build("m f=1", None);
        assert!(table(&built.tables[0].1).contains("1970-01-01T00:00:00.000000042"));
    }

    #[test]
    fn precision_scales_timestamps_and_auto_guesses_by_magnitude() {
        assert_eq!(Precision::Second.to_nanos(1), Some(1_000_000_000));
        assert_eq!(Precision::Minute.to_nanos(1), Some(60_000_000_000));
        assert_eq!(Precision::Hour.to_nanos(1), Some(3_600_000_000_000));
        assert_eq!(Precision::Millisecond.to_nanos(1), Some(1_000_000));
        assert_eq!(Precision::Microsecond.to_nanos(1), Some(1_000));
        let s = 1_700_000_000;
        assert_eq!(Precision::Auto.to_nanos(s), Some(s * 1_000_000_000));
        assert_eq!(Precision::Auto.to_nanos(s * 1_000), Some(s * 1_000_000_000));
        assert_eq!(
            Precision::Auto.to_nanos(s * 1_000_000),
            Some(s * 1_000_000_000)
        );
        assert_eq!(
            Precision::Auto.to_nanos(s * 1_000_000_000),
            Some(s * 1_000_000_000)
        );
        assert_eq!(Precision::Second.to_nanos(i64::MAX), None);
    }

    #[test]
    fn out_of_range_timestamp_is_rejected_not_wrapped() {
        let built = build_write(
            "db",
            None,
            CatalogLimits::default(),
            b"m f=1 9223372036854775807",
            Precision::Second,
            0,
        )
        .unwrap();
        assert_eq!(built.lines_written, 0);
        assert!(
            built.rejected.details[0]
                .error_message
                .contains("out of range")
        );
    }

    #[test]
    fn tags_are_dictionaries_and_fields_keep_their_types() {
        let built = build("m,t=a f=1,i=2i,u=3u,s=\"x\",b=true 1", None);
        let schema = built.tables[0].1.schema();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                "b:Boolean",
                "f:Float64",
                "i:Int64",
                "s:Utf8",
                "t:Dictionary(Int32, Utf8)",
                "time:Timestamp(ns)",
                "u:UInt64",
            ]
        );
    }

    #[test]
    fn lines_past_the_table_and_column_limits_are_rejected_alone() {
        let limits = CatalogLimits {
            max_databases: 10,
            max_tables_per_database: 2,
            max_columns_per_table: 3,
        };
        let body = "a f=1 1\nb f=1 1\nc f=1 1\na g=1 2\na f=2 3";
        let built = build_write(
            "db",
            None,
            limits,
            body.as_bytes(),
            Precision::Nanosecond,
            0,
        )
        .unwrap();
        assert_eq!(built.lines_written, 4);
        let rejected = rejected_line_numbers(&built);
        assert_eq!(rejected, [3]);
        assert!(
            built.rejected.details[0]
                .error_message
                .contains("--max-tables-per-database")
        );

        let limits = CatalogLimits {
            max_columns_per_table: 3,
            ..limits
        };
        let built = build_write(
            "db",
            None,
            limits,
            b"a f=1 1\na g=1,h=1 2\na,t=x,u=y f=1 3",
            Precision::Nanosecond,
            0,
        )
        .unwrap();
        let rejected = rejected_line_numbers(&built);
        assert_eq!(rejected, [2, 3]);
        assert!(
            built.rejected.details[0]
                .error_message
                .contains("--max-columns-per-table")
        );
    }
}

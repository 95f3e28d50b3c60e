//! Range deletes as a row filter over Parquet files (and buffer rows) of a table.
//!
//! A tombstone deletes rows written up to its WAL cutoff; a source's order column
//! ([`crate::CHUNK_ORDER`], its highest WAL sequence number) tells whether it was written
//! before. A source written after holds none of the deleted rows, and a source cleaned
//! already (buffer rows are filtered when the delete is made; compactions rewrite files) holds
//! none that match, so applying a tombstone to it again removes nothing.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use catalog::{NewTombstone, TIME_COLUMN};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, NotExpr, col, lit};

/// The rows of `schema` none of `deletes` matches: `NOT (deleted_1 OR deleted_2 ...)`, where
/// a row is deleted when it is in the delete's time range, every tag of the predicate equals
/// its value (a null tag does not), and, given `order_column`, the row's source is no newer
/// than the delete's WAL cutoff. `None` when no delete can match a row of `schema`.
pub fn surviving_rows(
    deletes: &[&NewTombstone],
    schema: &Schema,
    order_column: Option<&str>,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let and = |l, r| -> Arc<dyn PhysicalExpr> { Arc::new(BinaryExpr::new(l, Operator::And, r)) };
    let timestamp = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), None));
    let mut deleted: Option<Arc<dyn PhysicalExpr>> = None;
    'deletes: for delete in deletes {
        let time = col(TIME_COLUMN, schema)?;
        let mut matched = and(
            Arc::new(BinaryExpr::new(
                Arc::clone(&time),
                Operator::GtEq,
                timestamp(delete.min_time_ns),
            )),
            Arc::new(BinaryExpr::new(
                time,
                Operator::LtEq,
                timestamp(delete.max_time_ns),
            )),
        );
        for (tag, value) in &delete.tags {
            let Ok(index) = schema.index_of(tag) else {
                // Rows without the tag never match.
                continue 'deletes;
            };
            // Tags are dictionaries of strings (the data model); compare in the column's type.
            let string = ScalarValue::Utf8(Some(value.to_string()));
            let value = match schema.field(index).data_type() {
                DataType::Dictionary(key, _) => {
                    ScalarValue::Dictionary(key.clone(), Box::new(string))
                }
                _ => string,
            };
            matched = and(
                matched,
                Arc::new(BinaryExpr::new(
                    col(tag, schema)?,
                    Operator::IsNotDistinctFrom,
                    lit(value),
                )),
            );
        }
        if let Some(order) = order_column {
            matched = and(
                matched,
                Arc::new(BinaryExpr::new(
                    col(order, schema)?,
                    Operator::LtEq,
                    lit(ScalarValue::Int64(Some(delete.wal_cutoff as i64))),
                )),
            );
        }
        deleted = Some(match deleted {
            None => matched,
            Some(d) => Arc::new(BinaryExpr::new(d, Operator::Or, matched)),
        });
    }
    Ok(deleted.map(|d| Arc::new(NotExpr::new(d)) as Arc<dyn PhysicalExpr>))
}

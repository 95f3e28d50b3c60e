//! Arrow types of the data model and the conversion of batches to a table's full schema.

use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;

pub(crate) use catalog::TIME_COLUMN;

/// Brings `batch` to `schema`: columns in the schema's order, missing ones as all-null.
/// Every column of `batch` must be in `schema` (columns are only ever added).
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let source = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| match source.index_of(field.name()) {
            Ok(i) => Arc::clone(batch.column(i)),
            Err(_) => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The union of two schemas sorted by column name (both must agree on shared columns' types).
pub(crate) fn merge_schemas(a: &SchemaRef, b: &SchemaRef) -> SchemaRef {
    if a.fields() == b.fields() {
        return Arc::clone(a);
    }
    let mut fields: Vec<Arc<Field>> = a.fields().iter().cloned().collect();
    for f in b.fields() {
        if a.index_of(f.name()).is_err() {
            fields.push(Arc::clone(f));
        }
    }
    fields.sort_by(|x, y| x.name().cmp(y.name()));
    Arc::new(Schema::new(fields))
}

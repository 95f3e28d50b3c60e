//! SQL tables over a database: one [`BufferTable`] per table of the catalog snapshot.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use catalog::{DatabaseSchema, TIME_COLUMN, TableSchema};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;

use crate::BufferReader;

/// The tables of one database, as of the catalog snapshot the session was made from.
#[derive(Debug)]
pub(crate) struct DatabaseSchemaProvider {
    database: Arc<DatabaseSchema>,
    buffer: Arc<dyn BufferReader>,
}

impl DatabaseSchemaProvider {
    pub(crate) fn new(database: Arc<DatabaseSchema>, buffer: Arc<dyn BufferReader>) -> Self {
        Self { database, buffer }
    }
}

#[async_trait]
impl SchemaProvider for DatabaseSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.database.tables.keys().map(|k| k.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.database.table(name).map(|table| {
            Arc::new(BufferTable {
                database: Arc::clone(&self.database.name),
                schema: table.arrow_schema(),
                table: Arc::clone(table),
                buffer: Arc::clone(&self.buffer),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.database.tables.contains_key(name)
    }
}

/// A table's unpersisted rows.
struct BufferTable {
    database: Arc<str>,
    table: Arc<TableSchema>,
    schema: SchemaRef,
    buffer: Arc<dyn BufferReader>,
}

impl fmt::Debug for BufferTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferTable")
            .field("database", &self.database)
            .field("table", &self.table.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for BufferTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Time bounds prune partitions; DataFusion still applies every filter to the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (min, max) = time_bounds(filters);
        if min > max {
            // Contradictory time filters: nothing can match.
            return Ok(MemorySourceConfig::try_new_exec(
                &[vec![]],
                Arc::clone(&self.schema),
                projection.cloned(),
            )?);
        }
        // Reading may deduplicate a partition: CPU work that must not stall an I/O worker.
        let (buffer, database, table, schema) = (
            Arc::clone(&self.buffer),
            Arc::clone(&self.database),
            Arc::clone(&self.table.name),
            Arc::clone(&self.schema),
        );
        let batches = tokio::task::spawn_blocking(move || {
            buffer.read_table(&database, &table, &schema, min, max)
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // Spread the rows over as many partitions as the session runs in parallel, in slices of
        // one batch size: then DataFusion needs no repartitioning, whose buffers would count
        // against the query memory pool.
        let partitions = state.config().target_partitions().max(1);
        let batch_size = state.config().batch_size().max(1);
        let mut spread: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        let mut next = 0;
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = batch_size.min(batch.num_rows() - offset);
                spread[next % partitions].push(batch.slice(offset, len));
                next += 1;
                offset += len;
            }
        }
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &spread,
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// The `[min, max]` nanosecond range the conjunction of `filters` allows for `time`.
fn time_bounds(filters: &[Expr]) -> (i64, i64) {
    let mut bounds = (i64::MIN, i64::MAX);
    for f in filters {
        narrow(f, &mut bounds);
    }
    bounds
}

fn narrow(expr: &Expr, bounds: &mut (i64, i64)) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = expr else {
        return;
    };
    if *op == Operator::And {
        narrow(left, bounds);
        narrow(right, bounds);
        return;
    }
    let (op, value) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) if c.name == TIME_COLUMN => (*op, v),
        (Expr::Literal(v, _), Expr::Column(c)) if c.name == TIME_COLUMN => match op.swap() {
            Some(op) => (op, v),
            None => return,
        },
        _ => return,
    };
    let Some(ns) = timestamp_ns(value) else {
        return;
    };
    match op {
        Operator::Gt | Operator::GtEq => bounds.0 = bounds.0.max(ns),
        Operator::Lt | Operator::LtEq => bounds.1 = bounds.1.min(ns),
        Operator::Eq => {
            bounds.0 = bounds.0.max(ns);
            bounds.1 = bounds.1.min(ns);
        }
        _ => {}
    }
}

fn timestamp_ns(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

//! Optimized logical plans of recent statements, used again when the same SQL comes back.
//!
//! Parsing, planning and optimizing a statement took a fifth of single-groupby's CPU (SQL to
//! plan 8 %, analyzer 3 %, logical optimizer 10 %), and dashboards send the same statements
//! again and again. A plan is kept per database and SQL text, and used while the database
//! (by id, so not one deleted and created again under its name), its retention period and the
//! tables the plan reads are as they were when it was planned.
//!
//! Physical planning still runs for every query: that is where a table's scan reads the
//! buffer and the catalog's files, so a reused plan reads the data of its own moment.
//!
//! Only a plan that means the same at any moment is kept ([`kept_tables`]): one that calls
//! only immutable functions (the optimizer folds `now()` and other stable functions into
//! constants; volatile ones such as `random()` are left out too, to keep the rule simple),
//! has no placeholders, reads only the database's own tables (system tables,
//! `information_schema` and `last_cache` hold what their session saw), and is a query, not
//! `EXPLAIN` or `DESCRIBE`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use catalog::{DatabaseId, DatabaseSchema, TableSchema};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::table::database_table;

/// Statements whose plans are kept, across all databases.
const CAPACITY: usize = 256;
/// Longer statements are not kept: they are rarely repeated, and their plans are large.
const MAX_SQL_BYTES: usize = 16 * 1024;

/// Recent statements' optimized plans, by database and SQL text.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    inner: Mutex<Plans>,
    reused: Counter,
    planned: Counter,
}

#[derive(Debug, Default)]
struct Plans {
    by_database: HashMap<Arc<str>, HashMap<Box<str>, KeptPlan>>,
    len: usize,
    /// Counts lookups and insertions; an entry remembers the count of its last use (the
    /// least recent is evicted first).
    clock: u64,
}

/// A statement's plan as a query uses it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Optimized.
    pub(crate) plan: LogicalPlan,
    /// The statement's schema as planned, before optimization (the optimizer may change
    /// nullability): what the query reports, as `describe` does.
    pub(crate) schema: SchemaRef,
}

#[derive(Debug)]
struct KeptPlan {
    plan: Plan,
    /// What it was planned against.
    database: DatabaseId,
    retention_period_ns: Option<i64>,
    tables: Vec<Arc<TableSchema>>,
    last_used: u64,
}

impl KeptPlan {
    /// Whether the plan was made against `database` as it is now. Equal tables in a newer
    /// snapshot are taken in place of the old ones, so the next check compares pointers.
    fn check(&mut self, database: &DatabaseSchema) -> bool {
        if self.database != database.id || self.retention_period_ns != database.retention_period_ns
        {
            return false;
        }
        self.tables
            .iter_mut()
            .all(|kept| match database.table(&kept.name) {
                Some(table) if Arc::ptr_eq(table, kept) => true,
                Some(table) if **table == **kept => {
                    *kept = Arc::clone(table);
                    true
                }
                _ => false,
            })
    }
}

impl PlanCache {
    /// Counts reused and new plans under `tributary_query_plans`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tributary_query_plans");
        r.register(
            "reused",
            "Queries that reused the optimized plan of an earlier run of the same SQL",
            self.reused.clone(),
        );
        r.register(
            "planned",
            "Queries planned and optimized from their SQL",
            self.planned.clone(),
        );
    }

    /// The plan of `sql` if one was kept for `database` as it is now, for a query to run:
    /// counted as reused.
    pub(crate) fn get(&self, database: &DatabaseSchema, sql: &str) -> Option<Plan> {
        let plan = self.look_up(database, sql)?;
        self.reused.inc();
        Some(plan)
    }

    /// The plan of `sql` if one was kept for `database` as it is now.
    pub(crate) fn look_up(&self, database: &DatabaseSchema, sql: &str) -> Option<Plan> {
        let mut plans = self.inner.lock();
        plans.clock += 1;
        let clock = plans.clock;
        let kept = plans.by_database.get_mut(&database.name)?.get_mut(sql)?;
        if !kept.check(database) {
            return None;
        }
        kept.last_used = clock;
        Some(kept.plan.clone())
    }

    /// Records that a query was planned from its SQL (it found no kept plan, or was not to
    /// keep one).
    pub(crate) fn count_planned(&self) {
        self.planned.inc();
    }

    /// Keeps `plan` of `sql` against `database`, which reads `tables` ([`kept_tables`]).
    pub(crate) fn insert(
        &self,
        database: &DatabaseSchema,
        sql: &str,
        tables: Vec<Arc<TableSchema>>,
        plan: Plan,
    ) {
        if sql.len() > MAX_SQL_BYTES {
            return;
        }
        let mut plans = self.inner.lock();
        let present = plans
            .by_database
            .get(&database.name)
            .is_some_and(|p| p.contains_key(sql));
        if !present && plans.len >= CAPACITY {
            plans.evict_least_recent();
        }
        plans.clock += 1;
        let kept = KeptPlan {
            plan,
            database: database.id,
            retention_period_ns: database.retention_period_ns,
            tables,
            last_used: plans.clock,
        };
        let replaced = plans
            .by_database
            .entry(Arc::clone(&database.name))
            .or_default()
            .insert(sql.into(), kept);
        if replaced.is_none() {
            plans.len += 1;
        }
    }
}

#[cfg(test)]
impl PlanCache {
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().len
    }
}

impl Plans {
    fn evict_least_recent(&mut self) {
        let oldest = self
            .by_database
            .iter()
            .flat_map(|(db, plans)| plans.iter().map(move |(sql, p)| (p.last_used, db, sql)))
            .min_by_key(|(last_used, _, _)| *last_used)
            .map(|(_, db, sql)| (Arc::clone(db), sql.clone()));
        let Some((db, sql)) = oldest else { return };
        let plans = self.by_database.get_mut(&db).expect("found above");
        plans.remove(&sql);
        if plans.is_empty() {
            self.by_database.remove(&db);
        }
        self.len -= 1;
    }
}

/// The database tables `plan` (as SQL planning made it, before optimization) reads, if it
/// may be optimized once and used for later runs of the same statement (see the module docs).
pub(crate) fn kept_tables(plan: &LogicalPlan) -> Option<Vec<Arc<TableSchema>>> {
    let mut tables: Vec<Arc<TableSchema>> = Vec::new();
    let mut reusable = true;
    let walk = plan.apply_with_subqueries(|node| {
        reusable = match node {
            LogicalPlan::TableScan(scan) => {
                let table = source_as_provider(&scan.source)
                    .ok()
                    .and_then(|provider| database_table(provider.as_ref()).cloned());
                match table {
                    Some(table) => {
                        if !tables.iter().any(|t| Arc::ptr_eq(t, &table)) {
                            tables.push(table);
                        }
                        true
                    }
                    None => false,
                }
            }
            LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Extension(_) => false,
            _ => true,
        };
        if !reusable {
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                reusable = is_timeless(e);
                Ok(if reusable {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        })
    });
    (walk.is_ok() && reusable).then_some(tables)
}

/// Whether an expression (not its children) evaluates the same at any moment, given its
/// inputs.
fn is_timeless(expr: &Expr) -> bool {
    match expr {
        Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
        Expr::Placeholder(_) | Expr::ScalarVariable(..) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use arrow::array::{
        ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, new_null_array,
    };
    use arrow::compute::cast;
    use arrow::datatypes::{DataType, SchemaRef};
    use arrow::error::ArrowError;
    use catalog::{Catalog, CatalogLimits, ColumnType, DatabaseId, SchemaChanges, SqliteCatalog};
    use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
    use futures::TryStreamExt;

    use super::*;
    use crate::{BufferReader, BufferedPartition, Querier, QuerierConfig, QueryParams};

    /// Buffered rows of table `cpu`: (host, time, usage), one partition.
    #[derive(Debug, Default)]
    struct Rows(Mutex<Vec<(&'static str, i64, f64)>>);

    impl BufferReader for Rows {
        fn read_table(
            &self,
            _database: &str,
            _table: &str,
            schema: &SchemaRef,
            _min_time_ns: i64,
            _max_time_ns: i64,
        ) -> Result<Vec<BufferedPartition>, ArrowError> {
            let mut rows = self.0.lock().unwrap().clone();
            rows.sort_by_key(|&(host, time, _)| (host, time));
            let columns = schema
                .fields()
                .iter()
                .map(|field| -> Result<ArrayRef, ArrowError> {
                    Ok(match field.name().as_str() {
                        "host" => cast(
                            &StringArray::from_iter_values(rows.iter().map(|r| r.0)),
                            field.data_type(),
                        )?,
                        "time" => Arc::new(TimestampNanosecondArray::from_iter_values(
                            rows.iter().map(|r| r.1),
                        )),
                        "usage" => {
                            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2)))
                        }
                        _ => new_null_array(field.data_type(), rows.len()),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![BufferedPartition {
                day: 0,
                max_sequence: rows.len() as u64,
                batches: vec![RecordBatch::try_new(Arc::clone(schema), columns)?],
            }])
        }
    }

    struct Setup {
        querier: Querier,
        catalog: Arc<SqliteCatalog>,
        rows: Arc<Rows>,
    }

    async fn setup() -> Setup {
        let catalog = Arc::new(SqliteCatalog::open_in_memory(CatalogLimits::default()).unwrap());
        catalog.create_database("db", None).await.unwrap();
        add_columns(
            &catalog,
            &[("host", ColumnType::Tag), ("usage", ColumnType::Float)],
        )
        .await;
        let rows = Arc::new(Rows::default());
        rows.0.lock().unwrap().push(("a", 1_000, 1.0));
        let querier = Querier::new(
            QuerierConfig::default(),
            Arc::clone(&catalog) as Arc<dyn Catalog>,
            Arc::clone(&rows) as Arc<dyn BufferReader>,
            Arc::new(object_store::memory::InMemory::new()),
        )
        .unwrap();
        Setup {
            querier,
            catalog,
            rows,
        }
    }

    async fn add_columns(catalog: &SqliteCatalog, columns: &[(&str, ColumnType)]) {
        let mut changes = SchemaChanges::new("db");
        changes.tables.insert(
            "cpu".to_owned(),
            columns.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect(),
        );
        catalog.apply(changes).await.unwrap();
    }

    async fn run(querier: &Querier, sql: &str) -> Vec<RecordBatch> {
        let result = querier.query("db", sql, QueryParams::None).await.unwrap();
        result.stream.try_collect().await.unwrap()
    }

    fn count(batches: &[RecordBatch]) -> i64 {
        let column = batches[0].column(0);
        cast(column, &DataType::Int64)
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    }

    #[tokio::test]
    async fn a_kept_statement_reads_the_rows_of_its_own_moment() {
        let Setup { querier, rows, .. } = setup().await;
        let sql = "SELECT count(*) FROM cpu WHERE host = 'a'";
        assert_eq!(count(&run(&querier, sql).await), 1);

        rows.0.lock().unwrap().push(("a", 2_000, 2.0));
        assert_eq!(count(&run(&querier, sql).await), 2);
        assert_eq!(
            querier.plans.reused.get(),
            1,
            "the second run reused the plan"
        );
    }

    #[tokio::test]
    async fn a_kept_statement_is_described_as_it_was_planned() {
        let Setup { querier, .. } = setup().await;
        let sql = "SELECT host, max(usage) AS top FROM cpu GROUP BY host";
        let planned = querier
            .describe("db", sql, QueryParams::None)
            .await
            .unwrap();
        run(&querier, sql).await;
        let kept = querier
            .describe("db", sql, QueryParams::None)
            .await
            .unwrap();
        assert_eq!(kept.schema, planned.schema);
        assert_eq!(kept.parameters, planned.parameters);
    }

    #[tokio::test]
    async fn a_database_created_again_under_its_name_is_planned_again() {
        let Setup {
            querier, catalog, ..
        } = setup().await;
        let sql = "SELECT count(*) FROM cpu";
        run(&querier, sql).await;
        catalog.delete_database("db", 0).await.unwrap();
        catalog.create_database("db", None).await.unwrap();
        add_columns(
            &catalog,
            &[("host", ColumnType::Tag), ("usage", ColumnType::Float)],
        )
        .await;
        run(&querier, sql).await;
        assert_eq!(querier.plans.reused.get(), 0);
        assert_eq!(querier.plans.planned.get(), 2);
    }

    #[tokio::test]
    async fn a_kept_statement_is_planned_again_when_the_schema_changes() {
        let Setup {
            querier, catalog, ..
        } = setup().await;
        let sql = "SELECT * FROM cpu";
        assert_eq!(run(&querier, sql).await[0].num_columns(), 3);

        add_columns(&catalog, &[("idle", ColumnType::Float)]).await;
        let batches = run(&querier, sql).await;
        assert_eq!(querier.plans.reused.get(), 0);
        let names: Vec<_> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["host", "idle", "time", "usage"]);
    }

    #[tokio::test]
    async fn statements_that_depend_on_their_moment_are_not_kept() {
        let Setup { querier, .. } = setup().await;
        for sql in [
            "SELECT now()",
            "SELECT count(*) FROM cpu WHERE time > now() - INTERVAL '1 hour'",
            "SELECT random() FROM cpu",
            "SELECT * FROM system.queries",
            "SELECT table_name FROM information_schema.tables",
            "SELECT * FROM last_cache('cpu')",
            "EXPLAIN SELECT * FROM cpu",
            "SELECT * FROM cpu WHERE host IN (SELECT table_name FROM information_schema.tables)",
        ] {
            run(&querier, sql).await;
            assert_eq!(querier.plans.len(), 0, "{sql}");
        }
        let mut params = std::collections::HashMap::new();
        params.insert(
            "host".to_owned(),
            datafusion::scalar::ScalarValue::from("a"),
        );
        let result = querier
            .query(
                "db",
                "SELECT * FROM cpu WHERE host = $host",
                QueryParams::Named(params),
            )
            .await
            .unwrap();
        let _: Vec<RecordBatch> = result.stream.try_collect().await.unwrap();
        assert_eq!(querier.plans.len(), 0);
        let unbound = querier
            .query(
                "db",
                "SELECT * FROM cpu WHERE host = $host",
                QueryParams::None,
            )
            .await;
        assert!(unbound.is_err(), "the values bound before are not kept");

        run(
            &querier,
            "SELECT date_bin(INTERVAL '1 minute', time), max(usage) FROM cpu \
             WHERE time >= '1970-01-01T00:00:00Z' GROUP BY 1",
        )
        .await;
        assert_eq!(querier.plans.len(), 1);
    }

    fn table(id: i64, name: &str, columns: &[&str]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: catalog::TableId(id),
            name: name.into(),
            columns: columns
                .iter()
                .map(|c| (Arc::from(*c), ColumnType::Float))
                .collect(),
            sort_key: Arc::new([]),
            retention_period_ns: None,
        })
    }

    fn database(
        id: i64,
        retention_period_ns: Option<i64>,
        tables: &[&Arc<TableSchema>],
    ) -> DatabaseSchema {
        DatabaseSchema {
            id: DatabaseId(id),
            name: "db".into(),
            tables: tables
                .iter()
                .map(|t| (Arc::clone(&t.name), Arc::clone(t)))
                .collect(),
            retention_period_ns,
        }
    }

    fn plan() -> Plan {
        let plan = LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: true,
            schema: Arc::new(datafusion::common::DFSchema::empty()),
        });
        let schema = Arc::clone(plan.schema().inner());
        Plan { plan, schema }
    }

    #[test]
    fn a_plan_is_used_only_while_what_it_reads_is_unchanged() {
        let cpu = table(1, "cpu", &["usage"]);
        let mem = table(2, "mem", &["used"]);
        let cache = PlanCache::default();
        cache.insert(
            &database(1, None, &[&cpu, &mem]),
            "SELECT 1",
            vec![Arc::clone(&cpu)],
            plan(),
        );
        let hit = |db: &DatabaseSchema| cache.get(db, "SELECT 1").is_some();

        assert!(hit(&database(1, None, &[&cpu, &mem])));
        // Equal, but from a newer snapshot; another table changed.
        let cpu_again = table(1, "cpu", &["usage"]);
        assert!(hit(&database(
            1,
            None,
            &[&cpu_again, &table(2, "mem", &["used", "free"])]
        )));
        assert!(hit(&database(1, None, &[&cpu_again])));

        assert!(!hit(&database(
            1,
            None,
            &[&table(1, "cpu", &["usage", "idle"])]
        )));
        assert!(!hit(&database(1, None, &[&table(3, "cpu", &["usage"])])));
        assert!(!hit(&database(1, None, &[&mem])));
        assert!(!hit(&database(1, Some(1), &[&cpu])));
        assert!(!hit(&database(2, None, &[&cpu])));
        assert!(cache.get(&database(1, None, &[&cpu]), "SELECT 2").is_none());
    }

    #[test]
    fn the_least_recently_used_plan_makes_room() {
        let cache = PlanCache::default();
        let db = database(1, None, &[]);
        for i in 0..CAPACITY {
            cache.insert(&db, &format!("SELECT {i}"), vec![], plan());
        }
        assert!(cache.get(&db, "SELECT 0").is_some());
        cache.insert(&db, "SELECT 0", vec![], plan());
        assert!(
            cache.get(&db, "SELECT 1").is_some(),
            "replacing a plan evicts none"
        );
        cache.insert(&db, "SELECT -1", vec![], plan());
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.get(&db, "SELECT 0").is_some());
        assert!(cache.get(&db, "SELECT 1").is_some());
        assert!(cache.get(&db, "SELECT 2").is_none());
        assert!(cache.get(&db, "SELECT -1").is_some());
    }

    #[test]
    fn long_statements_are_not_kept() {
        let cache = PlanCache::default();
        let sql = format!("SELECT 1{}", " ".repeat(MAX_SQL_BYTES));
        cache.insert(&database(1, None, &[]), &sql, vec![], plan());
        assert_eq!(cache.len(), 0);
    }
}

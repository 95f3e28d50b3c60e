//! SQL tables over a database: one [`Table`] per table of the catalog snapshot, reading the
//! buffer and the persisted Parquet files as one.
//!
//! ```text
//! scan --> buffer partitions (read first) + files from a fresh catalog snapshot (read second)
//!      --> per partition day: sources whose time ranges overlap form a dedup group
//!      --> UnionExec[ Parquet scan of files that overlap nothing (all filters pushed down),
//!                     buffer partitions that overlap nothing,
//!                     DeduplicateExec(sorted union of one group) -> projection, ... ]
//! ```
//!
//! Range deletes (tombstones) filter the files written before them until a compaction
//! rewrites those files; buffered rows are filtered when the delete is made.
//!
//! Files are deduplicated when written and a buffer partition is deduplicated when read, so a
//! source that overlaps no other needs no dedup. The buffer is read before the catalog: a
//! persist that finishes in between then shows its rows twice (in the buffer and in the new
//! file, which overlap and are deduplicated), never zero times.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::{max, min};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType};
use async_trait::async_trait;
use catalog::{
    Catalog, ColumnType, DatabaseSchema, NewTombstone, ParquetFile, TIME_COLUMN, TableSchema,
    Tombstone,
};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::config::TableParquetOptions;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetRowSelection,
};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema as ScanSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::col;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::scalar::ScalarValue;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::RowSelection;
use parquet::file::metadata::ParquetMetaData;

use crate::page_index::PageIndexReaderFactory;
use crate::sort_tag::{self, TagValues};
use crate::time_pages::{self, TimeRange};
use crate::{BufferReader, BufferedPartition};
use dedup::{CHUNK_ORDER, DeduplicateExec, partitioned_file, sort_ordering};

/// Where the querier finds what a table's scan needs.
#[derive(Debug, Clone)]
pub(crate) struct TableSources {
    pub(crate) buffer: Arc<dyn BufferReader>,
    pub(crate) catalog: Arc<dyn Catalog>,
    /// The object store's URL in the session's runtime.
    pub(crate) store_url: ObjectStoreUrl,
    /// Files' last rows per series, shared by all sessions (`last_cache`).
    pub(crate) last_rows: Arc<crate::last_values::LastRowsCache>,
}

/// The tables of one database, as of the catalog snapshot the session was made from.
#[derive(Debug)]
pub(crate) struct DatabaseSchemaProvider {
    database: Arc<DatabaseSchema>,
    sources: TableSources,
}

impl DatabaseSchemaProvider {
    pub(crate) fn new(database: Arc<DatabaseSchema>, sources: TableSources) -> Self {
        Self { database, sources }
    }
}

#[async_trait]
impl SchemaProvider for DatabaseSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.database.tables.keys().map(|k| k.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.database.table(name).map(|table| {
            Arc::new(Table {
                database: Arc::clone(&self.database),
                schema: table.arrow_schema(),
                table: Arc::clone(table),
                sources: self.sources.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.database.tables.contains_key(name)
    }
}

/// A table: its buffered rows and its Parquet files.
struct Table {
    /// Its database, whose retention period (unless the table has its own) hides old rows.
    /// The cutoff is taken when the table is scanned, not when it is named: a kept plan is
    /// scanned again later (`plan_cache`).
    database: Arc<DatabaseSchema>,
    table: Arc<TableSchema>,
    schema: SchemaRef,
    sources: TableSources,
}

/// The schema of `provider` if it is one of a database's own tables (not a system table or
/// a table function's result).
pub(crate) fn database_table(provider: &dyn TableProvider) -> Option<&Arc<TableSchema>> {
    provider.downcast_ref::<Table>().map(|t| &t.table)
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("database", &self.database.name)
            .field("table", &self.table.name)
            .finish()
    }
}

/// Files whose metadata a scan reads at once while planning (see [`Table::split_pages`]).
const METADATA_READS: usize = 16;

/// A file to scan, and the rows of it to read if not all.
type ScanFile = (ParquetFile, Option<SelectedRows>);

/// Rows of a file a time split selected, and the bytes of the row groups that hold them
/// ([`time_pages::row_group_bytes`]).
#[derive(Debug, Clone)]
struct SelectedRows {
    rows: RowSelection,
    bytes: Option<Range<u64>>,
}

impl SelectedRows {
    fn new(metadata: &ParquetMetaData, rows: RowSelection) -> Self {
        let bytes = time_pages::row_group_bytes(metadata, &rows);
        Self { rows, bytes }
    }
}

/// Time filters DataFusion left to the scan: the range they keep, and them as one predicate
/// over the scan's columns.
struct ExactTime {
    range: TimeRange,
    predicate: Arc<dyn PhysicalExpr>,
}

/// One source of rows of a partition day.
enum Source {
    File(ParquetFile),
    Buffer(BufferedPartition),
}

impl Source {
    /// Inclusive time range and order (higher is newer).
    fn range(&self) -> (i64, i64) {
        match self {
            Self::File(f) => (f.file.min_time_ns, f.file.max_time_ns),
            Self::Buffer(b) => b
                .batches
                .iter()
                .map(buffer_time_range)
                .fold((i64::MAX, i64::MIN), |(lo, hi), (l, h)| {
                    (lo.min(l), hi.max(h))
                }),
        }
    }

    fn order(&self) -> u64 {
        match self {
            Self::File(f) => f.file.max_sequence,
            Self::Buffer(b) => b.max_sequence,
        }
    }
}

#[async_trait]
impl TableProvider for Table {
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
        // Filters prune partitions, files, row groups and pages; DataFusion still applies
        // every filter to the rows, except comparisons of `time` with a timestamp, which the
        // scan applies itself: mostly from the page index (see `time_pages`).
        Ok(filters
            .iter()
            .map(|f| match TimeRange::of_filter(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(cutoff) = self.database.retention_cutoff_ns(&self.table, now_ns()) else {
            return self.scan_sources(state, projection, filters).await;
        };
        // Past the retention period: `time >= cutoff`, which the scan applies exactly like a
        // query's own time filters (from the page index where it can, see `time_pages`).
        let retained = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(Expr::Column(TIME_COLUMN.into())),
            Operator::GtEq,
            Box::new(Expr::Literal(
                ScalarValue::TimestampNanosecond(Some(cutoff), None),
                None,
            )),
        ));
        debug_assert!(TimeRange::of_filter(&retained).is_some());
        let mut filters = filters.to_vec();
        filters.push(retained);
        self.scan_sources(state, projection, &filters).await
    }
}

impl Table {
    /// The table's rows from buffer and files, without the retention filter.
    async fn scan_sources(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(range) = TimeRange::of_filters(filters) else {
            return self.scan_arms(state, projection, filters, None).await;
        };
        // DataFusion leaves the time filters to this scan (`supports_filters_pushdown`): `time`
        // is read to apply them even when the query does not ask for it.
        let exact = filters
            .iter()
            .filter(|f| TimeRange::of_filter(f).is_some())
            .cloned();
        let time = self.schema.index_of(TIME_COLUMN)?;
        let (asked, read) = self.columns_to_read(projection, [time]);
        let read_schema = DFSchema::try_from(Arc::new(self.schema.project(&read)?))?;
        let predicate = state.create_physical_expr(
            conjunction(exact).expect("a time filter, as `range` says"),
            &read_schema,
        )?;
        let exact = ExactTime { range, predicate };
        let plan = self
            .scan_arms(state, Some(&read), filters, Some(exact))
            .await?;
        keep_first(plan, asked.len())
    }

    /// The table's rows from buffer and files as a union of scans. With `exact`, only rows in
    /// its range: files' pages inside it are read as they are, and everything else is
    /// filtered by its predicate.
    async fn scan_arms(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        exact: Option<ExactTime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        let (min_time, max_time) = time_bounds(filters);
        if min_time > max_time {
            // Contradictory time filters: nothing can match.
            return Ok(MemorySourceConfig::try_new_exec(
                &[vec![]],
                projected,
                None,
            )?);
        }
        // The buffer first, then the catalog (see the module docs).
        let buffered = self.read_buffer(min_time, max_time).await?;
        let snapshot = self.sources.catalog.snapshot();
        let files = snapshot
            .table_files(self.table.id)
            .iter()
            .filter(|f| f.file.max_time_ns >= min_time && f.file.min_time_ns <= max_time)
            .cloned();

        let mut by_day: std::collections::BTreeMap<i64, Vec<Source>> = Default::default();
        for f in files {
            by_day
                .entry(f.file.partition_day)
                .or_default()
                .push(Source::File(f));
        }
        for b in buffered {
            by_day.entry(b.day).or_default().push(Source::Buffer(b));
        }
        let mut plain_files = Vec::new();
        let mut plain_buffer = Vec::new();
        let mut dedup_groups = Vec::new();
        for sources in by_day.into_values() {
            for mut group in overlap_groups(sources) {
                if group.len() > 1 {
                    dedup_groups.push(group);
                    continue;
                }
                match group.pop().expect("groups are not empty") {
                    Source::File(f) => plain_files.push(f),
                    Source::Buffer(b) => plain_buffer.extend(b.batches),
                }
            }
        }

        // Files holding rows of range deletes not applied to them yet are read apart, one scan
        // per set of such deletes, and filtered.
        let tombstones = snapshot.table_tombstones(self.table.id);
        let pending = |f: &ParquetFile| -> Vec<&Tombstone> {
            tombstones
                .iter()
                .filter(|t| t.is_pending_for(&f.file))
                .collect()
        };
        let mut deleted_from: std::collections::BTreeMap<Vec<i64>, Vec<ParquetFile>> =
            Default::default();
        plain_files.retain(|f| {
            let ids: Vec<i64> = pending(f).iter().map(|t| t.id.0).collect();
            if ids.is_empty() {
                return true;
            }
            deleted_from.entry(ids).or_default().push(f.clone());
            false
        });

        let bloom_filters = self.bloom_filters_prune(filters);
        // Arms that hold only rows in `exact`'s range, and arms to be filtered by it.
        let mut arms: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let mut filtered: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !plain_files.is_empty() {
            match &exact {
                None => {
                    let files = plain_files.into_iter().map(|f| (f, None)).collect();
                    arms.push(self.plain_parquet(state, files, projection, bloom_filters)?);
                }
                Some(exact) => {
                    let first_tag = self.table.sorted_tags().first().copied();
                    let tag = first_tag.and_then(|t| TagValues::of_filters(filters, t));
                    let (inside, straddling) = self
                        .split_pages(state, plain_files, exact.range, tag.as_ref())
                        .await?;
                    if !inside.is_empty() {
                        arms.push(self.plain_parquet(state, inside, projection, bloom_filters)?);
                    }
                    if !straddling.is_empty() {
                        filtered.push(self.plain_parquet(
                            state,
                            straddling,
                            projection,
                            bloom_filters,
                        )?);
                    }
                }
            }
        }
        for (ids, files) in deleted_from {
            let deletes: Vec<&NewTombstone> = tombstones
                .iter()
                .filter(|t| ids.contains(&t.id.0))
                .map(|t| &t.delete)
                .collect();
            filtered.push(self.parquet_without_deleted(
                state,
                files,
                projection,
                &deletes,
                bloom_filters,
            )?);
        }
        if !plain_buffer.is_empty() {
            filtered.push(spread_buffer(
                state,
                plain_buffer,
                &self.schema,
                projection,
            )?);
        }
        for group in dedup_groups {
            let mut deletes: Vec<&NewTombstone> = Vec::new();
            for source in &group {
                if let Source::File(f) = source {
                    for t in pending(f) {
                        if !deletes.contains(&&t.delete) {
                            deletes.push(&t.delete);
                        }
                    }
                }
            }
            filtered.push(self.deduplicated(state, group, projection, filters, &deletes)?);
        }
        match exact {
            Some(exact) if !filtered.is_empty() => {
                // One filter above them all: DataFusion pushes it into each scan.
                arms.push(Arc::new(FilterExec::try_new(
                    exact.predicate,
                    UnionExec::try_new(filtered)?,
                )?));
            }
            _ => arms.extend(filtered),
        }
        if arms.is_empty() {
            return Ok(MemorySourceConfig::try_new_exec(
                &[vec![]],
                projected,
                None,
            )?);
        }
        UnionExec::try_new(arms)
    }
}

impl Table {
    async fn read_buffer(&self, min_time: i64, max_time: i64) -> Result<Vec<BufferedPartition>> {
        read_buffer(
            &self.sources.buffer,
            &self.database.name,
            &self.table.name,
            &self.schema,
            (min_time, max_time),
        )
        .await
    }

    /// Whether the tags' bloom filters can skip row groups that statistics do not. Files are
    /// sorted by the first tag of the sort order, so a row group's minimum and maximum of that
    /// tag bound the few values it holds, and its bloom filter adds nothing to them. Where it
    /// is the only tag `filters` name, reading the bloom filters is skipped: checking them
    /// was 8 % of the CPU of cpu-max-all-8 (`hostname IN` eight hosts).
    fn bloom_filters_prune(&self, filters: &[Expr]) -> bool {
        let first = self.table.sorted_tags().first().copied();
        filters.iter().flat_map(Expr::column_refs).any(|column| {
            self.table.column_type(&column.name) == Some(ColumnType::Tag)
                && Some(column.name.as_str()) != first
        })
    }

    /// Primary key: tags in the table's sort order, then time (the order files and buffer
    /// are sorted in).
    fn key_columns(&self) -> Vec<usize> {
        let mut key: Vec<usize> = self
            .table
            .sorted_tags()
            .into_iter()
            .filter_map(|t| self.schema.index_of(t).ok())
            .collect();
        key.extend(self.schema.index_of(TIME_COLUMN).ok());
        key
    }

    /// `bloom_filters`: whether pruning reads the tags' bloom filters (see
    /// [`Table::bloom_filters_prune`]).
    fn parquet_source(
        &self,
        state: &dyn Session,
        scan_schema: ScanSchema,
        predicate: Option<Expr>,
        bloom_filters: bool,
    ) -> Result<ParquetSource> {
        let mut options = TableParquetOptions {
            global: state.config_options().execution.parquet.clone(),
            ..Default::default()
        };
        options.global.bloom_filter_on_read &= bloom_filters;
        let mut source = ParquetSource::new(scan_schema)
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(self.reader_factory(state)?));
        if let Some(predicate) = predicate {
            let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        Ok(source)
    }

    /// Sorts files' pages by `range` (see [`time_pages`]): the files' rows on pages inside
    /// it, which need no time filter, and on pages that straddle a bound (all the rows of a
    /// file without a page index for `time`), which do. Pages outside it are in neither, nor
    /// are the row groups that cannot hold `tag`'s values (see [`sort_tag`]).
    async fn split_pages(
        &self,
        state: &dyn Session,
        files: Vec<ParquetFile>,
        range: TimeRange,
        tag: Option<&TagValues>,
    ) -> Result<(Vec<ScanFile>, Vec<ScanFile>)> {
        let readers = self.reader_factory(state)?;
        let metrics = ExecutionPlanMetricsSet::new();
        // The footers and page indexes the scan reads next, from the metadata cache; a few
        // files at a time when they are not cached yet.
        let loads = files
            .iter()
            .map(|f| {
                let file = partitioned_file(&f.file.path, f.file.size_bytes)?;
                let mut reader = readers.create_reader(0, file, None, &metrics)?;
                // Boxed here rather than in a stream closure: async_trait's `Send` check
                // cannot see through a closure over a trait object's lifetime.
                let load: BoxFuture<'static, Result<Arc<ParquetMetaData>>> = async move {
                    reader
                        .get_metadata(None)
                        .await
                        .map_err(|e| DataFusionError::ParquetError(Box::new(e)))
                }
                .boxed();
                Ok(load)
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: Vec<_> = futures::stream::iter(loads)
            .buffered(METADATA_READS)
            .try_collect()
            .await?;
        let (mut inside, mut straddling) = (Vec::new(), Vec::new());
        for (f, metadata) in files.into_iter().zip(metadata) {
            let row_groups = match tag {
                Some(tag) => match tag.row_groups(&metadata)? {
                    Some(row_groups) => Some(row_groups),
                    None => continue,
                },
                None => None,
            };
            let restrict = |rows: RowSelection| match &row_groups {
                Some(row_groups) => sort_tag::restrict(rows, row_groups),
                None => Some(rows),
            };
            match time_pages::split_pages(&metadata, range) {
                None => {
                    let rows = row_groups.map(|r| SelectedRows::new(&metadata, r));
                    straddling.push((f, rows));
                }
                Some(split) => {
                    if let Some(rows) = split.inside.and_then(restrict) {
                        inside.push((f.clone(), Some(SelectedRows::new(&metadata, rows))));
                    }
                    if let Some(rows) = split.straddling.and_then(restrict) {
                        straddling.push((f, Some(SelectedRows::new(&metadata, rows))));
                    }
                }
            }
        }
        Ok((inside, straddling))
    }

    /// Readers of this table's files whose metadata, page index included, is cached.
    fn reader_factory(&self, state: &dyn Session) -> Result<PageIndexReaderFactory> {
        let runtime = state.runtime_env();
        let store = runtime.object_store(&self.sources.store_url)?;
        Ok(PageIndexReaderFactory(CachedParquetFileReaderFactory::new(
            store,
            runtime.cache_manager.get_file_metadata_cache(),
        )))
    }

    /// Files that overlap no other source: one scan, every filter used for pruning. A file
    /// given with a row selection reads only those rows.
    fn plain_parquet(
        &self,
        state: &dyn Session,
        files: Vec<ScanFile>,
        projection: Option<&Vec<usize>>,
        bloom_filters: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // No predicate here: DataFusion's physical filter pushdown moves the filters above
        // into this scan (they would otherwise be evaluated twice when pruning).
        let source = self.parquet_source(
            state,
            ScanSchema::from(Arc::clone(&self.schema)),
            None,
            bloom_filters,
        )?;
        let partitions = state.config().target_partitions().max(1);
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        let mut files: Vec<PartitionedFile> = files
            .into_iter()
            .map(|(f, selected)| {
                let mut file = partitioned_file(&f.file.path, f.file.size_bytes)?;
                if let Some(SelectedRows { rows, bytes }) = selected {
                    if let Some(bytes) = bytes {
                        let to_i64 = |b: u64| {
                            i64::try_from(b).map_err(|e| DataFusionError::External(e.into()))
                        };
                        file = file.with_range(to_i64(bytes.start)?, to_i64(bytes.end)?);
                    }
                    file = file.with_extension(ParquetRowSelection::new(rows));
                }
                Ok(file)
            })
            .collect::<Result<_>>()?;
        // Balanced by the bytes each file's scan covers (a range, if a time split narrowed it).
        files.sort_by_key(|f| std::cmp::Reverse(f.effective_size()));
        for file in files {
            let lightest = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .expect("at least one group");
            lightest.0 += file.effective_size();
            lightest.1.push(file);
        }
        let groups = groups
            .into_iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(_, g)| FileGroup::new(g))
            .collect();
        let config = FileScanConfigBuilder::new(self.sources.store_url.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(projection.cloned())?
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    /// Files whose rows range deletes may match: scanned with the columns the deletes
    /// compare (time and their tags) and filtered, then projected.
    fn parquet_without_deleted(
        &self,
        state: &dyn Session,
        files: Vec<ParquetFile>,
        projection: Option<&Vec<usize>>,
        deletes: &[&NewTombstone],
        bloom_filters: bool,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let compared = deletes
            .iter()
            .flat_map(|d| d.tags.iter().map(|(tag, _)| tag.as_ref()))
            .chain([TIME_COLUMN])
            .filter_map(|name| self.schema.index_of(name).ok());
        let (asked, read) = self.columns_to_read(projection, compared);
        let files = files.into_iter().map(|f| (f, None)).collect();
        let scan = self.plain_parquet(state, files, Some(&read), bloom_filters)?;
        let Some(surviving) = dedup::surviving_rows(deletes, &scan.schema(), None)? else {
            return Ok(scan);
        };
        filter_then_project(scan, surviving, asked.len())
    }

    /// The columns a query asked for (`projection`, or all), and those plus `also`: what a
    /// scan reads to filter on columns the query may not want. The asked ones come first.
    fn columns_to_read(
        &self,
        projection: Option<&Vec<usize>>,
        also: impl IntoIterator<Item = usize>,
    ) -> (Vec<usize>, Vec<usize>) {
        let asked: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let mut read = asked.clone();
        for i in also {
            if !read.contains(&i) {
                read.push(i);
            }
        }
        (asked, read)
    }

    /// Sources of one partition whose time ranges overlap: merged in key order, one row per
    /// key, newest fields winning. Only tag and time filters go below the dedup; range
    /// `deletes` of files in the group drop their rows before it (a deleted row must not
    /// lend its fields to a newer one).
    fn deduplicated(
        &self,
        state: &dyn Session,
        group: Vec<Source>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        deletes: &[&NewTombstone],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let key = self.key_columns();
        let n = self.schema.fields().len();
        // Columns the dedup reads: those asked for, the key, and the chunk order last.
        let mut columns: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..n).collect());
        columns.extend(&key);
        columns.sort_unstable();
        columns.dedup();
        let mut read = columns.clone();
        read.push(n);
        let order_field = Arc::new(Field::new(CHUNK_ORDER, DataType::Int64, false));
        let mut full_fields: Vec<Arc<Field>> = self.schema.fields().iter().cloned().collect();
        full_fields.push(Arc::clone(&order_field));
        let full_schema = Arc::new(Schema::new(full_fields));
        let ordering = sort_ordering(
            key.iter()
                .map(|&i| self.schema.field(i).name().as_str())
                .chain([CHUNK_ORDER]),
            &full_schema,
        )?;

        let key_names: Vec<&str> = key
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect();
        let key_filters = filters
            .iter()
            .filter(|f| {
                f.column_refs()
                    .iter()
                    .all(|c| key_names.contains(&c.name.as_str()))
            })
            .cloned();
        let predicate = conjunction(key_filters);

        let mut files = Vec::new();
        let mut buffers = Vec::new();
        for source in group {
            let order = source.order() as i64;
            match source {
                Source::File(f) => files.push(
                    partitioned_file(&f.file.path, f.file.size_bytes)?
                        .with_partition_values(vec![ScalarValue::Int64(Some(order))]),
                ),
                Source::Buffer(b) => {
                    // One sorted sequence of batches: one memory partition.
                    let ordered = b
                        .batches
                        .iter()
                        .map(|batch| {
                            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                            columns.push(Arc::new(Int64Array::from_value(order, batch.num_rows())));
                            RecordBatch::try_new(Arc::clone(&full_schema), columns)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    buffers.push(ordered);
                }
            }
        }
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let source = self.parquet_source(
                state,
                ScanSchema::builder(Arc::clone(&self.schema))
                    .with_table_partition_cols(vec![Arc::clone(&order_field)])
                    .build(),
                predicate,
                self.bloom_filters_prune(filters),
            )?;
            // One file per group: each is sorted, and DataFusion keeps a declared order only
            // for groups it can prove sorted.
            let groups = files.into_iter().map(|f| FileGroup::new(vec![f])).collect();
            let config =
                FileScanConfigBuilder::new(self.sources.store_url.clone(), Arc::new(source))
                    .with_file_groups(groups)
                    .with_output_ordering(vec![ordering.clone()])
                    .with_projection_indices(Some(read.clone()))?
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        for batches in buffers {
            let memory = MemorySourceConfig::try_new(
                &[batches],
                Arc::clone(&full_schema),
                Some(read.clone()),
            )?
            .try_with_sort_information(vec![ordering.clone()])?;
            inputs.push(DataSourceExec::from_data_source(memory));
        }
        let mut union = UnionExec::try_new(inputs)?;
        let read_schema = union.schema();
        if let Some(surviving) = dedup::surviving_rows(deletes, &read_schema, Some(CHUNK_ORDER))? {
            union = Arc::new(datafusion::physical_plan::filter::FilterExec::try_new(
                surviving, union,
            )?);
        }
        let dedup_ordering =
            sort_ordering(key_names.iter().copied().chain([CHUNK_ORDER]), &read_schema)?;
        let dedup_keys = key_names
            .iter()
            .map(|name| read_schema.index_of(name))
            .collect::<Result<Vec<_>, _>>()?;
        let dedup = Arc::new(DeduplicateExec::new(union, dedup_ordering, dedup_keys));
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..n).collect());
        let exprs = wanted
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name();
                Ok((col(name, &read_schema)?, name.clone()))
            })
            .collect::<Result<Vec<(Arc<dyn PhysicalExpr>, String)>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, dedup)?))
    }
}

/// `input` filtered by `predicate`, then cut back to its first `asked` columns (the others
/// were read only for the filter).
fn filter_then_project(
    input: Arc<dyn ExecutionPlan>,
    predicate: Arc<dyn PhysicalExpr>,
    asked: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    keep_first(Arc::new(FilterExec::try_new(predicate, input)?), asked)
}

/// `input`'s first `asked` columns.
fn keep_first(input: Arc<dyn ExecutionPlan>, asked: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    if schema.fields().len() == asked {
        return Ok(input);
    }
    let exprs = (0..asked)
        .map(|i| {
            let name = schema.field(i).name();
            Ok((col(name, &schema)?, name.clone()))
        })
        .collect::<Result<Vec<(Arc<dyn PhysicalExpr>, String)>>>()?;
    Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
}

/// A table's buffered partitions that may overlap `[min, max]` time. Reading may deduplicate
/// a partition: CPU work that must not stall an I/O worker.
pub(crate) async fn read_buffer(
    buffer: &Arc<dyn BufferReader>,
    database: &Arc<str>,
    table: &Arc<str>,
    schema: &SchemaRef,
    (min_time, max_time): (i64, i64),
) -> Result<Vec<BufferedPartition>> {
    let (buffer, database, table, schema) = (
        Arc::clone(buffer),
        Arc::clone(database),
        Arc::clone(table),
        Arc::clone(schema),
    );
    tokio::task::spawn_blocking(move || {
        buffer.read_table(&database, &table, &schema, min_time, max_time)
    })
    .await
    .map_err(|e| DataFusionError::External(Box::new(e)))?
    .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The object of a recorded file, with its exact size (the metadata cache checks it).
/// Groups a partition's sources into sets whose time ranges overlap (transitively); within a
/// set, sources are in order, oldest first.
fn overlap_groups(mut sources: Vec<Source>) -> Vec<Vec<Source>> {
    let mut ranged: Vec<((i64, i64), Source)> = sources.drain(..).map(|s| (s.range(), s)).collect();
    ranged.sort_by_key(|(range, _)| *range);
    let mut groups: Vec<(i64, Vec<Source>)> = Vec::new();
    for ((lo, hi), source) in ranged {
        match groups.last_mut() {
            Some((end, group)) if lo <= *end => {
                *end = (*end).max(hi);
                group.push(source);
            }
            _ => groups.push((hi, vec![source])),
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by_key(Source::order);
            g
        })
        .collect()
}

/// The time range of a buffered partition's rows.
fn buffer_time_range(batch: &RecordBatch) -> (i64, i64) {
    let time = batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>());
    match time {
        Some(t) => (min(t).unwrap_or(i64::MAX), max(t).unwrap_or(i64::MIN)),
        None => (i64::MIN, i64::MAX),
    }
}

/// Buffered partitions that overlap nothing, spread over as many partitions as the session
/// runs in parallel, in slices of one batch size: then DataFusion needs no repartitioning,
/// whose buffers would count against the query memory pool.
fn spread_buffer(
    state: &dyn Session,
    batches: Vec<RecordBatch>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
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
    Ok(MemorySourceConfig::try_new_exec(
        &spread,
        Arc::clone(schema),
        projection.cloned(),
    )?)
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
    if let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::And,
        right,
    }) = expr
    {
        narrow(left, bounds);
        narrow(right, bounds);
        return;
    }
    let Some((op, value)) = time_pages::time_comparison(expr) else {
        return;
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

/// Nanoseconds since the Unix epoch, by the clock.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

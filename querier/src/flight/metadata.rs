//! Flight SQL's catalog commands (`CommandGetCatalogs`, `CommandGetDbSchemas`,
//! `CommandGetTables`, `CommandGetTableTypes`), answered from the same SQL session a query of
//! the database gets, so they list exactly what SQL can name: the database's tables in
//! `public.iox`, `information_schema` and `system`.
//!
//! The key commands (`CommandGetPrimaryKeys` and the foreign key ones) answer with no rows:
//! time series tables have no declared keys.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{GetCatalogsBuilder, GetTablesBuilder};
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::INFORMATION_SCHEMA;
use datafusion::common::TableReference;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

/// Table type of a database's own tables.
const BASE_TABLE: &str = "BASE TABLE";
/// Table type of `information_schema` and `system` tables (as `information_schema.tables`
/// reports them).
const VIEW: &str = "VIEW";

pub(super) fn catalogs(ctx: Option<&SessionContext>) -> Result<RecordBatch, FlightError> {
    let mut builder = GetCatalogsBuilder::new();
    match ctx {
        Some(ctx) => ctx
            .catalog_names()
            .into_iter()
            .for_each(|c| builder.append(c)),
        None => builder.append(crate::SQL_CATALOG),
    }
    builder.build()
}

pub(super) fn db_schemas(
    ctx: &SessionContext,
    command: CommandGetDbSchemas,
) -> Result<RecordBatch, FlightError> {
    let mut builder = command.into_builder();
    for catalog_name in ctx.catalog_names() {
        for (schema_name, _) in schemas(ctx, &catalog_name) {
            builder.append(&catalog_name, schema_name);
        }
    }
    builder.build()
}

pub(super) async fn tables(
    ctx: &SessionContext,
    command: CommandGetTables,
) -> Result<RecordBatch, FlightError> {
    let mut builder = command.into_builder();
    for catalog_name in ctx.catalog_names() {
        for (schema_name, schema) in schemas(ctx, &catalog_name) {
            let mut names = schema.table_names();
            names.sort_unstable();
            for table_name in names {
                let Some(table) = schema
                    .table(&table_name)
                    .await
                    .map_err(|e| FlightError::ExternalError(Box::new(e)))?
                else {
                    continue;
                };
                let table_type = match table.table_type() {
                    _ if schema_name == INFORMATION_SCHEMA => VIEW,
                    TableType::Base if schema_name == crate::SQL_SCHEMA => BASE_TABLE,
                    TableType::Base | TableType::View => VIEW,
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                builder.append(
                    &catalog_name,
                    &schema_name,
                    &table_name,
                    table_type,
                    &table.schema(),
                )?;
            }
        }
    }
    builder.build()
}

/// The schemas of a catalog as SQL sees them: its own, and `information_schema`, which
/// DataFusion adds to every catalog of a session that has it on.
fn schemas(ctx: &SessionContext, catalog_name: &str) -> Vec<(String, Arc<dyn SchemaProvider>)> {
    let Some(catalog) = ctx.catalog(catalog_name) else {
        return Vec::new();
    };
    let mut schemas: Vec<_> = catalog
        .schema_names()
        .into_iter()
        .filter_map(|name| catalog.schema(&name).map(|schema| (name, schema)))
        .collect();
    let state = ctx.state();
    if state.config().information_schema() {
        // A table reference resolves to its schema; any table name of the schema will do.
        let reference = TableReference::full(catalog_name, INFORMATION_SCHEMA, "tables");
        if let Ok(schema) = state.schema_for_ref(reference) {
            schemas.push((INFORMATION_SCHEMA.to_owned(), schema));
        }
    }
    schemas
}

pub(super) fn table_types_schema() -> SchemaRef {
    CommandGetTableTypes {}.into_builder().schema()
}

pub(super) fn table_types() -> Result<RecordBatch, FlightError> {
    let mut builder = CommandGetTableTypes {}.into_builder();
    builder.append(BASE_TABLE);
    builder.append(VIEW);
    builder.build()
}

pub(super) fn catalogs_schema() -> SchemaRef {
    GetCatalogsBuilder::new().schema()
}

pub(super) fn db_schemas_schema(command: CommandGetDbSchemas) -> SchemaRef {
    command.into_builder().schema()
}

pub(super) fn tables_schema(command: CommandGetTables) -> SchemaRef {
    let builder: GetTablesBuilder = command.into_builder();
    builder.schema()
}

/// The result schema of `CommandGetPrimaryKeys`.
pub(super) static PRIMARY_KEYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
});

/// The result schema of `CommandGetExportedKeys`, `CommandGetImportedKeys` and
/// `CommandGetCrossReference`.
pub(super) static FOREIGN_KEYS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
});

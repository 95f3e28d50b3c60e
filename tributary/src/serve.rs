//! `tributary serve`: every role in one process.

use std::process::ExitCode;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use catalog::{Catalog, CatalogLimits, SqliteCatalog};
use compactor::{Compactor, CompactorConfig};
use ingester::{Ingester, IngesterConfig, ObjectStorage};
use prometheus_client::registry::Registry;
use querier::{BufferReader, BufferedPartition, Querier, QuerierConfig};
use tracing_subscriber::EnvFilter;

use crate::config::{ObjectStoreKind, ServeConfig};
use crate::http::{AppState, router};

/// The querier's view of the in-process ingester's buffer.
#[derive(Debug)]
struct LocalBuffer(Ingester);

impl BufferReader for LocalBuffer {
    fn read_table(
        &self,
        database: &str,
        table: &str,
        schema: &SchemaRef,
        min_time_ns: i64,
        max_time_ns: i64,
    ) -> Result<Vec<BufferedPartition>, ArrowError> {
        Ok(self
            .0
            .read_table(database, table, schema, min_time_ns, max_time_ns)?
            .into_iter()
            .map(|p| BufferedPartition {
                day: p.day,
                max_sequence: p.max_sequence,
                batches: p.batches,
            })
            .collect())
    }
}

/// The object store `--object-store` and its flags describe.
fn object_storage(config: &ServeConfig) -> anyhow::Result<ObjectStorage> {
    use anyhow::Context;
    Ok(match config.object_store {
        ObjectStoreKind::File => {
            let dir = config.data_dir.join("objects");
            ObjectStorage::local(dir.clone())
                .with_context(|| format!("cannot open the object store in {}", dir.display()))?
        }
        ObjectStoreKind::Memory => {
            tracing::warn!(
                "--object-store memory: nothing written outlives the process; each start begins empty"
            );
            ObjectStorage::remote(Arc::new(object_store::memory::InMemory::new()))
        }
        ObjectStoreKind::S3 => {
            let bucket = config.bucket.as_deref().unwrap_or_default();
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(config.aws_region())
                .with_allow_http(config.aws_allow_http)
                .with_virtual_hosted_style_request(false);
            if let Some(endpoint) = &config.aws_endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(key) = &config.aws_access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &config.aws_secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = &config.aws_session_token {
                builder = builder.with_token(token);
            }
            let store = builder.build().with_context(|| {
                format!("cannot set up the S3 object store for --bucket {bucket}")
            })?;
            ObjectStorage::remote(Arc::new(store))
        }
    })
}

/// Deletes the catalog and the write-ahead log an earlier `--object-store memory` process left
/// in its state directory: they name files that went with it. Only what such a process
/// writes there is deleted.
fn forget_memory_state(config: &ServeConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = config.state_dir();
    let catalog = config.catalog_path();
    let mut sqlite_files = vec![catalog.clone()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = catalog.clone().into_os_string();
        name.push(suffix);
        sqlite_files.push(name.into());
    }
    for file in &sqlite_files {
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!("cannot delete {} (--object-store memory)", file.display())
                });
            }
            _ => {}
        }
    }
    let wal = dir.join("wal");
    if wal.exists() {
        std::fs::remove_dir_all(&wal)
            .with_context(|| format!("cannot delete {} (--object-store memory)", wal.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))
}

pub(crate) fn main(config: ServeConfig) -> ExitCode {
    let config = config.with_aws_environment(|name| std::env::var(name).ok());
    let filter = EnvFilter::try_new(&config.log_filter);
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "--log-filter (TRIBUTARY_LOG_FILTER) `{}` is invalid: {e}",
                config.log_filter
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    if let Err(e) = config.validate() {
        tracing::error!("{e}");
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServeConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    tracing::info!(config = ?config.redacted(), "starting tributary serve");
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;

    // One server per data directory: two would interleave WAL segments. The lock is released
    // by the kernel when the process dies, SIGKILL included.
    let lock_path = config.data_dir.join("lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if let Err(e) = lock_file.try_lock() {
        anyhow::bail!(
            "--data-dir {} is locked by another running tributary ({e}); stop it or choose another --data-dir",
            config.data_dir.display()
        );
    }

    if config.object_store == ObjectStoreKind::Memory {
        forget_memory_state(&config)?;
    }

    let limits = CatalogLimits {
        max_databases: config.max_databases,
        max_tables_per_database: config.max_tables_per_database,
        max_columns_per_table: config.max_columns_per_table,
    };
    let catalog_path = config.catalog_path();
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::open(&catalog_path, limits)
            .with_context(|| format!("cannot open the catalog at {}", catalog_path.display()))?,
    );

    // An eighth of --parquet-cache-size for decoded metadata (footers, page indexes), the rest
    // for files and blocks of large files.
    let metadata_cache_bytes = config.parquet_cache_size / 8;
    let storage =
        object_storage(&config)?.with_read_cache(config.parquet_cache_size - metadata_cache_bytes);
    let mut registry = Registry::default();
    let ingester_config = IngesterConfig {
        wal_dir: config.state_dir().join("wal"),
        buffer_mem_limit_bytes: config.buffer_mem_limit as usize,
        persist_interval: config.persist_interval,
        ..IngesterConfig::default()
    };
    let ingester = {
        let catalog = Arc::clone(&catalog);
        let registry = &mut registry;
        let storage = storage.clone();
        tokio::task::block_in_place(|| Ingester::new(ingester_config, catalog, storage, registry))?
    };
    ingester.start_persister();
    let querier = Querier::new(
        QuerierConfig {
            query_mem_limit_bytes: config.query_mem_limit as usize,
            parquet_cache_bytes: metadata_cache_bytes as usize,
        },
        Arc::clone(&catalog),
        Arc::new(LocalBuffer(ingester.clone())),
        storage.store(),
    )?;
    querier.register_metrics(&mut registry);

    let listener = tokio::net::TcpListener::bind(config.http_bind)
        .await
        .with_context(|| format!("cannot bind --http-bind {}", config.http_bind))?;
    let addr = listener.local_addr()?;
    write_bound_address(&config, addr)?;
    tracing::info!(%addr, "listening for HTTP and gRPC (Flight SQL)");

    let compactor = Compactor::new(
        CompactorConfig {
            interval: config.compaction_interval,
            l0_threshold: config.compaction_l0_threshold,
            target_file_bytes: config.compaction_target_file_size,
            mem_limit_bytes: config.compaction_mem_limit as usize,
            gc_grace_period: config.gc_grace_period,
            retention_check_interval: config.retention_check_interval,
        },
        Arc::clone(&catalog),
        storage.clone(),
        &mut registry,
    )
    .context("cannot set up the compactor")?
    .start()
    .context("cannot start the compactor")?;
    let flight = querier::flight::service(querier.clone());
    let state = AppState::new(
        catalog,
        ingester.clone(),
        querier,
        Arc::new(registry),
        config.max_http_request_size as usize,
    );
    // Responses end with small writes; without TCP_NODELAY the last one waits for the
    // client's delayed ACK, ~40 ms per request on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, crate::grpc::one_port(router(state), flight))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;

    // A compaction in progress finishes first; its files are then recorded or removed.
    tokio::task::block_in_place(|| compactor.stop());
    tracing::info!(
        "in-flight requests finished; persisting the buffer and closing the write-ahead log"
    );
    ingester
        .shutdown()
        .await
        .context("cannot close the write-ahead log")?;
    tracing::info!("stopped");
    drop(lock_file);
    Ok(())
}

/// Writes the bound address to `<data-dir>/http-addr` atomically (write, then rename), so a
/// reader never sees a partial address.
fn write_bound_address(config: &ServeConfig, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = config.data_dir.join("http-addr");
    let tmp = config.data_dir.join("http-addr.tmp");
    std::fs::write(&tmp, addr.to_string())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

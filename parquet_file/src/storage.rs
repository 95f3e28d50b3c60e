//! Where Parquet files live: an object store (local files, memory, S3), with uploads that are
//! durable when they return.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A new object's path for a file of `table`'s partition `day`:
/// `<db>/<table>/<YYYY-MM-DD>/<uuid>.parquet`.
pub fn object_path(database: &str, table: &str, day: i64) -> Path {
    let file_name = format!("{}.parquet", uuid::Uuid::new_v4());
    let date = catalog::partition_date(day);
    Path::from_iter([database, table, date.as_str(), file_name.as_str()])
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot upload {path} to the object store")]
    Upload {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot fsync {path} in the local object store")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upload task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Where persisted files go.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// `store` without the read cache (the same store when there is none).
    uncached: Arc<dyn ObjectStore>,
    /// Set for the local file system, whose `put` renames into place without fsync: uploads
    /// sync the file and its directories before they return.
    local: Option<(Arc<LocalFileSystem>, PathBuf)>,
}

impl ObjectStorage {
    /// Objects as files under `dir` (created if missing).
    pub fn local(dir: PathBuf) -> Result<Self, object_store::Error> {
        std::fs::create_dir_all(&dir).map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })?;
        let fs = Arc::new(LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true));
        Ok(Self {
            store: Arc::clone(&fs) as Arc<dyn ObjectStore>,
            uncached: Arc::clone(&fs) as Arc<dyn ObjectStore>,
            local: Some((fs, dir)),
        })
    }

    /// Any other store (memory, S3): its `put` is durable when it returns.
    pub fn remote(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            uncached: Arc::clone(&store),
            store,
            local: None,
        }
    }

    /// Keeps up to `capacity_bytes` of files in memory for readers: files as they are
    /// uploaded, and files as they are first read; a file over a quarter of the capacity is
    /// kept as the blocks read from it. 0 keeps none.
    pub fn with_read_cache(mut self, capacity_bytes: u64) -> Self {
        if capacity_bytes > 0 {
            self.store = Arc::new(crate::cache::CachedStore::new(self.store, capacity_bytes));
        }
        self
    }

    /// The store, for readers.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The store without the read cache, for readers that read a file once and should not
    /// evict what queries read (the compactor's inputs are replaced right after).
    pub fn uncached_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.uncached)
    }

    /// Uploads `bytes` to `path`, durable when this returns.
    pub async fn put_durable(&self, path: &Path, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(path, PutPayload::from(bytes))
            .await
            .map_err(|source| StorageError::Upload {
                path: path.to_string(),
                source,
            })?;
        let Some((fs, root)) = &self.local else {
            return Ok(());
        };
        let file = fs
            .path_to_filesystem(path)
            .map_err(|source| StorageError::Upload {
                path: path.to_string(),
                source,
            })?;
        let root = root.clone();
        tokio::task::spawn_blocking(move || sync_file_and_dirs(&file, &root))
            .await
            .map_err(StorageError::Task)?
            .map_err(|source| StorageError::Sync {
                path: path.to_string(),
                source,
            })
    }
}

/// Fsyncs a new file and every directory from its parent up to `root`, so the file and its
/// name survive a power loss.
fn sync_file_and_dirs(file: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

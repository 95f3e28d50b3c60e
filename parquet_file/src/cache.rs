//! An in-memory cache of whole Parquet files in front of the object store.
//!
//! Queries read a file as many small ranges (footer, page index, column chunks); against S3
//! each is a request. The cache keeps whole files, filled when a file is persisted (so fresh
//! data is never read back) and on the first read, and evicts the least recently used file
//! past its capacity. Files are immutable once written, so an entry never goes stale; a
//! deleted file is dropped from the cache too.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, Result,
};
use parking_lot::Mutex;

/// Files larger than this are never cached whole: one would evict everything else.
const MAX_CACHED_FILE_SHARE: u64 = 4;

/// The caching store.
pub(crate) struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    capacity_bytes: u64,
    state: Arc<Mutex<CacheState>>,
}

#[derive(Default)]
struct CacheState {
    files: HashMap<Path, CachedFile>,
    size_bytes: u64,
    tick: u64,
}

impl CacheState {
    fn forget(&mut self, location: &Path) {
        if let Some(f) = self.files.remove(location) {
            self.size_bytes -= f.bytes.len() as u64;
        }
    }
}

struct CachedFile {
    bytes: Bytes,
    meta: ObjectMeta,
    last_used: u64,
}

impl CachedStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, capacity_bytes: u64) -> Self {
        Self {
            inner,
            capacity_bytes,
            state: Arc::default(),
        }
    }

    fn lookup(&self, location: &Path) -> Option<(Bytes, ObjectMeta)> {
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        let file = state.files.get_mut(location)?;
        file.last_used = tick;
        Some((file.bytes.clone(), file.meta.clone()))
    }

    fn insert(&self, meta: ObjectMeta, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.capacity_bytes / MAX_CACHED_FILE_SHARE {
            return;
        }
        let mut state = self.state.lock();
        state.tick += 1;
        let tick = state.tick;
        let location = meta.location.clone();
        if let Some(old) = state.files.insert(
            location,
            CachedFile {
                bytes,
                meta,
                last_used: tick,
            },
        ) {
            state.size_bytes -= old.bytes.len() as u64;
        }
        state.size_bytes += size;
        while state.size_bytes > self.capacity_bytes {
            let Some(victim) = state
                .files
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(f) = state.files.remove(&victim) {
                state.size_bytes -= f.bytes.len() as u64;
            }
        }
    }

    fn forget(&self, location: &Path) {
        self.state.lock().forget(location);
    }

    /// Bytes held (tests, metrics).
    #[cfg(test)]
    fn size_bytes(&self) -> u64 {
        self.state.lock().size_bytes
    }
}

/// Serves a read from a cached whole file.
fn serve(bytes: Bytes, meta: ObjectMeta, options: &GetOptions) -> Result<GetResult> {
    options.check_preconditions(&meta)?;
    let range: Range<u64> = match &options.range {
        Some(r) => r
            .as_range(meta.size)
            .map_err(|e| object_store::Error::Generic {
                store: "CachedStore",
                source: Box::new(e),
            })?,
        None => 0..meta.size,
    };
    let slice = if options.head {
        Bytes::new()
    } else {
        bytes.slice(range.start as usize..range.end as usize)
    };
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
        meta,
        range,
        attributes: Attributes::default(),
    })
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("capacity_bytes", &self.capacity_bytes)
            .finish()
    }
}

impl fmt::Display for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CachedStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let bytes: Bytes = payload.clone().into();
        let result = self.inner.put_opts(location, payload, opts).await?;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: chrono::Utc::now(),
            size: bytes.len() as u64,
            e_tag: result.e_tag.clone(),
            version: result.version.clone(),
        };
        self.insert(meta, bytes);
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.forget(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.version.is_none()
            && let Some((bytes, meta)) = self.lookup(location)
        {
            return serve(bytes, meta, &options);
        }
        if options.head || options.version.is_some() {
            return self.inner.get_opts(location, options).await;
        }
        // Fetch the whole file once; later ranges come from memory.
        let whole = self.inner.get(location).await?;
        let meta = whole.meta.clone();
        if meta.size > self.capacity_bytes / MAX_CACHED_FILE_SHARE {
            drop(whole);
            return self.inner.get_opts(location, options).await;
        }
        let bytes = whole.bytes().await?;
        self.insert(meta.clone(), bytes.clone());
        serve(bytes, meta, &options)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Entries of deleted files are dropped as their deletion is reported.
        let state = Arc::clone(&self.state);
        self.inner
            .delete_stream(locations)
            .inspect(move |deleted| {
                if let Ok(path) = deleted {
                    state.lock().forget(path);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.forget(to);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn written_files_are_served_from_memory_and_evicted_least_recently_used_first() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cache = CachedStore::new(Arc::clone(&inner), 4_000);
        let a = Path::from("db/t/a.parquet");
        let b = Path::from("db/t/b.parquet");
        cache
            .put(&a, PutPayload::from(vec![1u8; 1_000]))
            .await
            .unwrap();
        // Gone from the inner store, still readable: it came from the cache.
        inner.delete(&a).await.unwrap();
        assert_eq!(cache.get_range(&a, 10..20).await.unwrap(), vec![1u8; 10]);
        let head = cache.head(&a).await.unwrap();
        assert_eq!(head.size, 1_000);

        // b is read once from the store, then cached; a big c evicts the older a.
        inner
            .put(&b, PutPayload::from(vec![2u8; 1_000]))
            .await
            .unwrap();
        assert_eq!(cache.get_range(&b, 0..2).await.unwrap(), vec![2u8; 2]);
        assert_eq!(cache.size_bytes(), 2_000);
        let c = Path::from("db/t/c.parquet");
        cache
            .put(&c, PutPayload::from(vec![3u8; 1_000]))
            .await
            .unwrap();
        cache.get_range(&b, 0..1).await.unwrap();
        let d = Path::from("db/t/d.parquet");
        cache
            .put(&d, PutPayload::from(vec![4u8; 1_000]))
            .await
            .unwrap();
        let e = Path::from("db/t/e.parquet");
        cache
            .put(&e, PutPayload::from(vec![5u8; 1_000]))
            .await
            .unwrap();
        assert!(cache.size_bytes() <= 4_000);
        assert!(
            cache.get_range(&a, 0..1).await.is_err(),
            "a was evicted and deleted"
        );
        assert_eq!(cache.get_range(&b, 0..1).await.unwrap(), vec![2u8]);

        // Deleting through the cache forgets the file.
        cache.delete(&b).await.unwrap();
        assert!(cache.get_range(&b, 0..1).await.is_err());
    }
}

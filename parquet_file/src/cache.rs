//! An in-memory cache of Parquet files in front of the object store.
//!
//! Queries read a file as many small ranges (footer, page index, column chunks); against S3
//! each is a request. The cache keeps whole files, filled when a file is persisted (so fresh
//! data is never read back) and on the first read. A file too large to keep whole (over a
//! quarter of the capacity) is kept as the blocks of it that queries read: its hot byte
//! ranges. The least recently used file or block is evicted past the capacity. Files are
//! immutable once written, so an entry never goes stale; a deleted file is dropped from the
//! cache too.

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

/// Files larger than this share of the capacity are never cached whole (one would evict
/// everything else): they are cached in blocks.
const MAX_CACHED_FILE_SHARE: u64 = 4;

/// Largest block a large file is cached in: a few column chunks' pages, and one request's
/// worth against S3. Small caches use smaller blocks, a quarter of their largest file.
const BLOCK_BYTES: u64 = 1024 * 1024;

/// Smallest block.
const MIN_BLOCK_BYTES: u64 = 4096;

/// Most large files whose metadata is remembered (so their reads go to blocks at once).
const MAX_LARGE_FILES: usize = 65_536;

/// The caching store.
pub(crate) struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    capacity_bytes: u64,
    state: Arc<Mutex<CacheState>>,
}

#[derive(Default)]
struct CacheState {
    files: HashMap<Path, CachedFile>,
    /// Files too large to cache whole, by location: their metadata, for reads by block.
    large: HashMap<Path, ObjectMeta>,
    /// Blocks of large files, by location and block number.
    blocks: HashMap<(Path, u64), CachedBlock>,
    size_bytes: u64,
    tick: u64,
}

impl CacheState {
    fn forget(&mut self, location: &Path) {
        if let Some(f) = self.files.remove(location) {
            self.size_bytes -= f.bytes.len() as u64;
        }
        if self.large.remove(location).is_some() {
            let mut freed = 0;
            self.blocks.retain(|(path, _), b| {
                let keep = path != location;
                if !keep {
                    freed += b.bytes.len() as u64;
                }
                keep
            });
            self.size_bytes -= freed;
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Evicts the least recently used files and blocks until within `capacity_bytes`.
    fn evict_to(&mut self, capacity_bytes: u64) {
        while self.size_bytes > capacity_bytes {
            let file = self
                .files
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(p, f)| (f.last_used, p.clone()));
            let block = self
                .blocks
                .iter()
                .min_by_key(|(_, b)| b.last_used)
                .map(|(k, b)| (b.last_used, k.clone()));
            let freed = match (file, block) {
                (Some((f, path)), Some((b, _))) if f <= b => {
                    self.files.remove(&path).map(|f| f.bytes)
                }
                (Some((_, path)), None) => self.files.remove(&path).map(|f| f.bytes),
                (_, Some((_, key))) => self.blocks.remove(&key).map(|b| b.bytes),
                (None, None) => break,
            };
            self.size_bytes -= freed.map_or(0, |b| b.len() as u64);
        }
    }
}

struct CachedFile {
    bytes: Bytes,
    meta: ObjectMeta,
    last_used: u64,
}

struct CachedBlock {
    bytes: Bytes,
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

    /// Largest file kept whole, and largest read kept in blocks.
    fn max_cached_bytes(&self) -> u64 {
        self.capacity_bytes / MAX_CACHED_FILE_SHARE
    }

    /// Size of the blocks large files are cached in.
    fn block_bytes(&self) -> u64 {
        (self.max_cached_bytes() / 4).clamp(MIN_BLOCK_BYTES, BLOCK_BYTES)
    }

    fn lookup(&self, location: &Path) -> Option<Cached> {
        let mut state = self.state.lock();
        let tick = state.next_tick();
        if let Some(file) = state.files.get_mut(location) {
            file.last_used = tick;
            return Some(Cached::Whole(file.bytes.clone(), file.meta.clone()));
        }
        state.large.get(location).cloned().map(Cached::Large)
    }

    fn insert(&self, meta: ObjectMeta, bytes: Bytes) {
        let size = bytes.len() as u64;
        if size > self.max_cached_bytes() {
            return;
        }
        let mut state = self.state.lock();
        let tick = state.next_tick();
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
        state.evict_to(self.capacity_bytes);
    }

    /// Remembers that the file `meta` describes is read by blocks.
    fn remember_large(&self, meta: ObjectMeta) {
        let mut state = self.state.lock();
        if state.large.len() >= MAX_LARGE_FILES {
            // Forgetting only costs one more whole-file request per file read again.
            let blocks = std::mem::take(&mut state.blocks);
            state.size_bytes -= blocks.values().map(|b| b.bytes.len() as u64).sum::<u64>();
            state.large.clear();
        }
        state.large.insert(meta.location.clone(), meta);
    }

    /// Reads `options`' range of a large file: cached blocks from memory, the others fetched
    /// (adjacent ones in one request) and cached.
    async fn get_by_blocks(&self, meta: ObjectMeta, options: &GetOptions) -> Result<GetResult> {
        options.check_preconditions(&meta)?;
        let range = requested_range(&meta, options)?;
        if options.head {
            return serve(Bytes::new(), meta, options);
        }
        if range.end - range.start > self.max_cached_bytes() {
            return self.inner.get_opts(&meta.location, options.clone()).await;
        }
        let location = &meta.location;
        let block_bytes = self.block_bytes();
        let wanted = range.start / block_bytes..range.end.div_ceil(block_bytes);
        let mut blocks: Vec<Option<Bytes>> = {
            let mut state = self.state.lock();
            let tick = state.next_tick();
            wanted
                .clone()
                .map(|n| {
                    let b = state.blocks.get_mut(&(location.clone(), n))?;
                    b.last_used = tick;
                    Some(b.bytes.clone())
                })
                .collect()
        };
        let missing: Vec<u64> = wanted
            .clone()
            .zip(&blocks)
            .filter(|(_, b)| b.is_none())
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            let ranges: Vec<Range<u64>> = missing
                .iter()
                .map(|n| n * block_bytes..((n + 1) * block_bytes).min(meta.size))
                .collect();
            let fetched = self.inner.get_ranges(location, &ranges).await?;
            let mut state = self.state.lock();
            let tick = state.next_tick();
            // Not kept if the file was deleted meanwhile, or if a block is more than this
            // cache keeps of anything (it would evict everything, itself included).
            let keep = state.large.contains_key(location) && block_bytes <= self.max_cached_bytes();
            for (n, bytes) in missing.into_iter().zip(fetched) {
                blocks[(n - wanted.start) as usize] = Some(bytes.clone());
                if !keep {
                    continue;
                }
                let size = bytes.len() as u64;
                let key = (location.clone(), n);
                if let Some(old) = state.blocks.insert(
                    key,
                    CachedBlock {
                        bytes,
                        last_used: tick,
                    },
                ) {
                    state.size_bytes -= old.bytes.len() as u64;
                }
                state.size_bytes += size;
            }
            state.evict_to(self.capacity_bytes);
        }
        // The requested bytes out of the blocks that hold them.
        let first = wanted.start * block_bytes;
        let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
        for (i, block) in blocks.into_iter().enumerate() {
            let block = block.expect("every block is cached or fetched");
            let at = first + i as u64 * block_bytes;
            let from = range.start.saturating_sub(at) as usize;
            let to = ((range.end - at) as usize).min(block.len());
            out.extend_from_slice(&block[from..to]);
        }
        Ok(one_chunk(out.freeze(), meta, range))
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

/// What the cache knows of a file.
enum Cached {
    Whole(Bytes, ObjectMeta),
    /// Too large to keep whole: read by blocks.
    Large(ObjectMeta),
}

/// The byte range `options` asks of the file `meta` describes (all of it by default).
fn requested_range(meta: &ObjectMeta, options: &GetOptions) -> Result<Range<u64>> {
    match &options.range {
        Some(r) => r
            .as_range(meta.size)
            .map_err(|e| object_store::Error::Generic {
                store: "CachedStore",
                source: Box::new(e),
            }),
        None => Ok(0..meta.size),
    }
}

/// Serves a read from a cached whole file.
fn serve(bytes: Bytes, meta: ObjectMeta, options: &GetOptions) -> Result<GetResult> {
    options.check_preconditions(&meta)?;
    let range = requested_range(&meta, options)?;
    let slice = if options.head {
        Bytes::new()
    } else {
        bytes.slice(range.start as usize..range.end as usize)
    };
    Ok(one_chunk(slice, meta, range))
}

/// The answer to a read of `range` whose bytes are all in `slice`.
fn one_chunk(slice: Bytes, meta: ObjectMeta, range: Range<u64>) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(slice) }).boxed()),
        meta,
        range,
        attributes: Attributes::default(),
    }
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
        if options.version.is_some() {
            return self.inner.get_opts(location, options).await;
        }
        match self.lookup(location) {
            Some(Cached::Whole(bytes, meta)) => return serve(bytes, meta, &options),
            Some(Cached::Large(meta)) => return self.get_by_blocks(meta, &options).await,
            None => {}
        }
        if options.head {
            return self.inner.get_opts(location, options).await;
        }
        // Fetch the whole file once; later ranges come from memory. A file too large to keep
        // whole is known by its first response's metadata (that response is dropped: once per
        // file, not per read), and read by blocks from then on.
        let whole = self.inner.get(location).await?;
        let meta = whole.meta.clone();
        if meta.size > self.max_cached_bytes() {
            drop(whole);
            self.remember_large(meta.clone());
            return self.get_by_blocks(meta, &options).await;
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

    /// A file whose byte at `i` is `i * 7 % 251`: any misplaced byte shows.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_cache_too_small_for_a_block_serves_reads_and_keeps_nothing() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let cache = CachedStore::new(Arc::clone(&inner), 8 * 1024);
        let path = Path::from("db/t/f.parquet");
        let data = numbered(10_000);
        inner
            .put(&path, PutPayload::from(data.clone()))
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(cache.get_range(&path, 10..20).await.unwrap(), data[10..20]);
            assert_eq!(
                cache.get_range(&path, 4090..4100).await.unwrap(),
                data[4090..4100]
            );
        }
        assert_eq!(cache.size_bytes(), 0);
    }

    #[tokio::test]
    async fn a_file_too_large_to_keep_whole_keeps_the_blocks_read_from_it() {
        let block = BLOCK_BYTES as usize;
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // Files over 4 MiB are too large to keep whole, and are cached in blocks of 1 MiB.
        let cache = CachedStore::new(Arc::clone(&inner), 16 * BLOCK_BYTES);
        assert_eq!(cache.block_bytes(), BLOCK_BYTES);
        let big = Path::from("db/t/big.parquet");
        let data = numbered(5 * block + 123);
        inner
            .put(&big, PutPayload::from(data.clone()))
            .await
            .unwrap();

        // A range across the boundary of blocks 1 and 2, and the file's last bytes.
        let across = BLOCK_BYTES + 10..2 * BLOCK_BYTES + 20;
        let tail = data.len() as u64 - 8..data.len() as u64;
        let read = |r: Range<u64>| {
            let cache = &cache;
            let big = &big;
            async move { cache.get_range(big, r).await.unwrap() }
        };
        assert_eq!(read(across.clone()).await, data[block + 10..2 * block + 20]);
        assert_eq!(read(tail.clone()).await, data[data.len() - 8..]);
        assert_eq!(
            cache.size_bytes(),
            2 * BLOCK_BYTES + 123,
            "blocks 1, 2 and the last"
        );

        // Served from memory once the store no longer has the file; other blocks were not kept.
        inner.delete(&big).await.unwrap();
        assert_eq!(
            read(across.start + 5..across.end - 5).await,
            data[block + 15..2 * block + 15]
        );
        assert_eq!(read(tail.clone()).await, data[data.len() - 8..]);
        assert_eq!(cache.head(&big).await.unwrap().size, data.len() as u64);
        assert!(
            cache.get_range(&big, 0..10).await.is_err(),
            "block 0 was never read"
        );

        // Least recently used first: whole files written later push out blocks 1 and 2 (read
        // before the last block), and deleting the file forgets the blocks left.
        for (name, size) in [("a", 4), ("b", 4), ("c", 4), ("d", 3)] {
            let path = Path::from(format!("db/t/{name}.parquet"));
            cache
                .put(&path, PutPayload::from(vec![1u8; size * block]))
                .await
                .unwrap();
        }
        assert_eq!(cache.size_bytes(), 15 * BLOCK_BYTES + 123);
        assert_eq!(read(tail).await, data[data.len() - 8..]);
        assert!(cache.get_range(&big, across).await.is_err());
        cache.delete(&big).await.ok();
        assert_eq!(
            cache.size_bytes(),
            15 * BLOCK_BYTES,
            "four whole files remain"
        );
    }
}

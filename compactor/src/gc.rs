//! Garbage collection: objects nothing refers to any more are deleted once they are older than
//! the grace period, so a query that planned with them before they were dropped can still
//! read them.
//!
//! Two kinds: objects the catalog lists as replaced or dropped (compaction inputs; later,
//! retention and deletes), by the time they were dropped; and objects the catalog never
//! recorded (an upload whose process died before the catalog write, files of deleted
//! databases), by the time they were written. Only `<db>/<table>/<date>/<file>.parquet`
//! objects are considered, so a bucket shared with other data is safe.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use catalog::Catalog;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::CompactionError;

/// One pass; returns the number of objects deleted.
pub(crate) async fn collect(
    catalog: &dyn Catalog,
    store: &Arc<dyn ObjectStore>,
    grace: Duration,
) -> Result<usize, CompactionError> {
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(UNIX_EPOCH);
    let cutoff_ms = cutoff
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    // Dropped objects past the grace period.
    let expired = catalog
        .deleted_objects(cutoff_ms)
        .await
        .map_err(CompactionError::Catalog)?;
    let mut deleted = 0;
    for path in &expired {
        delete(store, path).await?;
        deleted += 1;
    }
    if !expired.is_empty() {
        catalog
            .forget_deleted_objects(expired)
            .await
            .map_err(CompactionError::Catalog)?;
    }

    // Objects never recorded. Read what the catalog knows after listing, so an object
    // recorded meanwhile is known (and one uploaded meanwhile is younger than the cutoff).
    let listed: Vec<object_store::ObjectMeta> = store
        .list(None)
        .try_collect()
        .await
        .map_err(CompactionError::List)?;
    let snapshot = catalog.snapshot();
    let mut known: HashSet<String> = snapshot
        .parquet_files
        .values()
        .flat_map(|files| files.iter().map(|f| f.file.path.clone()))
        .collect();
    known.extend(
        catalog
            .deleted_objects(i64::MAX)
            .await
            .map_err(CompactionError::Catalog)?,
    );
    for object in listed {
        let path = object.location.to_string();
        let ours = object.location.parts().count() == 4 && path.ends_with(".parquet");
        if !ours || known.contains(&path) || SystemTime::from(object.last_modified) > cutoff {
            continue;
        }
        delete(store, &path).await?;
        deleted += 1;
    }
    Ok(deleted)
}

async fn delete(store: &Arc<dyn ObjectStore>, path: &str) -> Result<(), CompactionError> {
    let location = Path::parse(path).map_err(|e| CompactionError::Delete {
        path: path.to_owned(),
        source: e.into(),
    })?;
    match store.delete(&location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(CompactionError::Delete {
            path: path.to_owned(),
            source,
        }),
    }
}

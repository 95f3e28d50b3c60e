//! The thread that encodes persist jobs' Parquet files at a lower CPU priority than writes
//! and queries.
//!
//! On a machine whose cores are busy parsing writes, a persist job competing as an equal
//! takes its share of every core from ingest. At a lower priority it runs on the time writes
//! leave idle. It must not be starved once the buffer fills up, so once the buffer is a
//! quarter full a job's encoding runs at the writes' priority instead (`persist.rs`).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

/// Nice value of the persist thread (0 is the default; 19 the lowest priority).
const NICE: i32 = 10;

/// A thread that runs closures one at a time at a lower CPU priority.
#[derive(Debug)]
pub(crate) struct BackgroundThread {
    jobs: mpsc::Sender<Job>,
}

/// The job panicked, or the thread is gone.
#[derive(Debug, thiserror::Error)]
#[error("the background persist thread failed the job (see the log for a panic)")]
pub struct BackgroundJobFailed;

impl BackgroundThread {
    /// Starts the thread; it ends when this is dropped.
    pub(crate) fn start(name: &str) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                lower_priority();
                while let Ok(job) = queue.recv() {
                    // A panicking job drops its result sender, which fails only that job.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BackgroundJobFailed> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .map_err(|_| BackgroundJobFailed)?;
        result.await.map_err(|_| BackgroundJobFailed)
    }
}

/// Lowers the calling thread's CPU priority (Linux keeps a nice value per thread; threads it
/// starts inherit it). Elsewhere, or if refused, the thread keeps the default priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority takes plain integers; `who = 0` is the calling thread.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the persist thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_panic_fails_only_its_job() {
        let thread = BackgroundThread::start("test-background").unwrap();
        assert_eq!(thread.run(|| 1 + 1).await.unwrap(), 2);
        let panicked = thread.run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.is_err());
        assert_eq!(
            thread.run(|| "still running").await.unwrap(),
            "still running"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_thread_runs_at_a_lower_priority() {
        let thread = BackgroundThread::start("test-background").unwrap();
        // SAFETY: getpriority takes plain integers; `who = 0` is the calling thread. errno
        // is not needed: a nice value of -1 would fail the comparison anyway.
        let nice = thread
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
            .await
            .unwrap();
        assert!(nice >= NICE, "nice {nice}");
    }
}

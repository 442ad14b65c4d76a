//! Group commit: one thread owns the write side of LMDB. It takes every request queued
//! since its last commit (up to `batch_max`), applies them all in one transaction, pays
//! one fsync, and only then answers each caller. Concurrent writers share the cost of
//! the flush, which is what makes durable writes fast.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{ApplyOutcome, Hint, StoreError, Tables};
use crate::record::Entry;

/// A change for the writer to commit.
pub(crate) enum WriteOp {
    Apply(Vec<Entry>),
    PutHints(Vec<Hint>),
    DeleteHints(Vec<Vec<u8>>),
    /// Deletes these tombstones if they are still the keys' records.
    Purge(Vec<(Vec<u8>, crate::record::Version)>),
    /// Deletes a partition's data and tree (after its new owners have it).
    DropPartition(crate::placement::PartitionId),
    /// Replaces records still at their old version and caps the HLC high-water mark:
    /// versions from the future brought back to the present.
    Rewrite {
        rewrites: Vec<(Entry, crate::record::Version)>,
        cap: crate::hlc::Timestamp,
    },
}

/// What a committed [`WriteOp`] did.
pub(crate) enum WriteResult {
    Applied(Vec<ApplyOutcome>),
    HintsStored(usize),
    HintsDeleted,
    Removed(u64),
    Rewritten(u64),
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn spawn(tables: Tables, batch_max: usize) -> Writer {
        let (queue, jobs) = mpsc::channel(super::WRITE_QUEUE_MAX);
        let thread = std::thread::Builder::new()
            .name("vergent-writer".into())
            .spawn(move || run(tables, jobs, batch_max))
            .expect("the operating system refused to start the storage writer thread");
        Writer {
            queue: Some(queue),
            thread: Some(thread),
        }
    }

    pub(crate) async fn submit(&self, op: WriteOp) -> Result<WriteResult, StoreError> {
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Closes the queue, lets the thread commit what is already queued, and joins it.
    pub(crate) fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(tables: Tables, mut queue: mpsc::Receiver<Job>, batch_max: usize) {
    let mut jobs = Vec::with_capacity(batch_max.min(1024));
    while let Some(first) = queue.blocking_recv() {
        jobs.push(first);
        while jobs.len() < batch_max {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit(&tables, &mut jobs);
    }
}

fn commit(tables: &Tables, jobs: &mut Vec<Job>) {
    let ops: Vec<&WriteOp> = jobs.iter().map(|job| &job.op).collect();
    match tables.commit(&ops) {
        Ok(results) => {
            for (job, result) in jobs.drain(..).zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(err) if jobs.len() == 1 => {
            let job = jobs.pop().expect("one job");
            let _ = job.reply.send(Err(err));
        }
        Err(_) => {
            // The whole transaction was rolled back. Retry each request alone so that
            // one request's failure (a damaged record, say) is reported to it only.
            for job in jobs.drain(..) {
                let result = tables
                    .commit(&[&job.op])
                    .map(|mut results| results.pop().expect("one result"));
                let _ = job.reply.send(result);
            }
        }
    }
}

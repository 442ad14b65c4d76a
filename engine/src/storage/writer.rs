//! Group commit: one thread owns the write side of LMDB. It takes every request queued
//! since its last commit (up to `batch_max`), applies them all in one transaction, pays
//! one fsync, and only then answers each caller. Concurrent writers share the cost of
//! the flush, which is what makes durable writes fast.
//!
//! A request is a closure that makes one change through a [`Batch`]'s typed methods,
//! and its caller receives exactly what the closure returns: the change and its reply
//! are one generic [`Request`], so the writer never needs to know the kinds of change.
//! An enum of operations answered by an enum of results (or of typed reply senders)
//! would have the writer pair the two by matching, with arms that cannot happen; here
//! an answer of the wrong type cannot be written. The `*_now` paths call the same
//! batch methods in [`Tables::transaction`] directly.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::commit::Batch;
use super::{StoreError, Tables};

/// A request as the writer thread holds it, whatever its result's type.
trait Job: Send {
    /// Makes the request's change in `batch`, keeping its result until the batch
    /// commits.
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError>;

    /// Answers the caller: the kept result if the batch it last ran in committed, or
    /// why the request failed.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

/// A change to make, and the caller waiting for its result.
struct Request<F, T> {
    /// Run once per transaction the request is tried in: with its batch, and alone
    /// again if that batch fails.
    change: F,
    result: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Request<F, T>
where
    F: Fn(&mut Batch<'_>) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), StoreError> {
        self.result = Some((self.change)(batch)?);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Request { result, reply, .. } = *self;
        let answer = committed.map(|()| {
            result.expect("a request is answered with a result only after it ran in the batch")
        });
        let _ = reply.send(answer);
    }
}

pub(crate) struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Job>>>,
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

    /// Has the writer make `change` in its next batch; what `change` returned, once the
    /// batch is on disk. The request is queued at the call, not when the future is
    /// first polled, so requests reach the writer in the order they were made (unless
    /// its queue is full: the future then waits for room).
    pub(crate) fn submit<F, T>(
        &self,
        change: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        F: Fn(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request: Box<dyn Job> = Box::new(Request {
            change,
            result: None,
            reply,
        });
        let queued = match &self.queue {
            None => Err(StoreError::Closed),
            Some(queue) => match queue.try_send(request) {
                Ok(()) => Ok(None),
                Err(mpsc::error::TrySendError::Full(request)) => Ok(Some((queue.clone(), request))),
                Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
            },
        };
        async move {
            if let Some((queue, request)) = queued? {
                queue.send(request).await.map_err(|_| StoreError::Closed)?;
            }
            answer.await.map_err(|_| StoreError::Closed)?
        }
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

fn run(tables: Tables, mut queue: mpsc::Receiver<Box<dyn Job>>, batch_max: usize) {
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

fn commit(tables: &Tables, jobs: &mut Vec<Box<dyn Job>>) {
    let committed = tables.transaction(|batch| jobs.iter_mut().try_for_each(|job| job.run(batch)));
    match committed {
        Ok(()) => {
            for job in jobs.drain(..) {
                job.answer(Ok(()));
            }
        }
        Err(err) if jobs.len() == 1 => {
            let job = jobs.pop().expect("one job");
            job.answer(Err(err));
        }
        Err(_) => {
            // The whole transaction was rolled back. Retry each request alone so that
            // one request's failure (a damaged record, say) is reported to it only.
            for mut job in jobs.drain(..) {
                let committed = tables.transaction(|batch| job.run(batch));
                job.answer(committed);
            }
        }
    }
}

//! Group commit: many small writes share one transaction, and each writer still learns the
//! outcome of its own.
//!
//! Writers queue their item and wait. One task takes everything queued (up to a batch size)
//! and hands it to a [`BatchWrite`], which writes it all in one transaction or nothing. Under
//! light load a batch is one item and commits at once. Under load, batches grow while the
//! previous one commits, and, when waiting [`LINGER`] is expected to bring more items than the
//! batch already holds, the writer waits that long before it commits (PostgreSQL's
//! `commit_delay`, switched on by the measured arrival rate instead of a count of siblings):
//! without it a fast writer commits five-item transactions thousands of times a second, and the
//! fixed cost of each (thread hand-offs, the commit itself) becomes most of the work. A batch
//! that is already larger than a linger would add is committed at once: its size says the writer
//! is the bottleneck, and waiting would only leave it idle. An answer is sent only after its batch
//! committed, so an acknowledged write survives a crash right after.
//!
//! When a batch of several fails, each item is retried in a transaction of its own, so that one
//! bad item (a unique conflict, say) fails alone and the others still land.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::{Result, StoreError};

/// Writes a batch of items in one transaction: all of them, or none.
#[async_trait]
pub trait BatchWrite<T>: Send + Sync + 'static {
    async fn write_batch(&self, items: &[T]) -> Result<()>;
}

type Ack = oneshot::Sender<Result<()>>;

/// The handle writers queue items through; cheap to clone.
pub struct GroupCommit<T> {
    tx: mpsc::Sender<(T, Ack)>,
}

impl<T> Clone for GroupCommit<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> std::fmt::Debug for GroupCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> GroupCommit<T> {
    /// Starts the writer on a thread of its own, which ends when every handle is gone.
    ///
    /// Its own thread, not a task: a batch is a few round trips to the database driver, and a
    /// task woken from the driver's thread waits in the runtime's shared queue behind every busy
    /// request handler, once per round trip. Measured on 2 cores at 64 concurrent creates, that
    /// wait was most of a create's latency.
    pub fn spawn(writer: impl BatchWrite<T>, max_batch: usize) -> std::io::Result<Self> {
        Self::spawn_observed(writer, max_batch, |_| {})
    }

    /// [`spawn`](Self::spawn), calling `committed` with the size of every batch that committed
    /// (for metrics: how many writes a transaction carries).
    pub fn spawn_observed(
        writer: impl BatchWrite<T>,
        max_batch: usize,
        committed: impl Fn(usize) + Send + 'static,
    ) -> std::io::Result<Self> {
        let max = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max * 16);
        let writer: Arc<dyn BatchWrite<T>> = Arc::new(writer);
        let answers = tokio::runtime::Handle::try_current().ok();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || runtime.block_on(run(writer, rx, max, committed, answers)))?;
        Ok(Self { tx })
    }

    /// Queues `item` and waits until its transaction committed, or failed.
    pub async fn submit(&self, item: T) -> Result<()> {
        let stopped = || StoreError::Unavailable("the storage writer has stopped".into());
        let (ack, done) = oneshot::channel();
        self.tx.send((item, ack)).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// The longest a batch waits for more items once it has one, when items arrive quickly.
pub const LINGER: Duration = Duration::from_millis(1);

/// The arrival rate of items, smoothed over batches, and whether a batch should linger.
#[derive(Debug)]
struct Pace {
    /// Items per second.
    rate: f64,
    /// When the previous batch was taken.
    last: Option<Instant>,
}

impl Pace {
    fn new() -> Self {
        Self {
            rate: 0.0,
            last: None,
        }
    }

    /// Records a batch of `n` items taken at `now`. The rate is averaged over about the last
    /// 10 ms: a long gap replaces it, a burst of quick batches is smoothed.
    fn taken(&mut self, n: usize, now: Instant) {
        if let Some(last) = self.last {
            let seconds = now.saturating_duration_since(last).as_secs_f64().max(1e-6);
            let weight = 1.0 - (-seconds / 0.010).exp();
            self.rate += weight * (n as f64 / seconds - self.rate);
        }
        self.last = Some(now);
    }

    /// Whether waiting [`LINGER`] is expected to bring at least as many items as the batch
    /// already holds (`taken`), and at least one.
    fn linger(&self, taken: usize) -> bool {
        self.rate * LINGER.as_secs_f64() >= taken.max(1) as f64
    }
}

/// Tells the writers of a committed batch. From the runtime the writers wait on, when there is
/// one: woken from this thread, every waiting task would be a wake-up from outside the runtime
/// (its shared queue, and often a parked worker's futex), a hundred times per batch; one task
/// spawned there wakes them all from inside, through a worker's own queue.
fn answer(answers: &Option<tokio::runtime::Handle>, acks: impl Iterator<Item = Ack>) {
    match answers {
        Some(runtime) => {
            let acks: Vec<Ack> = acks.collect();
            runtime.spawn(async move {
                for ack in acks {
                    let _ = ack.send(Ok(()));
                }
            });
        }
        None => acks.for_each(|ack| {
            let _ = ack.send(Ok(()));
        }),
    }
}

/// Moves what is queued into the batch, up to `max` items, without waiting.
fn take_queued<T>(
    rx: &mut mpsc::Receiver<(T, Ack)>,
    items: &mut Vec<T>,
    acks: &mut Vec<Ack>,
    max: usize,
) {
    while items.len() < max {
        let Ok((item, ack)) = rx.try_recv() else {
            break;
        };
        items.push(item);
        acks.push(ack);
    }
}

async fn run<T: Send + Sync + 'static>(
    writer: Arc<dyn BatchWrite<T>>,
    mut rx: mpsc::Receiver<(T, Ack)>,
    max: usize,
    committed: impl Fn(usize),
    answers: Option<tokio::runtime::Handle>,
) {
    let mut items: Vec<T> = Vec::with_capacity(max);
    let mut acks: Vec<Ack> = Vec::with_capacity(max);
    let mut pace = Pace::new();
    while let Some((item, ack)) = rx.recv().await {
        let first = Instant::now();
        items.push(item);
        acks.push(ack);
        take_queued(&mut rx, &mut items, &mut acks, max);
        if items.len() < max && pace.linger(items.len()) {
            // Sleep rather than receive: a receiver waiting on the channel is woken (a thread
            // switch) by every item sent; a sleeping one finds them all queued when it wakes.
            tokio::time::sleep_until(first + LINGER).await;
            take_queued(&mut rx, &mut items, &mut acks, max);
        }
        pace.taken(items.len(), first);
        match writer.write_batch(&items).await {
            Ok(()) => {
                committed(items.len());
                answer(&answers, acks.drain(..));
            }
            Err(e) if items.len() == 1 => {
                if let Some(ack) = acks.pop() {
                    let _ = ack.send(Err(e));
                }
            }
            Err(_) => {
                for (item, ack) in items.iter().zip(acks.drain(..)) {
                    let result = writer.write_batch(std::slice::from_ref(item)).await;
                    if result.is_ok() {
                        committed(1);
                    }
                    let _ = ack.send(result);
                }
            }
        }
        items.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records each transaction; fails any that holds a negative number.
    #[derive(Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<Vec<i32>>>>);

    #[async_trait]
    impl BatchWrite<i32> for Recorder {
        async fn write_batch(&self, items: &[i32]) -> Result<()> {
            if items.iter().any(|i| *i < 0) {
                return Err(StoreError::Conflict(format!("{items:?}")));
            }
            self.0.lock().unwrap().push(items.to_vec());
            Ok(())
        }
    }

    #[tokio::test]
    async fn queued_items_share_transactions_and_a_bad_one_fails_alone() {
        let recorder = Recorder::default();
        let observed = Arc::new(Mutex::new(Vec::new()));
        let sizes = observed.clone();
        let commit = GroupCommit::spawn_observed(recorder.clone(), 64, move |n| {
            sizes.lock().unwrap().push(n)
        })
        .unwrap();
        // Queue many before the writer task first runs: they land in few transactions.
        let mut waits = Vec::new();
        for i in 0..200 {
            let c = commit.clone();
            let item = if i == 7 { -7 } else { i };
            waits.push(tokio::spawn(async move { c.submit(item).await }));
        }
        let mut failed = Vec::new();
        for (i, w) in waits.into_iter().enumerate() {
            if w.await.unwrap().is_err() {
                failed.push(i);
            }
        }
        assert_eq!(failed, vec![7]);
        let batches = recorder.0.lock().unwrap().clone();
        let mut written: Vec<i32> = batches.iter().flatten().copied().collect();
        written.sort_unstable();
        assert_eq!(written, (0..200).filter(|i| *i != 7).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 64));
        // Every committed transaction was observed with its size; the failed batch was not.
        let mut committed = batches.iter().map(Vec::len).collect::<Vec<_>>();
        let mut seen = observed.lock().unwrap().clone();
        committed.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, committed);
        assert!(
            batches.iter().any(|b| b.len() > 1),
            "nothing was grouped: {batches:?}"
        );
    }

    #[test]
    fn batches_linger_only_while_items_arrive_quickly() {
        let start = Instant::now();
        let mut pace = Pace::new();
        assert!(!pace.linger(1), "nothing measured yet");
        // One item every 100 ms: committing at once is right.
        for i in 0..20 {
            pace.taken(1, start + Duration::from_millis(100 * i));
        }
        assert!(!pace.linger(1), "{pace:?}");
        // Then 20 items every millisecond (20,000/s): waiting brings more.
        let busy = start + Duration::from_secs(2);
        for i in 0..20 {
            pace.taken(20, busy + Duration::from_millis(i));
        }
        assert!(pace.linger(1), "{pace:?}");
        assert!(pace.linger(10), "{pace:?}");
        // A batch of 64 already holds more than a millisecond brings: the writer is the
        // bottleneck, and waiting would leave it idle.
        assert!(!pace.linger(64), "{pace:?}");
        // Quiet again: a few slow batches end the lingering.
        let quiet = busy + Duration::from_secs(1);
        for i in 0..6 {
            pace.taken(1, quiet + Duration::from_millis(200 * i));
        }
        assert!(!pace.linger(1), "{pace:?}");
    }

    #[tokio::test]
    async fn a_lone_failure_is_answered_as_is() {
        let commit = GroupCommit::spawn(Recorder::default(), 8).unwrap();
        let e = commit.submit(-1).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(commit.submit(1).await.is_ok());
    }
}

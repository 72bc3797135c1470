//! Bounded concurrency that serves reconciles in the order they were asked for.
//!
//! kube-runtime's `Controller` can bound concurrency itself (`Config::concurrency`), but while it
//! is at the bound it parks what becomes due in a hash set and takes from it in hash order: under
//! a backlog some objects wait far longer than others (a p99 CR→Pod latency several times the
//! p50 in the benchmark, docs/performance.md). Instead, run the `Controller` unbounded (it still
//! never reconciles one object twice at once) and take a [`Workers`] slot at the start of each
//! reconcile: tokio's semaphore is fair, so slots go out first come, first served.
//!
//! ```ignore
//! async fn reconcile(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
//!     let Some(_slot) = ctx.workers.slot().await else {
//!         return Ok(Action::await_change()); // shutting down
//!     };
//!     // …
//! }
//! ```
//!
//! On shutdown, [`Workers::close`] sends away everyone still waiting (the `Controller` waits for
//! every started reconcile, and with a backlog most of them are waiting), while those at work
//! finish.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `n` reconciles at work; the others wait in arrival order.
#[derive(Clone, Debug)]
pub struct Workers {
    slots: Arc<Semaphore>,
    size: usize,
}

/// Held while a reconcile works; dropping it lets the next one in.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Workers {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Self {
        let size = n.max(1);
        Workers {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a free slot, behind everyone who asked earlier; `None` once closed.
    pub async fn slot(&self) -> Option<Slot> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(Slot { _permit: permit })
    }

    /// Shutting down: whoever waits, and whoever asks from now on, gets `None`.
    pub fn close(&self) {
        self.slots.close();
    }

    /// Reconciles waiting for a slot or working now is `size - available`; this is the number
    /// of free slots.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn at_most_n_work_and_the_rest_go_in_arrival_order() {
        let workers = Workers::new(2);
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = workers.slot().await;
        let second = workers.slot().await;
        assert!(first.is_some() && second.is_some());
        assert_eq!(workers.available(), 0);
        let mut waiting = Vec::new();
        for i in 0..20 {
            let (workers, order) = (workers.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _slot = workers.slot().await;
                order.lock().unwrap_or_else(|p| p.into_inner()).push(i);
            }));
            // On this single-threaded runtime, yielding runs the new task until it waits for
            // its slot: each one queues up before the next asks.
            tokio::task::yield_now().await;
        }
        drop((first, second));
        for w in waiting {
            w.await.ok();
        }
        let order = order.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(order, (0..20).collect::<Vec<_>>());
        assert_eq!(workers.available(), 2);
    }

    #[tokio::test]
    async fn closing_sends_the_waiting_away_and_lets_the_working_finish() {
        let workers = Workers::new(1);
        let working = workers.slot().await;
        assert!(working.is_some());
        let waiting = tokio::spawn({
            let workers = workers.clone();
            async move { workers.slot().await.is_some() }
        });
        tokio::task::yield_now().await;
        workers.close();
        assert!(
            !waiting.await.unwrap_or(true),
            "a waiting reconcile got a slot"
        );
        assert!(workers.slot().await.is_none());
        drop(working);
    }
}

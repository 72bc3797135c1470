//! The work queue every controller here runs on, with client-go's semantics:
//!
//! - a key is waiting at most once (the *dirty* set): adding a waiting key again does nothing;
//! - a key is never handed out twice at once (the *processing* set): added while a worker has
//!   it, it waits in the dirty set and goes back in line when that worker is [`done`]
//!   (so it runs once more, after);
//! - keys are handed out first come, first served (a FIFO deque), with one exception: keys
//!   added with [`add_low`] (a cache's listing: every object, changed or not) wait in a second
//!   line that is served only when the first is empty, so that after a start or a failover a
//!   real change doesn't wait behind the resync of every object (controller-runtime's priority
//!   queue does the same). A low key added normally moves to the first line;
//! - [`add_after`] delays an add (a requeue, a retry after backoff); of several delays for one
//!   key the earliest wins;
//! - every operation is O(1) or O(log n) in the delayed keys: nothing scans the backlog.
//!
//! [`shut_down`] stops handing out keys; workers finish what they have.
//!
//! [`done`]: WorkQueue::done
//! [`add_after`]: WorkQueue::add_after
//! [`add_low`]: WorkQueue::add_low
//! [`shut_down`]: WorkQueue::shut_down

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::ControllerMetrics;

/// A shared work queue of keys `T` (cheap to clone).
pub struct WorkQueue<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes a worker waiting in [`WorkQueue::get`].
    ready: Notify,
    metrics: Arc<ControllerMetrics>,
}

struct State<T> {
    /// Keys in line, oldest first. Each is also in `dirty`.
    line: VecDeque<T>,
    /// Low-priority keys in line, served when `line` is empty. An entry whose key is no
    /// longer low in `dirty` (moved to `line`, or handed out) is stale and skipped.
    low_line: VecDeque<T>,
    /// Keys waiting to be processed, with the time of their first add (the queue duration).
    dirty: HashMap<T, Dirty>,
    /// Keys a worker has, since when.
    processing: HashMap<T, Instant>,
    /// Delayed adds: the earliest due time per key …
    due: HashMap<T, Instant>,
    /// … and a heap of (due, sequence) to find the next one, the sequence naming the key in
    /// `delayed_keys` (entries whose due time no longer matches `due` are stale and skipped).
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_keys: HashMap<u64, T>,
    sequence: u64,
    shutting_down: bool,
}

/// A waiting key: since when, and in which line.
#[derive(Clone, Copy)]
struct Dirty {
    since: Instant,
    low: bool,
}

impl<T> State<T>
where
    T: Clone + Eq + Hash,
{
    /// client-go's `Add`: `true` when the key was not waiting already.
    fn add(&mut self, key: T, now: Instant, low: bool) -> bool {
        if self.shutting_down {
            return false;
        }
        let processing = self.processing.contains_key(&key);
        match self.dirty.entry(key.clone()) {
            Entry::Occupied(mut o) => {
                // A low key added normally moves up (its low entry goes stale).
                if o.get().low && !low {
                    o.get_mut().low = false;
                    if !processing {
                        self.line.push_back(key);
                    }
                }
                false
            }
            Entry::Vacant(v) => {
                v.insert(Dirty { since: now, low });
                // A key being processed goes back in line when it is done.
                if !processing {
                    self.push(key, low);
                }
                true
            }
        }
    }

    fn push(&mut self, key: T, low: bool) {
        match low {
            true => self.low_line.push_back(key),
            false => self.line.push_back(key),
        }
    }

    /// The next key to hand out: the first line's, else the low line's first live entry.
    fn pop(&mut self) -> Option<T> {
        if let Some(key) = self.line.pop_front() {
            return Some(key);
        }
        while let Some(key) = self.low_line.pop_front() {
            let live =
                self.dirty.get(&key).is_some_and(|d| d.low) && !self.processing.contains_key(&key);
            if live {
                return Some(key);
            }
        }
        None
    }

    fn has_waiting(&self) -> bool {
        !self.line.is_empty() || !self.low_line.is_empty()
    }

    /// Moves the delayed keys that are due into the line; returns how many were added.
    fn promote_due(&mut self, now: Instant) -> usize {
        let mut added = 0;
        while let Some(Reverse((at, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, sequence))) = self.delayed.pop() else {
                break;
            };
            let Some(key) = self.delayed_keys.remove(&sequence) else {
                continue;
            };
            if self.due.get(&key) == Some(&at) {
                self.due.remove(&key);
                if self.add(key, now, false) {
                    added += 1;
                }
            }
        }
        added
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }
}

impl<T> WorkQueue<T>
where
    T: Clone + Eq + Hash + Send + 'static,
{
    /// A queue reporting to `metrics` (client-go's workqueue metric names).
    pub fn new(metrics: Arc<ControllerMetrics>) -> Self {
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    line: VecDeque::new(),
                    low_line: VecDeque::new(),
                    dirty: HashMap::new(),
                    processing: HashMap::new(),
                    due: HashMap::new(),
                    delayed: BinaryHeap::new(),
                    delayed_keys: HashMap::new(),
                    sequence: 0,
                    shutting_down: false,
                }),
                ready: Notify::new(),
                metrics,
            }),
        }
    }

    /// Adds `key` unless it is waiting already.
    pub fn add(&self, key: T) {
        self.add_with(key, false)
    }

    /// Adds `key` with low priority (a cache's listing): it waits until no normal key does.
    pub fn add_low(&self, key: T) {
        self.add_with(key, true)
    }

    fn add_with(&self, key: T, low: bool) {
        let added = {
            let mut state = self.shared.state.lock();
            let added = state.add(key, Instant::now(), low);
            if added {
                self.shared.metrics.queue_added(state.dirty.len());
            }
            added
        };
        if added {
            self.shared.ready.notify_one();
        }
    }

    /// Adds `key` after `delay` (at once when zero). Of several delayed adds of one key, the
    /// earliest stands.
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let earlier = {
            let mut state = self.shared.state.lock();
            if state.shutting_down {
                return;
            }
            if state.due.get(&key).is_some_and(|due| *due <= at) {
                return;
            }
            state.due.insert(key.clone(), at);
            state.sequence += 1;
            let sequence = state.sequence;
            let earlier = state.next_due().is_none_or(|next| at < next);
            state.delayed.push(Reverse((at, sequence)));
            state.delayed_keys.insert(sequence, key);
            earlier
        };
        // A worker sleeping until a later due time must look again.
        if earlier {
            self.shared.ready.notify_waiters();
        }
    }

    /// After a successful reconcile of `key`: it comes back on its own after `delay`, or with
    /// `None` only when something adds it. Replaces any delayed add of the key: the reconcile
    /// that just ran saw the latest state, so an earlier reconcile's requeue (or a retry of an
    /// error since fixed) is stale.
    pub fn reschedule(&self, key: T, delay: Option<Duration>) {
        // A heap entry without its `due` is skipped when it comes up.
        self.shared.state.lock().due.remove(&key);
        if let Some(delay) = delay {
            self.add_after(key, delay);
        }
    }

    /// Adds `key` after an error, after `delay` (its backoff), counting a retry.
    pub fn retry_after(&self, key: T, delay: Duration) {
        self.shared.metrics.queue_retried();
        self.add_after(key, delay);
    }

    /// Waits for the next key, oldest first; `None` once the queue is shut down. The caller
    /// must call [`done`](Self::done) with the key when it is finished with it.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so that an add between the look and the wait is not
            // missed.
            notified.as_mut().enable();
            let next_due = {
                let now = Instant::now();
                let mut state = self.shared.state.lock();
                if state.shutting_down {
                    return None;
                }
                let promoted = state.promote_due(now);
                if promoted > 0 {
                    self.shared
                        .metrics
                        .queue_added_many(promoted, state.dirty.len());
                }
                if let Some(key) = state.pop() {
                    let added = state.dirty.remove(&key).map_or(now, |d| d.since);
                    state.processing.insert(key.clone(), now);
                    self.shared
                        .metrics
                        .queue_got(now.saturating_duration_since(added), state.dirty.len());
                    // Others may be waiting for what is left.
                    if state.has_waiting() {
                        self.shared.ready.notify_one();
                    }
                    return Some(key);
                }
                state.next_due()
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The worker is finished with `key`: a key added meanwhile goes back in line.
    pub fn done(&self, key: &T) {
        let requeued = {
            let mut state = self.shared.state.lock();
            state.processing.remove(key);
            match state.dirty.get(key).copied() {
                Some(d) if !state.shutting_down => {
                    state.push(key.clone(), d.low);
                    true
                }
                _ => false,
            }
        };
        if requeued {
            self.shared.ready.notify_one();
        }
    }

    /// Stops handing out keys: waiting and future [`get`](Self::get)s return `None`. Keys being
    /// processed may still be marked [`done`](Self::done).
    pub fn shut_down(&self) {
        self.shared.state.lock().shutting_down = true;
        self.shared.ready.notify_waiters();
    }

    /// Keys waiting (not counting delayed ones).
    pub fn len(&self) -> usize {
        self.shared.state.lock().dirty.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys a worker has now.
    pub fn processing(&self) -> usize {
        self.shared.state.lock().processing.len()
    }

    /// Keys with a delayed add pending.
    pub fn delayed(&self) -> usize {
        self.shared.state.lock().due.len()
    }

    /// How long the oldest key being processed has been (0 when none): the longest running
    /// processor.
    pub fn longest_running(&self) -> Duration {
        let now = Instant::now();
        self.shared
            .state
            .lock()
            .processing
            .values()
            .map(|since| now.saturating_duration_since(*since))
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<String> {
        WorkQueue::new(Arc::default())
    }

    async fn next(q: &WorkQueue<String>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), q.get())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn keys_come_out_once_in_arrival_order() {
        let q = queue();
        for key in ["a", "b", "a", "c", "b"] {
            q.add(key.to_string());
        }
        assert_eq!(q.len(), 3, "a waiting key is not added twice");
        let mut order = Vec::new();
        for _ in 0..3 {
            let key = next(&q).await.expect("a key");
            q.done(&key);
            order.push(key);
        }
        assert_eq!(order, ["a", "b", "c"]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn listed_keys_wait_behind_changes() {
        let q = queue();
        for key in ["l1", "l2", "l3"] {
            q.add_low(key.to_string());
        }
        q.add("c1".to_string());
        // A listed key that changes moves up, once.
        q.add("l2".to_string());
        q.add_low("c1".to_string());
        assert_eq!(q.len(), 4);
        let mut order = Vec::new();
        for _ in 0..4 {
            let key = next(&q).await.expect("a key");
            q.done(&key);
            order.push(key);
        }
        assert_eq!(order, ["c1", "l2", "l1", "l3"]);
        assert!(q.is_empty());
        q.add("x".to_string());
        assert_eq!(
            next(&q).await.as_deref(),
            Some("x"),
            "no stale entry is handed out"
        );
    }

    #[tokio::test]
    async fn a_listed_key_being_processed_is_not_handed_out_again() {
        let q = queue();
        q.add_low("a".to_string());
        let a = next(&q).await.expect("a");
        // Listed again, then changed, while a worker has it: it waits for `done`.
        q.add_low("a".to_string());
        q.add("a".to_string());
        q.add_low("b".to_string());
        assert_eq!(next(&q).await.as_deref(), Some("b"));
        q.done(&"b".to_string());
        let early = tokio::time::timeout(Duration::from_millis(50), q.get()).await;
        assert!(early.is_err(), "a is still being processed");
        q.done(&a);
        assert_eq!(next(&q).await.as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn a_key_added_while_processed_runs_once_more_after() {
        let q = queue();
        q.add("a".to_string());
        q.add("b".to_string());
        let a = next(&q).await.expect("a");
        assert_eq!(a, "a");
        // Re-added (twice) while a worker has it: not handed to another worker…
        q.add("a".to_string());
        q.add("a".to_string());
        assert_eq!(next(&q).await.as_deref(), Some("b"));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), q.get())
                .await
                .is_err(),
            "a key being processed was handed out again"
        );
        // … and back in line, once, when it is done.
        q.done(&a);
        assert_eq!(next(&q).await.as_deref(), Some("a"));
        assert_eq!(q.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_come_when_due_and_the_earliest_wins() {
        let q = queue();
        q.add_after("late".to_string(), Duration::from_secs(10));
        q.add_after("soon".to_string(), Duration::from_secs(5));
        q.add_after("late".to_string(), Duration::from_secs(2));
        q.add_after("soon".to_string(), Duration::from_secs(30));
        assert_eq!(q.delayed(), 2);
        let t0 = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("late"));
        assert_eq!(
            t0.elapsed().as_secs(),
            2,
            "the earliest delay of a key wins"
        );
        assert_eq!(q.get().await.as_deref(), Some("soon"));
        assert_eq!(t0.elapsed().as_secs(), 5);
        assert_eq!(q.delayed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reschedule_replaces_the_keys_delayed_add() {
        let q = queue();
        q.add_after("cancelled".to_string(), Duration::from_secs(1));
        q.add_after("later".to_string(), Duration::from_secs(1));
        q.add_after("other".to_string(), Duration::from_secs(3));
        q.reschedule("cancelled".to_string(), None);
        q.reschedule("later".to_string(), Some(Duration::from_secs(5)));
        assert_eq!(q.delayed(), 2);
        let t0 = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("other"));
        assert_eq!(t0.elapsed().as_secs(), 3, "nothing came at 1 s");
        assert_eq!(q.get().await.as_deref(), Some("later"));
        assert_eq!(t0.elapsed().as_secs(), 5);
        assert_eq!(q.delayed(), 0);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_delayed_add_wakes_a_worker_sleeping_for_a_later_one() {
        let q = queue();
        q.add_after("late".to_string(), Duration::from_secs(60));
        let worker = tokio::spawn({
            let q = q.clone();
            async move {
                let t0 = Instant::now();
                (q.get().await, t0.elapsed())
            }
        });
        tokio::task::yield_now().await;
        q.add_after("early".to_string(), Duration::from_secs(1));
        let (key, waited) = worker.await.expect("worker");
        assert_eq!(key.as_deref(), Some("early"));
        assert_eq!(waited.as_secs(), 1);
    }

    #[tokio::test]
    async fn many_workers_take_every_key_exactly_once() {
        let q = WorkQueue::<u32>::new(Arc::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (q, seen) = (q.clone(), seen.clone());
                tokio::spawn(async move {
                    while let Some(key) = q.get().await {
                        seen.lock().push(key);
                        tokio::task::yield_now().await;
                        q.done(&key);
                    }
                })
            })
            .collect();
        for key in 0..2000 {
            q.add(key);
            if key % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while !q.is_empty() || q.processing() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("drained");
        q.shut_down();
        for w in workers {
            w.await.expect("worker");
        }
        let mut seen = seen.lock().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..2000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn shutting_down_releases_waiting_workers_and_refuses_adds() {
        let q = queue();
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add("a".to_string());
        assert_eq!(waiting.await.ok().flatten().as_deref(), Some("a"));
        q.add("b".to_string());
        q.shut_down();
        assert_eq!(next(&q).await, None, "no key is handed out after shut down");
        q.add("c".to_string());
        q.add_after("d".to_string(), Duration::from_millis(1));
        assert_eq!(q.delayed(), 0);
        // The worker that has "a" may still finish it.
        q.done(&"a".to_string());
        assert_eq!(q.processing(), 0);
    }

    #[tokio::test]
    async fn metrics_follow_client_go() {
        let metrics = Arc::new(ControllerMetrics::default());
        let q = WorkQueue::<String>::new(metrics.clone());
        q.add("a".to_string());
        q.add("a".to_string());
        q.add("b".to_string());
        assert_eq!(metrics.adds(), 2);
        assert_eq!(metrics.depth(), 2);
        let a = next(&q).await.expect("a");
        assert_eq!(metrics.depth(), 1);
        q.retry_after(a.clone(), Duration::from_millis(1));
        q.done(&a);
        assert_eq!(metrics.retries(), 1);
        assert_eq!(next(&q).await.as_deref(), Some("b"));
        assert_eq!(metrics.depth(), 0);
        // The retry, once due.
        assert_eq!(next(&q).await.as_deref(), Some("a"));
        assert_eq!(metrics.adds(), 3);
    }
}

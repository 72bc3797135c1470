//! Waiting on conditions with a deadline, never on fixed sleeps.

use std::future::Future;
use std::time::{Duration, Instant};

/// The condition did not hold in time; `last` is the last observation, for the failure message.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}; last observed: {last}")]
pub struct Timeout {
    pub what: String,
    pub after: Duration,
    pub last: String,
}

/// How often a condition is looked at: first after `first`, then twice as long each time, up to
/// `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// From 10 ms to 250 ms: quick for what is nearly ready, light on what takes seconds.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_millis(10),
        max: Duration::from_millis(250),
    };

    /// The delay that follows `delay`.
    fn after(self, delay: Duration) -> Duration {
        (delay * 2).min(self.max)
    }

    /// A fixed interval, for a caller that measures when the condition came true.
    pub const fn every(interval: Duration) -> Backoff {
        Backoff {
            first: interval,
            max: interval,
        }
    }
}

/// One look at a condition.
#[derive(Debug)]
pub enum Check<T, E> {
    /// It holds.
    Ready(T),
    /// Not yet; what was seen, for the timeout's message.
    Pending(String),
    /// It never will (a process it waited on exited): stop now.
    Failed(E),
}

/// Why [`poll`] returned without a value.
#[derive(Debug, thiserror::Error)]
pub enum Stopped<E> {
    #[error(transparent)]
    Timeout(Timeout),
    #[error("{0}")]
    Failed(E),
}

/// Looks at `check` (spaced by `backoff`) until it is [`Check::Ready`] or [`Check::Failed`],
/// or, once `timeout` has passed, fails with its last [`Check::Pending`] observation. `check`
/// is always looked at once, even with a zero timeout.
pub async fn poll<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    backoff: Backoff,
    mut check: F,
) -> Result<T, Stopped<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = backoff.first;
    loop {
        match check().await {
            Check::Ready(value) => return Ok(value),
            Check::Failed(e) => return Err(Stopped::Failed(e)),
            Check::Pending(last) if Instant::now() >= deadline => {
                return Err(Stopped::Timeout(Timeout {
                    what: what.to_string(),
                    after: timeout,
                    last,
                }));
            }
            Check::Pending(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = backoff.after(delay);
    }
}

/// Polls `check` (with a growing delay up to 250 ms) until it returns `Ok(value)`, or fails with
/// the last `Err` description once `timeout` has passed.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    until_every(what, timeout, Backoff::DEFAULT, check).await
}

/// [`until`], spaced by `backoff`.
pub async fn until_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    backoff: Backoff,
    mut check: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let checked = poll::<T, std::convert::Infallible, _, _>(what, timeout, backoff, || {
        let attempt = check();
        async move {
            match attempt.await {
                Ok(value) => Check::Ready(value),
                Err(last) => Check::Pending(last),
            }
        }
    })
    .await;
    checked.map_err(|stopped| match stopped {
        Stopped::Timeout(t) => t,
        Stopped::Failed(never) => match never {},
    })
}

/// [`until_every`] for code that runs without an async runtime (drops, cleanup after a crash):
/// the thread sleeps between looks.
pub fn blocking<T>(
    what: &str,
    timeout: Duration,
    backoff: Backoff,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, Timeout> {
    let checked =
        blocking_poll::<T, std::convert::Infallible>(what, timeout, backoff, || match check() {
            Ok(value) => Check::Ready(value),
            Err(last) => Check::Pending(last),
        });
    checked.map_err(|stopped| match stopped {
        Stopped::Timeout(t) => t,
        Stopped::Failed(never) => match never {},
    })
}

/// [`poll`] for code that runs without an async runtime: the thread sleeps between looks.
pub fn blocking_poll<T, E>(
    what: &str,
    timeout: Duration,
    backoff: Backoff,
    mut check: impl FnMut() -> Check<T, E>,
) -> Result<T, Stopped<E>> {
    let deadline = Instant::now() + timeout;
    let mut delay = backoff.first;
    loop {
        match check() {
            Check::Ready(value) => return Ok(value),
            Check::Failed(e) => return Err(Stopped::Failed(e)),
            Check::Pending(last) if Instant::now() >= deadline => {
                return Err(Stopped::Timeout(Timeout {
                    what: what.to_string(),
                    after: timeout,
                    last,
                }));
            }
            Check::Pending(_) => {}
        }
        std::thread::sleep(delay);
        delay = backoff.after(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let got = until("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("call {n}"))
            }
        })
        .await;
        assert_eq!(got.ok(), Some(3));
    }

    #[tokio::test]
    async fn times_out_with_the_last_observation() {
        let err = until::<(), _, _>("never", Duration::from_millis(50), || async {
            Err("still false".to_string())
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("never") && err.contains("still false"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_check_stops_before_the_deadline() {
        let t0 = Instant::now();
        let calls = AtomicU32::new(0);
        let got = poll::<(), _, _, _>(
            "a process to answer",
            Duration::from_secs(30),
            Backoff::every(Duration::from_millis(5)),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Check::Pending("no answer".into()),
                    _ => Check::Failed("it exited"),
                }
            },
        )
        .await;
        assert!(matches!(got, Err(Stopped::Failed("it exited"))), "{got:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_zero_timeout_still_looks_once() {
        let got = poll::<_, (), _, _>("now", Duration::ZERO, Backoff::DEFAULT, || async {
            Check::Ready(7)
        })
        .await;
        assert_eq!(got.ok(), Some(7));
    }

    #[test]
    fn blocking_waits_return_the_value_or_the_last_observation() {
        let mut calls = 0;
        let got = blocking(
            "third call",
            Duration::from_secs(5),
            Backoff::DEFAULT,
            || {
                calls += 1;
                if calls >= 3 {
                    Ok(calls)
                } else {
                    Err(format!("call {calls}"))
                }
            },
        );
        assert_eq!(got.ok(), Some(3));
        let err = blocking::<()>(
            "never",
            Duration::from_millis(30),
            Backoff::every(Duration::from_millis(5)),
            || Err("still false".into()),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("never") && err.contains("still false"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_blocking_check_stops_at_once() {
        let mut calls = 0;
        let got = blocking_poll::<(), _>(
            "a process to answer",
            Duration::from_secs(30),
            Backoff::every(Duration::from_millis(5)),
            || {
                calls += 1;
                if calls < 3 {
                    Check::Pending("no answer".into())
                } else {
                    Check::Failed("it exited")
                }
            },
        );
        assert!(matches!(got, Err(Stopped::Failed("it exited"))), "{got:?}");
        assert_eq!(calls, 3);
    }

    #[test]
    fn delays_double_up_to_the_max_or_stay_fixed() {
        let delays = |b: Backoff| {
            std::iter::successors(Some(b.first), move |d| Some(b.after(*d)))
                .take(7)
                .map(|d| d.as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(Backoff::DEFAULT), [10, 20, 40, 80, 160, 250, 250]);
        assert_eq!(delays(Backoff::every(Duration::from_millis(20))), [20; 7]);
    }
}

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

/// Polls `check` (with a growing delay up to 250 ms) until it returns `Ok(value)`, or fails with
/// the last `Err` description once `timeout` has passed.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                return Err(Timeout {
                    what: what.to_string(),
                    after: timeout,
                    last,
                });
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
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
}

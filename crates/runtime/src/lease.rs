//! Leader election on a `coordination.k8s.io/v1` Lease, like client-go's `leaderelection`.
//!
//! Every replica runs a [`LeaderElector`] on the same Lease; at most one of them leads at a time.
//! The operator waits for [`LeaderHandle::acquired`] before it reconciles and stops (exits) when
//! [`LeaderHandle::lost`] fires.
//!
//! - **Acquire.** A replica reads the Lease and creates it if absent. While another identity holds
//!   it, the replica retries every `retry_period`, or when the Lease as last seen expires if
//!   that comes first (client-go waits for its next retry). The Lease is expired when this replica has seen
//!   no change of its record (holder, times, duration, transitions) for the record's
//!   `leaseDurationSeconds`, measured on this replica's monotonic clock from the moment it first
//!   saw the current record, so that clock skew between replicas does not matter. An expired or
//!   released Lease (empty holder) is taken over by an update that carries the observed
//!   `resourceVersion` (a conflict means another replica won) and increments `leaseTransitions`.
//! - **Renew.** The leader updates `renewTime` every `retry_period`. If no renew succeeds within
//!   `renew_deadline` of the last successful one (counted from when that request was *sent*), or
//!   the Lease turns out to be held by someone else, the replica steps down: the watch channel turns
//!   `false` at once, before any other replica can judge the Lease expired (since
//!   `renew_deadline < lease_duration`).
//! - **After a loss** the replica goes back to trying to acquire, so the channel always tells the
//!   truth; operators are expected to exit when [`LeaderHandle::lost`] fires, as operator-sdk and
//!   controller-runtime do, rather than to resume.
//! - **Release.** [`LeaderHandle::release`] (and, without waiting, dropping the handle) stops the
//!   loop and, if leading, rewrites the Lease with an empty holder and `leaseDurationSeconds: 1`
//!   (client-go's `ReleaseOnCancel`). A standby watches its Lease between retries and tries at
//!   once when it sees the holder gone, so a graceful handover doesn't wait for `retry_period`
//!   (client-go's standby only polls). Without permission to watch it falls back to polling.
//!
//! API errors never end the loop: they are logged and retried. No jitter is added to the retry
//! period: optimistic concurrency already settles concurrent takeovers.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tracing::Instrument;

/// How long [`LeaderHandle::release`] waits for the Lease to be released.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to elect a leader.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name, e.g. `pod-operator-leader`.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity, unique among the replicas (Pod name, or hostname and a random
    /// suffix).
    pub identity: String,
    /// How long a standby waits, after it last saw the Lease change, before it takes over.
    /// Written as whole seconds (rounded up). Default 15 s.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down; must be shorter than
    /// `lease_duration`. Default 10 s.
    pub renew_deadline: Duration,
    /// Delay between two attempts to acquire or renew. Default 2 s.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
    pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

    /// A configuration with client-go's default durations (15 s, 10 s, 2 s).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Self::DEFAULT_LEASE_DURATION,
            renew_deadline: Self::DEFAULT_RENEW_DEADLINE,
            retry_period: Self::DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks what makes the election safe: non-empty names and identity, and
    /// `lease_duration > renew_deadline > retry_period > 0`, with `lease_duration` at least 1 s.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Err(Error::InvalidConfig(reason));
        if self.name.is_empty() || self.namespace.is_empty() {
            return invalid("the Lease name and namespace must not be empty".into());
        }
        if self.identity.is_empty() {
            return invalid("the identity must not be empty".into());
        }
        if self.retry_period.is_zero() {
            return invalid("retry_period must be positive".into());
        }
        if self.lease_duration < Duration::from_secs(1)
            || self.lease_duration > Duration::from_secs(i32::MAX as u64)
        {
            return invalid(format!(
                "lease_duration ({:?}) must be between 1 s and i32::MAX s",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid(format!(
                "renew_deadline ({:?}) must be shorter than lease_duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return invalid(format!(
                "retry_period ({:?}) must be shorter than renew_deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// `lease_duration` in whole seconds, rounded up (others never wait less than configured).
    fn lease_duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid leader election configuration: {0}")]
    InvalidConfig(String),
    #[error("Lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {namespace}/{name}: no answer within {after:?}")]
    Timeout {
        namespace: String,
        name: String,
        after: Duration,
    },
}

/// Runs the election for one replica; see the [module documentation](self).
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Spawns the election loop on the current tokio runtime.
    ///
    /// With an invalid configuration (see [`LeaseConfig::validate`]) the error is logged and the
    /// loop does not run: the replica never leads and [`LeaderHandle::lost`] resolves at once.
    ///
    /// Dropping the returned handle stops the loop and releases the Lease in the background.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`tokio::spawn`].
    #[must_use = "dropping the handle stops the election"]
    pub fn start(self) -> LeaderHandle {
        let (leading_tx, leading) = watch::channel(false);
        let (status_tx, status) = watch::channel(Status::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let reporter = Reporter {
            leading: leading_tx,
            status: status_tx,
        };
        let task = match self.config.validate() {
            Ok(()) => {
                let span = tracing::info_span!(
                    "leader_election",
                    lease = %format!("{}/{}", self.config.namespace, self.config.name),
                    identity = %self.config.identity,
                );
                let run = Run {
                    api: self.api,
                    config: self.config,
                    observed: None,
                    reporter,
                };
                let stop = Stop {
                    rx: stop_rx,
                    done: false,
                };
                tokio::spawn(run.run(stop).instrument(span))
            }
            Err(e) => {
                tracing::error!(error = %e, "leader election not started");
                drop(reporter);
                tokio::spawn(async {})
            }
        };
        LeaderHandle {
            leading,
            status,
            stop: stop_tx,
            task,
        }
    }
}

/// The running election of one replica.
pub struct LeaderHandle {
    leading: watch::Receiver<bool>,
    status: watch::Receiver<Status>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LeaderHandle {
    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// `true` while this replica leads; changes are sent as they happen.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Resolves when this replica leads (at once if it does). Never resolves if the election
    /// loop has ended without leading.
    pub async fn acquired(&self) {
        let mut status = self.status.clone();
        if status.wait_for(|s| s.leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when this replica, having led, does not lead any more (at once if that already
    /// happened and it has not led again since): its renews failed for `renew_deadline`, or the
    /// Lease was taken. Also resolves if the election loop has ended (its runtime shut down).
    pub async fn lost(&self) {
        let mut status = self.status.clone();
        // An error means the loop has ended: this replica does not lead any more either way.
        let _ended = status.wait_for(|s| s.terms > 0 && !s.leading).await;
    }

    /// Stops the loop; if leading, releases the Lease (empty holder, `leaseDurationSeconds: 1`)
    /// so that a standby takes over at once, and waits for that write (at most
    /// [`RELEASE_TIMEOUT`] and a little more).
    pub async fn release(self) {
        let LeaderHandle { stop, mut task, .. } = self;
        // An error means the loop has already ended.
        let _ended = stop.send(());
        if timeout(RELEASE_TIMEOUT + Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            tracing::warn!("leader election did not stop in time; aborting it");
            task.abort();
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Status {
    leading: bool,
    /// How many times this replica has started leading.
    terms: u64,
}

/// Publishes whether this replica leads; turns `false` when the loop ends, however it ends
/// (including an abort or the shutdown of its runtime).
struct Reporter {
    leading: watch::Sender<bool>,
    status: watch::Sender<Status>,
}

impl Reporter {
    /// The public flag first, so that it agrees once `acquired()` or `lost()` (which watch
    /// `status`) resolve.
    fn set(&self, leading: bool) {
        self.leading.send_if_modified(|l| {
            let changed = *l != leading;
            *l = leading;
            changed
        });
        self.status.send_if_modified(|s| {
            if s.leading == leading {
                return false;
            }
            s.leading = leading;
            if leading {
                s.terms += 1;
            }
            true
        });
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// The stop signal: sent by [`LeaderHandle::release`], or the handle was dropped.
struct Stop {
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Stop {
    async fn requested(&mut self) {
        if !self.done {
            let _dropped_or_sent = (&mut self.rx).await;
            self.done = true;
        }
    }
}

/// Yields whenever Lease `name` is seen without a holder. Ends (and the caller polls) when the
/// watch is not allowed or fails.
fn released(api: Api<Lease>, name: &str) -> futures::stream::BoxStream<'static, ()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api, config)
        .take_while(|event| {
            let ok = event.is_ok();
            if let Err(e) = event {
                tracing::debug!(error = %e, "not watching the Lease; polling it");
            }
            futures::future::ready(ok)
        })
        .filter_map(|event| {
            let released = match event {
                Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .is_none_or(str::is_empty),
                _ => false,
            };
            futures::future::ready(released.then_some(()))
        })
        .boxed()
}

/// The Lease fields that tell whether its holder is alive; any change restarts the expiry clock.
#[derive(Clone, Debug, Default, PartialEq)]
struct Record {
    holder: String,
    lease_duration_seconds: Option<i32>,
    acquire_time: Option<MicroTime>,
    renew_time: Option<MicroTime>,
    lease_transitions: Option<i32>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            lease_transitions: spec.lease_transitions,
        }
    }
}

/// The Lease as last seen, and when (local monotonic clock) its record last changed.
struct Observed {
    lease: Lease,
    record: Record,
    changed_at: Instant,
}

enum Attempt {
    /// This replica holds the Lease, renewed by a request sent at the given instant.
    Leading(Instant),
    /// Another identity holds a valid Lease.
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write.
    Conflict,
}

enum Acquired {
    /// Leading, renewed by a request sent at the given instant.
    Leading(Instant),
    Stopped,
}

enum Renewed {
    /// Stop was requested while leading.
    Stopped,
    /// Renewing failed for the renew deadline, or the Lease was taken.
    SteppedDown,
}

struct Run {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    reporter: Reporter,
}

impl Run {
    async fn run(mut self, mut stop: Stop) {
        loop {
            let Acquired::Leading(renewed) = self.acquire(&mut stop).await else {
                return;
            };
            self.reporter.set(true);
            tracing::info!("started leading");
            match self.renew(renewed, &mut stop).await {
                Renewed::Stopped => {
                    self.release().await;
                    return;
                }
                // Try to acquire again, as a standby.
                Renewed::SteppedDown => {}
            }
        }
    }

    /// Tries every `retry_period`, and whenever the Lease is seen released, until this replica
    /// leads, or stop is requested.
    async fn acquire(&mut self, stop: &mut Stop) -> Acquired {
        let mut last_holder = None;
        let mut released = released(self.api.clone(), &self.config.name);
        loop {
            let attempt = tokio::select! {
                biased;
                () = stop.requested() => return Acquired::Stopped,
                r = self.bounded_attempt(self.config.renew_deadline) => r,
            };
            let held = matches!(attempt, Ok(Attempt::HeldBy(_)));
            match attempt {
                Ok(Attempt::Leading(at)) => return Acquired::Leading(at),
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(%holder, "the Lease is held by another replica; waiting");
                        last_holder = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {
                    tracing::debug!("another replica updated the Lease first");
                }
                Err(e) => tracing::warn!(error = %e, "failed to acquire the Lease; retrying"),
            }
            // The next try comes after `retry_period`, or just when the Lease held by another
            // expires if that is sooner: a crashed leader's Lease is taken when it expires, not
            // up to a retry period later. (After an error or a conflict: the retry period,
            // never a tight loop.)
            let wait = match self.expires_in() {
                Some(left) if held => left.min(self.config.retry_period),
                _ => self.config.retry_period,
            };
            tokio::select! {
                biased;
                () = stop.requested() => return Acquired::Stopped,
                () = sleep(wait) => {}
                Some(()) = released.next() => {
                    tracing::debug!("the Lease was released; trying at once");
                }
            }
        }
    }

    /// Renews every `retry_period` until stop is requested (still leading), or steps down when no
    /// renew succeeded within `renew_deadline` of the last one (`renewed`) or the Lease was taken.
    async fn renew(&mut self, mut renewed: Instant, stop: &mut Stop) -> Renewed {
        loop {
            let deadline = renewed + self.config.renew_deadline;
            let wake = (Instant::now() + self.config.retry_period).min(deadline);
            tokio::select! {
                biased;
                () = stop.requested() => return Renewed::Stopped,
                () = sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                self.step_down("no renew succeeded within the renew deadline");
                return Renewed::SteppedDown;
            }
            let attempt = tokio::select! {
                biased;
                () = stop.requested() => return Renewed::Stopped,
                r = self.bounded_attempt(deadline - now) => r,
            };
            match attempt {
                Ok(Attempt::Leading(at)) => renewed = at,
                Ok(Attempt::HeldBy(holder)) => {
                    self.step_down(&format!("the Lease is now held by {holder}"));
                    return Renewed::SteppedDown;
                }
                Ok(Attempt::Conflict) => {
                    tracing::warn!("another replica updated the Lease; retrying the renew");
                }
                Err(e) => tracing::warn!(error = %e, "failed to renew the Lease; retrying"),
            }
        }
    }

    fn step_down(&mut self, reason: &str) {
        self.reporter.set(false);
        tracing::warn!(reason, "stopped leading");
    }

    async fn bounded_attempt(&mut self, limit: Duration) -> Result<Attempt, Error> {
        match timeout(limit, self.try_acquire_or_renew()).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(limit)),
        }
    }

    /// How long until the Lease held by another identity, as last seen, expires (a moment
    /// after, so that the next look finds it expired).
    fn expires_in(&self) -> Option<Duration> {
        let observed = self.observed.as_ref()?;
        if observed.record.holder.is_empty() || observed.record.holder == self.config.identity {
            return None;
        }
        let duration = self.lease_duration_of(&observed.record);
        let at = observed.changed_at + duration + Duration::from_millis(10);
        Some(at.saturating_duration_since(Instant::now()))
    }

    fn lease_duration_of(&self, record: &Record) -> Duration {
        match record.lease_duration_seconds {
            Some(s) if s > 0 => Duration::from_secs(u64::from(s.unsigned_abs())),
            _ => self.config.lease_duration,
        }
    }

    /// One attempt, like client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, Error> {
        // Fast path for the leader: update the Lease as last written, without reading it.
        if self.reporter.is_leading()
            && let Some(observed) = &self.observed
        {
            let sent = Instant::now();
            let renewed = self.renewed(&observed.lease, false);
            match self.replace(&renewed).await {
                Ok(lease) => {
                    self.observe_own(lease, sent);
                    return Ok(Attempt::Leading(sent));
                }
                Err(e) => tracing::debug!(error = %e, "fast renew failed; reading the Lease"),
            }
        }

        let Some(lease) = self.get().await? else {
            let sent = Instant::now();
            let fresh = self.created();
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(lease) => {
                    tracing::info!("created the Lease");
                    self.observe_own(lease, sent);
                    Ok(Attempt::Leading(sent))
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(self.api_error(e)),
            };
        };
        let record = Record::of(&lease);
        let now = Instant::now();
        let changed_at = match &self.observed {
            Some(o) if o.record == record => o.changed_at,
            _ => now,
        };
        self.observed = Some(Observed {
            lease: lease.clone(),
            record: record.clone(),
            changed_at,
        });

        let ours = record.holder == self.config.identity;
        if !record.holder.is_empty() && !ours {
            let duration = self.lease_duration_of(&record);
            if now < changed_at + duration {
                return Ok(Attempt::HeldBy(record.holder));
            }
            tracing::info!(holder = %record.holder, "the Lease has expired; taking over");
        }

        let sent = Instant::now();
        let next = self.renewed(&lease, !ours);
        match self.replace(&next).await {
            Ok(lease) => {
                self.observe_own(lease, sent);
                Ok(Attempt::Leading(sent))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// If leading, hands the Lease over: empty holder, `leaseDurationSeconds: 1`, and the rest of
    /// the record kept; only while the Lease still names this replica.
    async fn release(&mut self) {
        if !self.reporter.is_leading() {
            return;
        }
        self.reporter.set(false);
        match timeout(RELEASE_TIMEOUT, self.try_release()).await {
            Ok(Ok(true)) => tracing::info!("released the Lease"),
            Ok(Ok(false)) => tracing::info!("the Lease was already held by another replica"),
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to release the Lease"),
            Err(_) => {
                let e = self.timeout_error(RELEASE_TIMEOUT);
                tracing::warn!(error = %e, "failed to release the Lease");
            }
        }
    }

    async fn try_release(&mut self) -> Result<bool, Error> {
        if let Some(observed) = &self.observed {
            let released = self.released(&observed.lease);
            match self.replace(&released).await {
                Ok(_) => return Ok(true),
                Err(e) => tracing::debug!(error = %e, "release failed; reading the Lease"),
            }
        }
        let Some(lease) = self.get().await? else {
            return Ok(false);
        };
        if Record::of(&lease).holder != self.config.identity {
            return Ok(false);
        }
        let released = self.released(&lease);
        match self.replace(&released).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_error(e)),
        }
    }

    fn observe_own(&mut self, lease: Lease, sent: Instant) {
        self.observed = Some(Observed {
            record: Record::of(&lease),
            lease,
            changed_at: sent,
        });
    }

    fn created(&self) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }
    }

    /// `lease` held by this replica, renewed now; `takeover` when it was someone else's (or
    /// nobody's): new acquire time and one more transition.
    fn renewed(&self, lease: &Lease, takeover: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.lease_duration_seconds());
        if takeover || spec.acquire_time.is_none() {
            spec.acquire_time = Some(now.clone());
        }
        if takeover {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        } else if spec.lease_transitions.is_none() {
            spec.lease_transitions = Some(0);
        }
        spec.renew_time = Some(now);
        next
    }

    fn released(&self, lease: &Lease) -> Lease {
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        next
    }

    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.api_error(e))
    }

    /// Updates with the `resourceVersion` of `lease`: a 409 means someone else wrote first.
    async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api
            .replace(&self.config.name, &PostParams::default(), lease)
            .await
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    fn timeout_error(&self, after: Duration) -> Error {
        Error::Timeout {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig::new("leader", "ns", "me")
    }

    #[test]
    fn defaults_are_client_go_s_and_valid() {
        let c = config();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert!(c.validate().is_ok());
        assert_eq!(c.lease_duration_seconds(), 15);
    }

    #[test]
    fn lease_duration_is_written_rounded_up() {
        let c = LeaseConfig {
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            ..config()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.lease_duration_seconds(), 3);
    }

    #[test]
    fn unsafe_configurations_are_rejected() {
        let invalid = [
            LeaseConfig {
                identity: String::new(),
                ..config()
            },
            LeaseConfig {
                renew_deadline: Duration::from_secs(15),
                ..config()
            },
            LeaseConfig {
                retry_period: Duration::from_secs(10),
                ..config()
            },
            LeaseConfig {
                retry_period: Duration::ZERO,
                ..config()
            },
            LeaseConfig {
                lease_duration: Duration::from_millis(900),
                renew_deadline: Duration::from_millis(500),
                retry_period: Duration::from_millis(100),
                ..config()
            },
        ];
        for c in invalid {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn status_counts_terms_and_the_flag_follows() {
        let (leading_tx, leading) = watch::channel(false);
        let (status_tx, status) = watch::channel(Status::default());
        let reporter = Reporter {
            leading: leading_tx,
            status: status_tx,
        };
        reporter.set(true);
        reporter.set(true);
        assert!(*leading.borrow());
        assert_eq!(status.borrow().terms, 1);
        reporter.set(false);
        reporter.set(true);
        assert_eq!(status.borrow().terms, 2);
        drop(reporter);
        assert!(!*leading.borrow());
        assert!(!status.borrow().leading);
    }
}

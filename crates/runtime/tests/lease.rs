//! Leader election against a real API server: short durations (lease 3 s, renew 2 s, retry
//! 0.5 s), every wait bounded by a deadline.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use operon_cluster::wait;
use operon_envtest::TestEnv;
use operon_runtime::lease::{LeaderElector, LeaderHandle, LeaseConfig};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);
/// Scheduling and request latency on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(30);

fn config(ns: &str, lease: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..LeaseConfig::new(lease, ns, identity)
    }
}

fn start(client: &Client, ns: &str, lease: &str, identity: &str) -> LeaderHandle {
    LeaderElector::new(client.clone(), config(ns, lease, identity)).start()
}

async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .with_context(|| format!("{what} did not happen within {limit:?}"))
}

async fn lease(client: &Client, ns: &str, name: &str) -> Result<Lease> {
    Ok(Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await?)
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(lease: &Lease) -> Option<i32> {
    lease.spec.as_ref()?.lease_transitions
}

fn renew_time(lease: &Lease) -> Result<Timestamp> {
    Ok(lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .context("the Lease has no renewTime")?
        .0)
}

/// Wall-clock time from `earlier` (written by a replica on this machine) to now.
fn since(earlier: Timestamp) -> Result<Duration> {
    Ok(Duration::try_from(
        Timestamp::now().duration_since(earlier),
    )?)
}

/// The Lease names `identity`, as seen by the admin client.
async fn wait_holder(client: &Client, ns: &str, name: &str, identity: &str) -> Result<Lease> {
    Ok(wait::until(
        &format!("Lease {name} held by {identity}"),
        TIMEOUT,
        || async {
            match Api::<Lease>::namespaced(client.clone(), ns).get(name).await {
                Ok(l) if holder(&l) == Some(identity) => Ok(l),
                Ok(l) => Err(format!("holder {:?}", holder(&l))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?)
}

#[tokio::test]
async fn exactly_one_of_two_electors_leads_and_keeps_leading() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    let a = start(&client, &ns, "one", "a");
    let b = start(&client, &ns, "one", "b");
    let (a_rx, b_rx) = (a.subscribe(), b.subscribe());

    within("a leader", TIMEOUT, async {
        tokio::select! { () = a.acquired() => {}, () = b.acquired() => {} }
    })
    .await?;
    let (leader, standby, leader_id, mut standby_rx) = if a.is_leader() {
        (&a, &b, "a", b_rx)
    } else {
        (&b, &a, "b", a_rx)
    };
    ensure!(leader.is_leader() && !standby.is_leader(), "both lead");
    let l = lease(&client, &ns, "one").await?;
    assert_eq!(holder(&l), Some(leader_id));
    assert_eq!(transitions(&l), Some(0));

    // For two lease durations, renews keep the standby out: the standby's channel never changes
    // and the Lease keeps its holder while its renewTime advances.
    let first_renew = renew_time(&l)?;
    let watch_until = Instant::now() + 2 * LEASE;
    while Instant::now() < watch_until {
        ensure!(leader.is_leader(), "the leader stepped down");
        ensure!(!standby.is_leader(), "the standby leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        !standby_rx.has_changed()? && !*standby_rx.borrow_and_update(),
        "the standby led at some point"
    );
    let l = lease(&client, &ns, "one").await?;
    assert_eq!(holder(&l), Some(leader_id));
    ensure!(renew_time(&l)? > first_renew, "the leader did not renew");
    assert_eq!(transitions(&l), Some(0));

    a.release().await;
    b.release().await;
    Ok(())
}

#[tokio::test]
async fn release_hands_over_to_the_standby_at_once() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    let a = start(&client, &ns, "handover", "a");
    within("a leads", TIMEOUT, a.acquired()).await?;
    let b = start(&client, &ns, "handover", "b");
    // b tries at once, then every retry period: once a has renewed a retry period after b
    // started, b is waiting in its retry loop.
    wait_renewed_after(&client, &ns, "handover", Timestamp::now() + RETRY).await?;
    ensure!(a.is_leader() && !b.is_leader());

    let released = Instant::now();
    within("release", RENEW + MARGIN, a.release()).await?;
    let l = lease(&client, &ns, "handover").await?;
    ensure!(
        holder(&l).is_none_or(|h| h.is_empty() || h == "b"),
        "Lease still held after release: {:?}",
        holder(&l)
    );
    within("b leads", TIMEOUT, b.acquired()).await?;
    let elapsed = released.elapsed();
    eprintln!("release → standby leads: {elapsed:?}");
    ensure!(
        elapsed < LEASE,
        "the standby took {elapsed:?}, not less than the lease duration"
    );
    ensure!(elapsed <= RETRY + MARGIN, "the standby took {elapsed:?}");
    let l = wait_holder(&client, &ns, "handover", "b").await?;
    assert_eq!(transitions(&l), Some(1));

    b.release().await;
    Ok(())
}

#[tokio::test]
async fn a_watching_standby_takes_over_well_before_its_retry_period() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    // b retries only every 10 s, far longer than the handover may take: only the watch can
    // explain a fast takeover. a renews often, which shows time passing on the Lease.
    let config = |identity: &str, retry: Duration| LeaseConfig {
        lease_duration: Duration::from_secs(30),
        renew_deadline: Duration::from_secs(20),
        retry_period: retry,
        ..LeaseConfig::new("watched", ns.name(), identity)
    };
    let a = LeaderElector::new(client.clone(), config("a", RETRY)).start();
    within("a leads", TIMEOUT, a.acquired()).await?;
    let b = LeaderElector::new(client.clone(), config("b", Duration::from_secs(10))).start();
    // b tries at once when it starts; once a has renewed twice since, b waits in its loop.
    wait_renewed_after(&client, &ns, "watched", Timestamp::now() + 2 * RETRY).await?;
    ensure!(a.is_leader() && !b.is_leader());
    let released = Instant::now();
    a.release().await;
    within("b leads", Duration::from_secs(9), b.acquired()).await?;
    let elapsed = released.elapsed();
    eprintln!("release → watching standby leads: {elapsed:?}");
    ensure!(
        elapsed < Duration::from_secs(3),
        "the standby took {elapsed:?}: it waited for its retry period instead of watching"
    );
    b.release().await;
    Ok(())
}

/// A runtime of its own, whose shutdown kills what runs on it like SIGKILL: no release, no
/// further request. (A runtime can't be dropped normally inside another one.)
struct Killable(Option<tokio::runtime::Runtime>);

impl Killable {
    fn kill(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts an elector on a [`Killable`] runtime, with a client made on that runtime.
async fn start_killable(
    env: &'static TestEnv,
    ns: &str,
    name: &str,
    identity: &str,
) -> Result<(Killable, LeaderHandle)> {
    let rt = Killable(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    ));
    let config = config(ns, name, identity);
    let spawned = rt.0.as_ref().context("runtime gone")?.spawn(async move {
        let client = env.client().await?;
        anyhow::Ok(LeaderElector::new(client, config).start())
    });
    let handle = spawned.await??;
    Ok((rt, handle))
}

/// Waits until the Lease's renewTime is later than `after`.
async fn wait_renewed_after(
    client: &Client,
    ns: &str,
    name: &str,
    after: Timestamp,
) -> Result<Lease> {
    Ok(wait::until(
        &format!("Lease {name} renewed after {after}"),
        TIMEOUT,
        || async {
            let l = lease(client, ns, name).await.map_err(|e| e.to_string())?;
            match renew_time(&l) {
                Ok(t) if t > after => Ok(l),
                other => Err(format!("renewTime {other:?}")),
            }
        },
    )
    .await?)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_after_the_lease_duration() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    let (mut rt, a) = start_killable(env, &ns, "killed", "a").await?;
    within("a leads", TIMEOUT, a.acquired()).await?;
    let b = start(&client, &ns, "killed", "b");
    // Let a renew a few times with b standing by.
    let l = wait_renewed_after(&client, &ns, "killed", Timestamp::now() + 2 * RETRY).await?;
    assert_eq!(holder(&l), Some("a"));
    ensure!(!b.is_leader());

    rt.kill();
    // The dying runtime drops a's loop, whose channel then turns false.
    within("a reports the loss", Duration::from_secs(2), a.lost()).await?;
    ensure!(!a.is_leader());
    let killed = lease(&client, &ns, "killed").await?;
    assert_eq!(holder(&killed), Some("a"));
    let last_renew = renew_time(&killed)?;

    within("b leads", TIMEOUT, b.acquired()).await?;
    let elapsed = since(last_renew)?;
    eprintln!("last renew of the killed leader → standby leads: {elapsed:?}");
    ensure!(
        elapsed + Duration::from_millis(100) >= LEASE,
        "the standby took over {elapsed:?} after the last renew, before the lease expired"
    );
    // It saw the last renew at most a retry period after it was written, and tries again
    // when that record expires, not at its next retry.
    ensure!(
        elapsed < LEASE + RETRY + MARGIN,
        "the standby took {elapsed:?} after the last renew"
    );
    let l = wait_holder(&client, &ns, "killed", "b").await?;
    assert_eq!(transitions(&l), Some(1));

    b.release().await;
    Ok(())
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_before_the_lease_expires() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let admin = env.client().await?;
    let user = format!("elector-{}", operon_envtest::random_suffix());
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "lease-elector" },
        "rules": [{
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }],
    }))?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "lease-elector" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease-elector" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))?;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns);
    bindings.create(&PostParams::default(), &binding).await?;

    let limited = env.impersonating(&user, &[]).await?;
    let a = start(&limited, &ns, "revoked", "a");
    within("a leads", TIMEOUT, a.acquired()).await?;
    let b = start(&admin, &ns, "revoked", "b");
    wait_holder(&admin, &ns, "revoked", "a").await?;
    let mut a_rx = a.subscribe();
    ensure!(*a_rx.borrow_and_update());

    bindings
        .delete("lease-elector", &DeleteParams::default())
        .await?;
    within("a steps down", TIMEOUT, a.lost()).await?;
    let stepped_down = Timestamp::now();
    ensure!(!a.is_leader());
    ensure!(!*a_rx.borrow(), "the subscribed channel still says leading");
    let l = lease(&admin, &ns, "revoked").await?;
    assert_eq!(holder(&l), Some("a"), "taken over before a stepped down");
    let last_renew = renew_time(&l)?;
    let held = Duration::try_from(stepped_down.duration_since(last_renew))?;
    eprintln!("last successful renew → step down: {held:?}");
    ensure!(
        held < LEASE,
        "a led {held:?} after its last renew, past the lease duration"
    );
    ensure!(
        held + Duration::from_millis(250) >= RENEW,
        "a stepped down {held:?} after its last renew, before the renew deadline"
    );
    ensure!(!b.is_leader(), "b leads while the Lease is still valid");

    within("b leads", TIMEOUT, b.acquired()).await?;
    let elapsed = since(last_renew)?;
    eprintln!("last successful renew → standby leads: {elapsed:?}");
    ensure!(
        elapsed + Duration::from_millis(100) >= LEASE,
        "b took over {elapsed:?} after a's last renew, before the lease expired"
    );
    ensure!(!a.is_leader());
    let l = wait_holder(&admin, &ns, "revoked", "b").await?;
    assert_eq!(transitions(&l), Some(1));

    // a's release cannot write the Lease (no permission) nor harm b's.
    within("release", RENEW + MARGIN, a.release()).await?;
    assert_eq!(holder(&lease(&admin, &ns, "revoked").await?), Some("b"));
    b.release().await;
    Ok(())
}

#[tokio::test]
async fn lease_transitions_count_takeovers() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    for (expected, identity) in (0..).zip(["a", "b", "a", "c"]) {
        let elector = start(&client, &ns, "transitions", identity);
        within(&format!("{identity} leads"), TIMEOUT, elector.acquired()).await?;
        let l = lease(&client, &ns, "transitions").await?;
        assert_eq!(holder(&l), Some(identity));
        assert_eq!(transitions(&l), Some(expected), "after {identity} acquired");
        elector.release().await;
        let l = lease(&client, &ns, "transitions").await?;
        ensure!(
            holder(&l).is_none_or(str::is_empty),
            "released Lease held by {:?}",
            holder(&l)
        );
        assert_eq!(
            l.spec.as_ref().and_then(|s| s.lease_duration_seconds),
            Some(1)
        );
        assert_eq!(transitions(&l), Some(expected), "release kept the count");
    }
    Ok(())
}

#[tokio::test]
async fn an_invalid_config_never_leads() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("lease").await?;
    let client = env.client().await?;
    let config = LeaseConfig {
        renew_deadline: LEASE,
        ..config(&ns, "invalid", "a")
    };
    ensure!(config.validate().is_err());
    let handle = LeaderElector::new(client.clone(), config).start();
    within(
        "lost() on an invalid config",
        Duration::from_secs(1),
        handle.lost(),
    )
    .await?;
    ensure!(!handle.is_leader());
    let leases = Api::<Lease>::namespaced(client, &ns);
    ensure!(leases.get_opt("invalid").await?.is_none());
    ensure!(LeaseConfig::new("x", "y", "z").validate().is_ok());
    Ok(())
}

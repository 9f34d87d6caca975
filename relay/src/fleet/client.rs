//! The fleet thread: its runtime, the lease and its keepalive, registration, the node watch
//! and the fence tick. Requests from the control side arrive as jobs on a channel.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use super::fence::{Fence, State};
use super::keys::Keys;
use super::{Acks, Append, Commit, Config, Event, FleetError, NodeInfo, Rules, Status, ops};
use crate::store::AuditEntry;

/// The control side's handle on the fleet thread. Dropping it is [`Fleet::stop`].
pub struct Fleet {
    jobs: Option<mpsc::UnboundedSender<(Lane, Job)>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the fleet thread's tasks share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) keys: Keys,
    /// One client per endpoint; calls go to `clients[current]`, which moves on after a
    /// failure (`etcd-client`'s balanced channel keeps sending to a dead member).
    clients: Vec<Client>,
    current: AtomicUsize,
    pub(super) status: Arc<Status>,
    lease: AtomicI64,
    fence: Mutex<Fence>,
    me: Mutex<NodeInfo>,
    nodes: Mutex<BTreeMap<String, NodeInfo>>,
    events: Sender<Event>,
    halted: AtomicBool,
    /// The last revision put under `acks/{node}`; the lock keeps acks in order.
    pub(super) last_ack: tokio::sync::Mutex<i64>,
}

type Job = Box<dyn FnOnce(Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// How a job runs on the fleet thread.
#[derive(Clone, Copy)]
enum Lane {
    /// At once, beside every other job.
    Any,
    /// After every earlier `InOrder` job has finished: writes of keys that one relay puts and
    /// deletes (a participant that joins and leaves at once must not be left registered by a
    /// put that overtook the delete), and reads that must see them.
    InOrder,
}

impl Fleet {
    /// Starts the fleet thread, joins the fleet (see the module docs, step 1) and returns once
    /// this node is registered and the node list is read; that may take up to two TTLs when a
    /// previous life of this node has not expired yet. The relay stays fenced until
    /// [`Fleet::ack`] of [`Fleet::joined_at`]. Drain the event receiver: it is unbounded.
    pub fn start(config: Config) -> Result<(Self, Receiver<Event>), FleetError> {
        Self::start_with(config, Arc::new(Status::new()))
    }

    /// [`Fleet::start`] writing into a [`Status`] made beforehand (the one the workers read).
    pub fn start_with(
        config: Config,
        status: Arc<Status>,
    ) -> Result<(Self, Receiver<Event>), FleetError> {
        config.check()?;
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(FleetError::Unavailable(format!(
                            "cannot build the fleet runtime: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(run(config, status, events_tx, jobs_rx, ready_tx));
            })
            .map_err(|e| FleetError::Unavailable(format!("cannot spawn the fleet thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(shared)) => Ok((
                Self {
                    jobs: Some(jobs_tx),
                    shared,
                    thread: Some(thread),
                },
                events_rx,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(FleetError::Stopped)
            }
        }
    }

    /// Commits an audit entry and the keys `build` gives, in one etcd transaction that
    /// compares the audit head's `mod_revision` (retried with the new head on conflict).
    pub fn append(
        &self,
        action: &str,
        build: impl Fn(u64) -> Append + Send + Sync + 'static,
    ) -> Result<Commit, FleetError> {
        let action = action.to_owned();
        self.block(move |s| async move { ops::append(&s, &action, &build).await })
    }

    /// [`Fleet::append`] without waiting: `done` runs on the fleet thread with the result.
    pub fn append_then(
        &self,
        action: &str,
        build: impl Fn(u64) -> Append + Send + Sync + 'static,
        done: impl FnOnce(Result<Commit, FleetError>) + Send + 'static,
    ) {
        let action = action.to_owned();
        self.submit(
            move |s| async move { ops::append(&s, &action, &build).await },
            done,
        );
    }

    /// Records that every rule up to `revision` is applied on all workers: lifts the
    /// join gate once `revision` reaches [`Fleet::joined_at`], and puts `acks/{node}` under
    /// this node's lease.
    pub fn ack(&self, revision: i64) -> Result<(), FleetError> {
        self.block(move |s| async move { ops::ack(&s, revision).await })
    }

    /// [`Fleet::ack`] without waiting.
    pub fn ack_then(
        &self,
        revision: i64,
        done: impl FnOnce(Result<(), FleetError>) + Send + 'static,
    ) {
        self.submit(move |s| async move { ops::ack(&s, revision).await }, done);
    }

    /// Waits until every node registered at `revision` has acked it or gone, or `timeout`
    /// passes; names the nodes in each case.
    pub fn wait_acks(&self, revision: i64, timeout: Duration) -> Result<Acks, FleetError> {
        self.block(move |s| async move { ops::wait_acks(&s, revision, timeout).await })
    }

    /// [`Fleet::wait_acks`] without waiting.
    pub fn wait_acks_then(
        &self,
        revision: i64,
        timeout: Duration,
        done: impl FnOnce(Result<Acks, FleetError>) + Send + 'static,
    ) {
        self.submit(
            move |s| async move { ops::wait_acks(&s, revision, timeout).await },
            done,
        );
    }

    /// Fences another node: revokes its lease (if it still has one), then waits one TTL, by
    /// which time the node has stopped forwarding (see [`super::fence`]).
    pub fn fence_node(&self, node: &str) -> Result<(), FleetError> {
        let node = node.to_owned();
        self.block(move |s| async move { ops::fence_node(&s, &node).await })
    }

    /// [`Fleet::fence_node`] without waiting.
    pub fn fence_node_then(
        &self,
        node: &str,
        done: impl FnOnce(Result<(), FleetError>) + Send + 'static,
    ) {
        let node = node.to_owned();
        self.submit(
            move |s| async move { ops::fence_node(&s, &node).await },
            done,
        );
    }

    /// Every key under `rules/` at `revision` (`None`: now), with the revision read at.
    pub fn rules(&self, revision: Option<i64>) -> Result<Rules, FleetError> {
        self.block(move |s| async move { ops::rules(&s, revision).await })
    }

    /// [`Fleet::rules`] without waiting.
    pub fn rules_then(
        &self,
        revision: Option<i64>,
        done: impl FnOnce(Result<Rules, FleetError>) + Send + 'static,
    ) {
        self.submit(move |s| async move { ops::rules(&s, revision).await }, done);
    }

    /// [`Fleet::audit_entries`] without waiting.
    pub fn audit_entries_then(
        &self,
        done: impl FnOnce(Result<Vec<AuditEntry>, FleetError>) + Send + 'static,
    ) {
        self.submit(|s| async move { ops::audit_entries(&s).await }, done);
    }

    /// Puts `key` (a full key, from [`Fleet::keys`]) under this node's lease, without waiting;
    /// in order with [`Fleet::delete_then`] and [`Fleet::get_then`].
    pub fn put_leased_then(
        &self,
        key: String,
        value: Vec<u8>,
        done: impl FnOnce(Result<(), FleetError>) + Send + 'static,
    ) {
        self.submit_on(
            Lane::InOrder,
            move |s| async move { ops::put_leased(&s, &key, &value).await },
            done,
        );
    }

    /// Deletes `key`, without waiting; in order with [`Fleet::put_leased_then`].
    pub fn delete_then(
        &self,
        key: String,
        done: impl FnOnce(Result<(), FleetError>) + Send + 'static,
    ) {
        self.submit_on(
            Lane::InOrder,
            move |s| async move { ops::delete(&s, &key).await },
            done,
        );
    }

    /// Reads `key` after every put and delete asked for before it has finished, without
    /// waiting: `done` gets the key and its value (`None`: absent).
    pub fn get_then(
        &self,
        key: String,
        done: impl FnOnce(Result<(String, Option<Vec<u8>>), FleetError>) + Send + 'static,
    ) {
        self.submit_on(
            Lane::InOrder,
            move |s| async move { ops::get(&s, &key).await.map(|v| (key, v)) },
            done,
        );
    }

    /// Puts `key` (not leased) unless it exists, without waiting: `done` gets `None` when
    /// this call created it, else the value it already had. In order with the other writes.
    pub fn put_new_then(
        &self,
        key: String,
        value: Vec<u8>,
        done: impl FnOnce(Result<Option<Vec<u8>>, FleetError>) + Send + 'static,
    ) {
        self.submit_on(
            Lane::InOrder,
            move |s| async move { ops::put_new(&s, &key, &value).await },
            done,
        );
    }

    /// Every key under `prefix` with its value, without waiting.
    pub fn get_prefix_then(
        &self,
        prefix: String,
        done: impl FnOnce(Result<Vec<(String, Vec<u8>)>, FleetError>) + Send + 'static,
    ) {
        self.submit(
            move |s| async move { ops::get_prefix(&s, &prefix).await },
            done,
        );
    }

    /// [`Fleet::get_prefix_then`] after every write asked for before it has finished (the
    /// relay's own keys read back as it last wrote them).
    pub fn get_prefix_after_writes_then(
        &self,
        prefix: String,
        done: impl FnOnce(Result<Vec<(String, Vec<u8>)>, FleetError>) + Send + 'static,
    ) {
        self.submit_on(
            Lane::InOrder,
            move |s| async move { ops::get_prefix(&s, &prefix).await },
            done,
        );
    }

    /// The key layout in use.
    pub fn keys(&self) -> Keys {
        self.shared.keys.clone()
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.config.ttl
    }

    /// The fleet's audit chain as stored in etcd, oldest first: mirror it with
    /// [`crate::store::Store::mirror`] and check it with [`crate::store::Store::verify`].
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, FleetError> {
        self.block(|s| async move { ops::audit_entries(&s).await })
    }

    /// Updates this node's load in its registration.
    pub fn set_load(&self, load: u32) -> Result<(), FleetError> {
        self.block(move |s| async move { ops::set_load(&s, load).await })
    }

    /// [`Fleet::set_load`] without waiting.
    pub fn set_load_then(
        &self,
        load: u32,
        done: impl FnOnce(Result<(), FleetError>) + Send + 'static,
    ) {
        self.submit(move |s| async move { ops::set_load(&s, load).await }, done);
    }

    /// Leaves the fleet: revokes the lease (peers see [`Event::NodeLost`] at once) and stops
    /// the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the thread without revoking the lease, as a crash would: peers see the node go
    /// when its lease expires.
    pub fn halt(mut self) {
        self.shared.halted.store(true, Ordering::Relaxed);
        self.shutdown();
    }

    /// This node as registered (its `registered_at` is the current registration's revision).
    pub fn node(&self) -> NodeInfo {
        lock(&self.shared.me).clone()
    }

    /// The live nodes, this one included, as the node watch last saw them.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        lock(&self.shared.nodes).values().cloned().collect()
    }

    /// The revision of this node's current registration.
    pub fn joined_at(&self) -> i64 {
        self.shared.status.joined_at()
    }

    /// The atomics other threads read (workers: [`Status::fenced`]).
    pub fn status(&self) -> Arc<Status> {
        self.shared.status.clone()
    }

    /// Runs `f` on the fleet thread and waits for its result.
    fn block<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, FleetError>> + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(f, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(FleetError::Stopped))
    }

    /// Runs `f` on the fleet thread, then `done` with its result (there too).
    fn submit<T, F, Fut>(&self, f: F, done: impl FnOnce(Result<T, FleetError>) + Send + 'static)
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, FleetError>> + Send + 'static,
    {
        self.submit_on(Lane::Any, f, done);
    }

    fn submit_on<T, F, Fut>(
        &self,
        lane: Lane,
        f: F,
        done: impl FnOnce(Result<T, FleetError>) + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, FleetError>> + Send + 'static,
    {
        let job: Job = Box::new(move |s| Box::pin(async move { done(f(s).await) }));
        let Some(jobs) = &self.jobs else {
            return;
        };
        // The thread lives as long as `jobs`; a job it has not finished when it stops is
        // dropped with its `done` (a blocking caller then gets `FleetError::Stopped`).
        let _ = jobs.send((lane, job));
    }

    fn shutdown(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    pub(super) fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    pub(super) fn me(&self) -> NodeInfo {
        lock(&self.me).clone()
    }

    pub(super) fn set_me(&self, info: NodeInfo) {
        *lock(&self.me) = info;
    }

    pub(super) fn applied(&self, revision: i64) {
        lock(&self.fence).applied(revision);
        self.status.applied.fetch_max(revision, Ordering::Relaxed);
        self.tick();
    }

    /// The client of the endpoint in use.
    pub(super) fn client(&self) -> Client {
        self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].clone()
    }

    /// How many endpoints there are (how often an idempotent call is worth trying).
    pub(super) fn endpoints(&self) -> usize {
        self.clients.len()
    }

    /// Runs an etcd call with the operation timeout. On any failure the next call goes to the
    /// next endpoint. A call that never left (no connection) fails as
    /// [`FleetError::Unreachable`], one that may have reached etcd as
    /// [`FleetError::Unavailable`].
    pub(super) async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        self.timed_for(self.config.op_timeout, f).await
    }

    /// [`Shared::timed`] with a timeout of its own.
    pub(super) async fn timed_for<T>(
        &self,
        timeout: Duration,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        let used = self.current.load(Ordering::Relaxed);
        let result = match tokio::time::timeout(timeout, f).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if never_sent(&e) => FleetError::Unreachable(e.to_string()),
            Ok(Err(e)) => e.into(),
            Err(_) => FleetError::Unavailable(format!("no answer within {timeout:?}")),
        };
        let _ = self.current.compare_exchange(
            used,
            used.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        Err(result)
    }

    /// Turns the fence into the status atomics.
    fn tick(&self) {
        let now = Instant::now();
        let fence = lock(&self.fence);
        let fenced = fence.state(now) != State::Forwarding;
        let slack = fence.deadline().map_or(0, |d| {
            if d >= now {
                d.duration_since(now).as_millis() as i64
            } else {
                -(now.duration_since(d).as_millis() as i64)
            }
        });
        self.status.set(fenced, fence.deadline());
        self.status.slack_ms.store(slack, Ordering::Relaxed);
        self.status
            .joined_at
            .store(fence.joined_at(), Ordering::Relaxed);
    }
}

async fn run(
    config: Config,
    status: Arc<Status>,
    events: Sender<Event>,
    mut jobs: mpsc::UnboundedReceiver<(Lane, Job)>,
    ready: std::sync::mpsc::Sender<Result<Arc<Shared>, FleetError>>,
) {
    let options = ConnectOptions::new()
        .with_connect_timeout(config.op_timeout)
        // HTTP/2 pings find a dead connection (a killed or cut-off member) within a second.
        .with_keep_alive(Duration::from_millis(500), Duration::from_secs(1))
        .with_keep_alive_while_idle(true)
        // A member without a leader (isolated, or during an election) fails calls and ends
        // watches at once instead of leaving them silent: we move on or try again.
        .with_require_leader(true);
    // `Client::connect` does not dial yet, so this fails only on a malformed endpoint.
    let mut clients = Vec::new();
    for endpoint in &config.endpoints {
        match Client::connect([endpoint], Some(options.clone())).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                let _ = ready.send(Err(FleetError::Config(format!(
                    "etcd endpoint {endpoint:?}: {e}"
                ))));
                return;
            }
        }
    }
    let me = NodeInfo {
        node: config.node.clone(),
        region: config.region.clone(),
        trunk: config.trunk,
        control: config.control,
        load: 0,
        number: 0,
        registered_at: 0,
    };
    let shared = Arc::new(Shared {
        keys: Keys::new(&config.prefix),
        fence: Mutex::new(Fence::new(config.margin)),
        config,
        clients,
        current: AtomicUsize::new(0),
        status,
        lease: AtomicI64::new(0),
        me: Mutex::new(me),
        nodes: Mutex::new(BTreeMap::new()),
        events,
        halted: AtomicBool::new(false),
        last_ack: tokio::sync::Mutex::new(0),
    });
    let started = async {
        let number = ops::node_number(&shared).await?;
        lock(&shared.me).number = number;
        join(&shared, true).await?;
        load_nodes(&shared, false).await
    };
    let revision = match started.await {
        Ok(r) => r,
        Err(e) => {
            let lease = shared.lease();
            if lease != 0 {
                let _ = shared.timed(shared.client().lease_revoke(lease)).await;
            }
            let _ = ready.send(Err(e));
            return;
        }
    };
    shared.tick();
    tokio::spawn(keepalive(shared.clone()));
    tokio::spawn(watch_nodes(shared.clone(), revision));
    tokio::spawn(watch_prefix(
        shared.clone(),
        shared.keys.rules(),
        shared.status.joined_at(),
        || Event::RulesResync,
        |key, value, revision| Event::Rule {
            key,
            value,
            revision,
        },
    ));
    tokio::spawn(watch_prefix(
        shared.clone(),
        shared.keys.participants(),
        revision,
        || Event::ParticipantsResync,
        |key, value, _| Event::Participant { key, value },
    ));
    tokio::spawn(watch_prefix(
        shared.clone(),
        shared.keys.rooms(),
        revision,
        || Event::RoomsResync,
        |key, value, _| Event::Room { key, value },
    ));
    tokio::spawn(fence_tick(shared.clone()));
    if ready.send(Ok(shared.clone())).is_err() {
        return;
    }
    // One task runs the ordered lane's jobs one after another.
    let (in_order, mut queued) = mpsc::unbounded_channel::<Job>();
    let lane = shared.clone();
    tokio::spawn(async move {
        while let Some(job) = queued.recv().await {
            job(lane.clone()).await;
        }
    });
    while let Some((lane, job)) = jobs.recv().await {
        match lane {
            Lane::Any => {
                tokio::spawn(job(shared.clone()));
            }
            Lane::InOrder => {
                let _ = in_order.send(job);
            }
        }
    }
    if !shared.halted.load(Ordering::Relaxed) {
        let _ = shared
            .timed(shared.client().lease_revoke(shared.lease()))
            .await;
    }
}

/// Grants a lease and registers this node under it. At start (`wait_for_name`), first waits
/// (up to two TTLs) for a registration of the same name to go: a previous life of this relay
/// whose lease has not expired yet.
async fn join(shared: &Shared, wait_for_name: bool) -> Result<(), FleetError> {
    let key = shared.keys.node(&shared.config.node);
    let mut client = shared.client();
    let give_up = Instant::now() + 2 * shared.config.ttl;
    loop {
        let held = shared.timed(client.get(key.as_str(), None)).await?;
        if held.kvs().is_empty() {
            break;
        }
        if !wait_for_name || Instant::now() > give_up {
            return Err(FleetError::NameTaken(shared.config.node.clone()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The deadline counts from before the grant was sent: the store's TTL starts later.
    let sent_at = Instant::now();
    let ttl = shared.config.ttl.as_secs() as i64;
    let grant = shared.timed(client.lease_grant(ttl, None)).await?;
    let lease = grant.id();
    let mut me = shared.me();
    let value = serde_json::to_vec(&me).map_err(|e| FleetError::Corrupt(e.to_string()))?;
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    let resp = shared.timed(client.txn(txn)).await?;
    if !resp.succeeded() {
        let _ = shared.timed(client.lease_revoke(lease)).await;
        return Err(FleetError::NameTaken(shared.config.node.clone()));
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    shared.lease.store(lease, Ordering::Relaxed);
    me.registered_at = revision;
    shared.set_me(me.clone());
    lock(&shared.nodes).insert(me.node.clone(), me);
    lock(&shared.fence).joined(
        sent_at,
        Duration::from_secs(grant.ttl().max(0) as u64),
        revision,
    );
    shared.tick();
    Ok(())
}

/// Keeps the lease alive: a keepalive every TTL/10 on one stream, each answer moving the fence
/// deadline to its send time + TTL - margin. A stream whose oldest keepalive waits more than
/// two periods is reopened (the member it went to may be dead; the balanced channel picks
/// another). An answer with TTL 0 means the lease is gone: fence, then rejoin.
async fn keepalive(shared: Arc<Shared>) {
    // Often, so that the last answer before an etcd leader change is recent: the new leader
    // answers only after its election (1 to 2 s with etcd's default 1 s election timeout),
    // and the deadline must outlast that (measured in tests/tests/fleet_store.rs).
    let period = (shared.config.ttl / 10).max(Duration::from_millis(100));
    loop {
        let lease = shared.lease();
        let mut client = shared.client();
        // Opening the stream sends a first keepalive and reads its answer. Right after the
        // etcd leader dies, a follower may hold it until it notices; rather than wait, try the
        // next member after two periods.
        let sent_at = Instant::now();
        let opened = shared
            .timed_for(2 * period, client.lease_keep_alive(lease))
            .await;
        let (mut keeper, mut stream) = match opened {
            Ok(opened) => {
                lock(&shared.fence).keepalive_answered(sent_at, shared.config.ttl);
                shared.tick();
                opened
            }
            Err(FleetError::Unavailable(e)) if e.contains(LEASE_NOT_FOUND) => {
                lease_lost(&shared).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut sent: VecDeque<Instant> = VecDeque::new();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let lost = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if sent.front().is_some_and(|t| t.elapsed() > 2 * period) {
                        break false;
                    }
                    sent.push_back(Instant::now());
                    // The send waits for room in the stream's buffer, which a dead connection
                    // never makes: bound it.
                    let send = tokio::time::timeout(period, keeper.keep_alive()).await;
                    if !matches!(send, Ok(Ok(()))) {
                        break false;
                    }
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        let Some(at) = sent.pop_front() else { continue };
                        if resp.ttl() <= 0 {
                            break true;
                        }
                        let ttl = Duration::from_secs(resp.ttl() as u64);
                        lock(&shared.fence).keepalive_answered(at, ttl);
                        shared.tick();
                    }
                    Ok(None) | Err(_) => break false,
                },
            }
        };
        if lost {
            lease_lost(&shared).await;
        }
    }
}

/// The store says the lease is gone: fence at once, tell the control side, register again
/// under a new lease (retrying until etcd answers).
async fn lease_lost(shared: &Shared) {
    lock(&shared.fence).lease_lost();
    shared.tick();
    let _ = shared.events.send(Event::LeaseLost);
    loop {
        match join(shared, false).await {
            Ok(()) => {
                let joined_at = shared.me().registered_at;
                let _ = shared.events.send(Event::Rejoined { joined_at });
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Reads the node list; returns the revision it was read at. With `announce`, sends the
/// differences from what was known as events (a resync after a compacted watch).
async fn load_nodes(shared: &Shared, announce: bool) -> Result<i64, FleetError> {
    let mut client = shared.client();
    let resp = shared
        .timed(client.get(shared.keys.nodes(), Some(GetOptions::new().with_prefix())))
        .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut fresh = BTreeMap::new();
    for kv in resp.kvs() {
        if let Some(info) = parse_node(shared, kv) {
            fresh.insert(info.node.clone(), info);
        }
    }
    let old = std::mem::replace(&mut *lock(&shared.nodes), fresh.clone());
    let me = &shared.config.node;
    for (name, info) in &fresh {
        let known = old.get(name).map(|o| o.registered_at);
        if name != me && (!announce || known != Some(info.registered_at)) {
            if known.is_some() {
                let _ = shared.events.send(Event::NodeLost { node: name.clone() });
            }
            let _ = shared.events.send(Event::NodeJoined(info.clone()));
        }
    }
    if announce {
        for name in old.keys() {
            if name != me && !fresh.contains_key(name) {
                let _ = shared.events.send(Event::NodeLost { node: name.clone() });
            }
        }
    }
    Ok(revision)
}

/// Watches `nodes/` from `revision + 1`, resuming after each break from the last revision
/// seen, and turns changes into events.
async fn watch_nodes(shared: Arc<Shared>, mut revision: i64) {
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut client = shared.client();
        let Ok(mut stream) = shared
            .timed(client.watch(shared.keys.nodes(), Some(options)))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        loop {
            let Ok(Some(resp)) = stream.message().await else {
                break;
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                // Revisions we have not seen were compacted away: read the list afresh.
                match load_nodes(&shared, true).await {
                    Ok(r) => revision = r,
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
                break;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                revision = revision.max(kv.mod_revision());
                node_event(&shared, event.event_type(), kv);
            }
        }
    }
}

/// Watches `prefix` from `revision + 1` and sends every change, in order, as `change(key,
/// value, revision)` (`None` for a delete); after a compaction or a cancelled watch, `resync`.
/// Resumes after a break from the last revision sent.
async fn watch_prefix(
    shared: Arc<Shared>,
    prefix: String,
    mut revision: i64,
    resync: fn() -> Event,
    change: fn(String, Option<Vec<u8>>, i64) -> Event,
) {
    loop {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut client = shared.client();
        let Ok(mut stream) = shared
            .timed(client.watch(prefix.as_str(), Some(options)))
            .await
        else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        loop {
            let Ok(Some(resp)) = stream.message().await else {
                break;
            };
            if resp.compact_revision() > 0 || resp.canceled() {
                let _ = shared.events.send(resync());
                revision = revision.max(resp.compact_revision() - 1);
                break;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                tracing::debug!(key, revision = kv.mod_revision(), "fleet: watch event");
                revision = revision.max(kv.mod_revision());
                let value = match event.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                };
                let _ = shared
                    .events
                    .send(change(key.to_owned(), value, kv.mod_revision()));
            }
        }
    }
}

fn node_event(shared: &Shared, kind: EventType, kv: &KeyValue) {
    let Some(name) = kv.key_str().ok().and_then(|k| shared.keys.node_of(k)) else {
        return;
    };
    let name = name.to_owned();
    let me = name == shared.config.node;
    match kind {
        EventType::Put => {
            let Some(info) = parse_node(shared, kv) else {
                return;
            };
            let old = lock(&shared.nodes).insert(name.clone(), info.clone());
            let same_life = old.as_ref().map(|o| o.registered_at) == Some(info.registered_at);
            if !me && !same_life {
                if old.is_some() {
                    let _ = shared.events.send(Event::NodeLost { node: name });
                }
                let _ = shared.events.send(Event::NodeJoined(info));
            }
        }
        EventType::Delete => {
            let old = lock(&shared.nodes).remove(&name);
            if !me && old.is_some() {
                let _ = shared.events.send(Event::NodeLost { node: name });
            }
        }
    }
}

fn parse_node(shared: &Shared, kv: &KeyValue) -> Option<NodeInfo> {
    let mut info: NodeInfo = serde_json::from_slice(kv.value()).ok()?;
    let name = kv.key_str().ok().and_then(|k| shared.keys.node_of(k))?;
    if info.node != name {
        return None;
    }
    info.registered_at = kv.create_revision();
    Some(info)
}

/// Every 10 ms, turns the fence into the status atomics, so a passed deadline fences the
/// relay even when nothing else happens.
async fn fence_tick(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        shared.tick();
    }
}

/// Whether the call failed before anything was sent: no connection to the member. (tonic
/// reports it as status Unavailable with a "tcp connect error" message.)
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.message().contains("tcp connect error"),
        _ => false,
    }
}

/// What `etcd-client` says when a keepalive stream opens on a lease the store does not have.
const LEASE_NOT_FOUND: &str = "lease not found";

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

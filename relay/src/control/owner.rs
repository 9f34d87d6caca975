//! The control thread: the one owner of the control core, the database and the publication of
//! changes to the workers.
//!
//! HTTP handlers, the workers' latch requests and a ticker feed it through channels; it handles
//! one thing at a time. For a change it writes the database in one transaction, publishes the
//! compiled rooms and waits for every worker, then commits; if any step fails it rolls the core
//! back, republishes what the core holds, and the transaction is never committed. Health,
//! readiness and metrics never come here: they read [`Shared`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, select};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::core::{Command, Core, DtlsReport, LocalIdentity, Now, Restore};
use super::error::{ApiError, Code};
use super::event::Event;
use super::geoip::Geoip;
use super::{Readiness, Shared};
use crate::io::DataPlane;
use crate::route::Latch;
use crate::store::{Store, StoreError};

pub mod fleet;

/// The answer to a request: status and JSON body, or an error.
pub type Answer = Result<(u16, Value), ApiError>;

/// What the HTTP side asks of the control thread.
pub enum Request {
    /// A command for the core, answered on the channel.
    Core(Box<Command>, oneshot::Sender<Answer>),
    /// `GET /v1/audit`.
    Audit {
        /// Entries after this seq.
        after: u64,
        /// At most this many.
        limit: usize,
        /// The answer.
        reply: oneshot::Sender<Answer>,
    },
    /// `GET /v1/transparency`.
    Transparency(oneshot::Sender<Answer>),
    /// SIGHUP: reopen the GeoIP database (if any) and attribute regions again.
    Reload,
    /// Fleet mode: the link to the fleet, joined; apply its rules and ack to lift the fence.
    Fleet(Box<fleet::FleetLink>),
    /// Fleet mode: a step of fleet call `id` came back from the fleet thread.
    FleetStep(u64, Box<fleet::Step>),
    /// The API's bound address, once known.
    Control(std::net::SocketAddr),
    /// `POST /v1/placements`.
    Placement {
        /// The region asked for.
        region: Option<String>,
        /// The answer.
        reply: oneshot::Sender<Answer>,
    },
    /// Save counters, audit the shutdown and stop.
    Stop,
}

/// The control thread's state.
pub struct Owner {
    core: Core,
    store: Store,
    plane: Arc<DataPlane>,
    shared: Arc<Shared>,
    geoip: Option<Geoip>,
    geoip_path: Option<std::path::PathBuf>,
    last_verify: Instant,
    /// Fleet mode: the link to etcd and the rule calls in progress.
    fleet: Option<Box<fleet::FleetLink>>,
    /// The API's address (placements name it when the relay runs alone).
    control: std::net::SocketAddr,
    certificate: crate::dtls::Certificate,
    /// Fingerprints for handshakes the DTLS thread already runs.
    dtls_orders: Option<Sender<super::dtls::Order>>,
}

/// How often housekeeping runs: rule expiry takes effect within a second.
const TICK: Duration = Duration::from_millis(250);
/// How often the audit chain is verified again (for the `relay_audit_chain_valid` metric).
const VERIFY_EVERY: Duration = Duration::from_secs(3600);

impl Owner {
    /// Restores rules, rooms and participants from `store`, installs every room in the workers
    /// and records the start in the audit log. The API must not answer before this returns.
    pub fn start(
        mut store: Store,
        plane: Arc<DataPlane>,
        shared: Arc<Shared>,
        limits: crate::config::Limits,
        geoip_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        let now = now();
        let expired = store
            .expire_overdue(now.unix())
            .map_err(|e| anyhow::anyhow!("expiring overdue rules: {e}"))?;
        let restore = Restore {
            rules: store.all_rules().map_err(store_err)?,
            counters: store.counters().map_err(store_err)?,
            next_rule: store.next_rule_id().map_err(store_err)?.0,
            rooms: store.rooms().map_err(store_err)?,
            participants: store.participants().map_err(store_err)?,
        };
        let geoip = geoip_path.as_deref().map(Geoip::open).transpose()?;
        let mut core = Core::new(
            limits,
            plane.workers(),
            shared.info.media_address,
            restore,
            now,
        )
        .map_err(|e| anyhow::anyhow!("restoring the state: {e}"))?;
        // One DTLS certificate per process (issue 13): its fingerprint goes in every answer.
        let certificate = crate::dtls::Certificate::generate(&mut rand::thread_rng())
            .map_err(|e| anyhow::anyhow!("generating the DTLS certificate: {e}"))?;
        core.set_identity(LocalIdentity {
            fingerprint: certificate.fingerprint().clone(),
            addresses: vec![shared.info.media_address],
        });
        let mut owner = Self {
            core,
            store,
            plane,
            shared,
            geoip,
            geoip_path,
            last_verify: Instant::now(),
            fleet: None,
            control: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            certificate,
            dtls_orders: None,
        };
        // Every room back in the workers before the API answers.
        owner
            .plane
            .publish(owner.core.install_all())
            .map_err(|e| anyhow::anyhow!("installing the restored rooms: {e}"))?;
        let (rooms, participants) = owner.core.sizes();
        let rules_in_force = owner.core.rule_metrics().len();
        owner
            .store
            .append(
                "relay_started",
                &json!({"rules_in_force": rules_in_force, "rooms": rooms, "participants": participants}),
            )
            .map_err(store_err)?;
        owner.verify_audit();
        for id in expired {
            owner.emit(Event::new("rule_expired", json!({"rule": id})));
        }
        owner.emit(Event::new(
            "relay_started",
            json!({
                "boot_id": owner.shared.info.boot_id,
                "started_at": owner.shared.info.started_at,
                "rooms": rooms,
                "participants": participants,
                "rules_in_force": rules_in_force,
            }),
        ));
        owner.refresh_gauges();
        Ok(owner)
    }

    /// Where fingerprints learnt late go to the DTLS thread.
    pub fn set_dtls_orders(&mut self, orders: Sender<super::dtls::Order>) {
        self.dtls_orders = Some(orders);
    }

    /// The process's DTLS certificate, for the DTLS thread.
    pub fn certificate(&self) -> crate::dtls::Certificate {
        self.certificate.clone()
    }

    /// Serves requests, latches, DTLS reports and ticks until [`Request::Stop`] or until every
    /// sender is gone.
    pub fn run(
        mut self,
        requests: Receiver<Request>,
        latches: Receiver<Latch>,
        dtls: Receiver<DtlsReport>,
    ) {
        let ticker = crossbeam_channel::tick(TICK);
        loop {
            let fleet_events = self
                .fleet
                .as_ref()
                .map_or_else(crossbeam_channel::never, |f| f.events());
            select! {
                recv(requests) -> r => match r {
                    Ok(Request::Stop) | Err(_) => break,
                    Ok(r) => self.request(r),
                },
                recv(latches) -> l => if let Ok(latch) = l {
                    // Nobody waits for a latch: a failure is logged and the client's next
                    // check retries.
                    if let Err(e) = self.run_command(Command::Latch(latch)) {
                        tracing::warn!(error = %e, "latching failed");
                    }
                },
                recv(dtls) -> d => if let Ok(report) = d
                    && let Err(e) = self.run_command(Command::Dtls(report))
                {
                    tracing::warn!(error = %e, "recording a DTLS state failed");
                },
                recv(ticker) -> _ => self.tick(),
                recv(fleet_events) -> e => if let Ok(event) = e {
                    self.fleet_event(event);
                },
            }
        }
        self.close();
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Core(cmd, reply) if self.fleet.is_some() && fleet::is_rule_change(&cmd) => {
                self.fleet_rule_change(*cmd, reply);
            }
            Request::Fleet(link) => self.fleet_attach(link),
            Request::Control(addr) => self.control = addr,
            Request::FleetStep(id, step) => self.fleet_step(id, *step),
            Request::Placement { region, reply } => {
                let _ = reply.send(self.placement(region.as_deref()));
            }
            Request::Core(cmd, reply) if self.fleet.is_some() => {
                match self.fleet_wrong_node(&cmd) {
                    Some(e) => {
                        let _ = reply.send(Err(e));
                    }
                    None => self.fleet_command(*cmd, reply),
                }
            }
            Request::Core(cmd, reply) => {
                let answer = self.run_command(*cmd);
                // The client may have gone; nothing to do about it.
                let _ = reply.send(answer);
            }
            Request::Audit {
                after,
                limit,
                reply,
            } => {
                let answer = self
                    .store
                    .entries(after, limit)
                    .map(|entries| (200, json!({ "entries": entries })))
                    .map_err(|e| ApiError::from_store(&e));
                let _ = reply.send(answer);
            }
            Request::Transparency(reply) => {
                let answer = self.transparency();
                if self.fleet.is_some() {
                    self.fleet_transparency(reply, answer);
                } else {
                    let _ = reply.send(answer);
                }
            }
            Request::Reload => self.reload(),
            Request::Stop => {}
        }
    }

    /// This relay's transparency report.
    fn transparency(&self) -> Answer {
        self.store
            .transparency(&self.core.rule_counters())
            .map_err(|e| ApiError::from_store(&e))
            .and_then(|t| {
                serde_json::to_value(t)
                    .map(|v| (200, v))
                    .map_err(|e| ApiError::new(Code::Internal, e.to_string()))
            })
    }

    /// Runs one command through the core and carries out what it changed.
    fn run_command(&mut self, cmd: Command) -> Answer {
        let now = now();
        let geoip = self.geoip.as_ref();
        let lookup = |ip| geoip.and_then(|g| g.region(ip));
        let handled = catch_unwind(AssertUnwindSafe(|| self.core.handle(now, &lookup, cmd)));
        let outcome = match handled {
            Ok(r) => r?,
            Err(panic) => {
                // A bug: answer 500 for this request only, and put the core back as it was.
                tracing::error!(panic = %panic_text(&panic), "the control core panicked");
                let updates = self.core.rollback();
                self.republish(updates);
                return Err(ApiError::new(
                    Code::Internal,
                    "the relay failed handling this request; it is logged",
                ));
            }
        };
        let mut ops = self.core.store_ops();
        ops.extend(outcome.store);
        let changed = !outcome.updates.is_empty();
        if (changed || !ops.is_empty())
            && let Err(e) = self.carry_out(outcome.updates, &ops)
        {
            let updates = self.core.rollback();
            self.republish(updates);
            return Err(e);
        }
        self.core.commit();
        if let Some(orders) = &self.dtls_orders {
            for (session, fingerprints) in outcome.fingerprints {
                // Bounded: if the DTLS thread is that far behind, the handshake times out and
                // the client tries again.
                let _ = orders.try_send(super::dtls::Order::Fingerprints {
                    session,
                    fingerprints,
                });
            }
        }
        let had_events = !outcome.events.is_empty();
        for event in outcome.events {
            if event.kind == "participant_latched" {
                self.shared.gauges.latches.fetch_add(1, Ordering::Relaxed);
            }
            self.emit(event);
        }
        if changed || had_events {
            self.refresh_gauges();
        }
        Ok(outcome.reply.unwrap_or((204, Value::Null)))
    }

    /// Writes, publishes, commits: in that order, so the database holds only what the workers
    /// served, and the API answers only once both are done.
    fn carry_out(
        &mut self,
        updates: Vec<crate::route::Update>,
        ops: &[crate::store::StoreOp],
    ) -> Result<(), ApiError> {
        let batch = self.store.begin().map_err(|e| store_failure(&e))?;
        batch.apply(ops).map_err(|e| store_failure(&e))?;
        self.plane.publish(updates).map_err(|e| {
            tracing::error!(error = %e, "publishing to the workers failed");
            ApiError::new(Code::WorkersUnavailable, e.to_string())
        })?;
        batch.commit().map_err(|e| store_failure(&e))?;
        Ok(())
    }

    /// After a rollback: publish the rooms as the core holds them again (their previous
    /// snapshots, over the slots the failed update changed). A worker that applied the failed
    /// update, or applies it late, applies these after it (its channel is FIFO), so every worker
    /// ends up serving exactly what the core holds.
    fn republish(&mut self, updates: Vec<crate::route::Update>) {
        if let Err(e) = self.plane.publish(updates) {
            tracing::error!(error = %e, "republishing after a rollback is still pending");
        }
    }

    fn tick(&mut self) {
        if let Err(e) = self.run_command(Command::Tick) {
            tracing::error!(error = %e, "housekeeping failed; retrying");
        }
        self.fleet_tick();
        if self.last_verify.elapsed() >= VERIFY_EVERY {
            self.verify_audit();
        }
    }

    fn reload(&mut self) {
        if let Some(path) = &self.geoip_path {
            match Geoip::open(path) {
                Ok(db) => {
                    self.geoip = Some(db);
                    tracing::info!("GeoIP database reloaded");
                    if let Err(e) = self.run_command(Command::Reattribute) {
                        tracing::error!(error = %e, "attributing regions again failed");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reloading the GeoIP database failed; keeping the old one")
                }
            }
        }
    }

    fn verify_audit(&mut self) {
        self.last_verify = Instant::now();
        let ok = match self.store.verify() {
            Ok(_) => 1,
            Err(e) => {
                tracing::error!(error = %e, "the audit chain does not verify");
                0
            }
        };
        self.shared.gauges.audit_valid.store(ok, Ordering::Relaxed);
    }

    /// Logs a carried-out change (ids only: events never hold an address) and publishes it.
    fn emit(&self, event: Event) {
        let d = &event.data;
        let field = |k: &str| d.get(k).map(|v| v.to_string().trim_matches('"').to_owned());
        tracing::info!(
            room = field("room"),
            participant = field("participant"),
            rule = field("rule"),
            reason = field("reason"),
            "{}",
            event.kind.replace('_', " ")
        );
        self.fleet_publish(&event);
        self.shared.events.publish(event, SystemTime::now());
    }

    fn refresh_gauges(&self) {
        let (rooms, participants) = self.core.sizes();
        let g = &self.shared.gauges;
        g.rooms.store(rooms as u64, Ordering::Relaxed);
        g.participants.store(participants as u64, Ordering::Relaxed);
        self.shared.set_readiness(if self.core.draining() {
            Readiness::Draining
        } else {
            Readiness::Serving
        });
        self.shared.set_rules(self.core.rule_metrics());
    }

    /// Saves counters and records the shutdown in the audit log.
    fn close(&mut self) {
        let batch = self.store.begin().and_then(|b| {
            b.apply(&[crate::store::StoreOp::SaveCounters(
                self.core.rule_counters(),
            )])?;
            b.commit()
        });
        if let Err(e) = batch {
            tracing::error!(error = %e, "saving rule counters failed");
        }
        let rules_in_force = self.core.rule_metrics().len();
        if let Err(e) = self
            .store
            .append("relay_stopped", &json!({"rules_in_force": rules_in_force}))
        {
            tracing::error!(error = %e, "recording the shutdown failed");
        }
        if let Some(link) = self.fleet.take() {
            // Peers see this relay go at once instead of after its lease's TTL.
            link.stop();
        }
    }
}

/// Starts the control thread; returns the channel to it.
pub fn spawn(
    owner: Owner,
    latches: Receiver<Latch>,
    dtls: Receiver<DtlsReport>,
) -> std::io::Result<(Sender<Request>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(REQUEST_QUEUE);
    let handle = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || owner.run(rx, latches, dtls))?;
    Ok((tx, handle))
}

/// Requests that may wait for the control thread; the HTTP side bounds requests in flight
/// below this, so a send never blocks a runtime thread for long.
const REQUEST_QUEUE: usize = 1024;

fn now() -> Now {
    Now {
        wall: SystemTime::now(),
        mono: Instant::now(),
    }
}

fn store_err(e: StoreError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn store_failure(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "the database failed");
    ApiError::from_store(e)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

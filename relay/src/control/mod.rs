//! The control plane: the HTTP API, the control core and its owner thread, events, metrics.
//!
//! ```text
//!  HTTP (tokio runtime "control-http", hyper + axum)      workers (latch requests)
//!        │ parse, authenticate, serialize                        │
//!        ▼                                                      ▼
//!  owner thread "control": Core (pure) + Store (SQLite) + DataPlane::publish
//!        │ events                  │ gauges, rule counters
//!        ▼                         ▼
//!  EventLog ── GET /v1/events      Shared ── /healthz, /readyz, /metrics (never wait)
//! ```
//!
//! Handlers only parse, authenticate and serialize; every decision is the control core's
//! ([`core`]), carried out by one thread ([`owner`]). Health, readiness and metrics read
//! [`Shared`] (atomics and short locks) and never wait for the owner, so a slow database commit or
//! a worker's acknowledgement never holds up a probe or a scrape.

pub mod body;
pub mod core;
pub mod dtls;
pub mod error;
pub mod event;
mod geoip;
mod http;
mod metrics;
pub mod owner;
pub mod view;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::Sender;

pub use self::core::rfc3339;
pub use geoip::Geoip;
pub use http::openapi_document;

use crate::config::Limits;
use crate::io::DataPlane;
use crate::store::Store;
use event::EventLog;
use owner::{Owner, Request};

/// How the control plane is set up.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// The API's address.
    pub control: SocketAddr,
    /// An optional second address serving only `/healthz`, `/readyz` and `/metrics`.
    pub ops: Option<SocketAddr>,
    /// Bearer tokens accepted on `/v1` calls; empty: none needed.
    pub tokens: Vec<String>,
    /// API limits.
    pub limits: Limits,
    /// The GeoIP database, reopened on SIGHUP.
    pub geoip: Option<PathBuf>,
    /// The IP clients are told to send media to, when not the bound one.
    pub advertise: Option<std::net::IpAddr>,
    /// Where events are also POSTed, signed.
    pub webhook: Option<webhook::WebhookConfig>,
    /// Fleet mode: how to join, and the status the workers read.
    pub fleet: Option<FleetSetup>,
    /// The data directory (the fleet's audit chain is mirrored in its `fleet/`).
    pub data_dir: PathBuf,
}

/// What the control plane needs to join a fleet.
#[derive(Clone, Debug)]
pub struct FleetSetup {
    /// The `--etcd`, `--node`, `--trunk` and `--region` settings.
    pub settings: crate::config::FleetSettings,
    /// The status the data plane was started with ([`crate::io::DataPlaneConfig::fence`]).
    pub status: Arc<crate::fleet::Status>,
}

/// The running control plane.
pub struct Control {
    shared: Arc<Shared>,
    owner_tx: Sender<Request>,
    owner: Option<JoinHandle<()>>,
    servers: Vec<http::Server>,
    runtime: Option<tokio::runtime::Runtime>,
    webhook_stop: tokio::sync::watch::Sender<bool>,
}

impl Control {
    /// Restores the state from `store` into the workers, then starts serving. When this returns
    /// every room and participant the database kept is back and the API answers.
    pub fn start(
        config: ControlConfig,
        store: Store,
        plane: Arc<DataPlane>,
    ) -> anyhow::Result<Self> {
        let mut store = store;
        let run = store
            .next_run()
            .map_err(|e| anyhow::anyhow!("counting this start: {e}"))?;
        let bound = plane.local_addr();
        let media_address = config
            .advertise
            .map_or(bound, |ip| SocketAddr::new(ip, bound.port()));
        let started = SystemTime::now();
        let shared = Arc::new(Shared {
            info: Info {
                media_address,
                media_bound: bound,
                backend: plane.backend().name(),
                workers: plane.workers(),
                boot_id: boot_id(),
                started_at: rfc3339(started),
            },
            plane: plane.clone(),
            tokens: RwLock::new(Arc::new(config.tokens.clone())),
            events: EventLog::new(run, config.limits.event_history),
            gauges: Gauges::default(),
            readiness: AtomicU8::new(Readiness::Starting as u8),
            rules: Mutex::new(Arc::new(Vec::new())),
            trunks: Mutex::new(Vec::new()),
            http: http::Stats::default(),
            webhook: webhook::WebhookStats::default(),
            fleet: config.fleet.as_ref().map(|f| f.status.clone()),
            dtls: Arc::default(),
        });
        let latches = plane.latches().clone();
        let dtls_inbound = plane.dtls_inbound().clone();
        let dtls_socket = plane.dtls_socket()?;
        let mut owner = Owner::start(store, plane, shared.clone(), config.limits, config.geoip)?;
        let (report_tx, reports) = crossbeam_channel::bounded(DTLS_REPORTS);
        let (order_tx, orders) = crossbeam_channel::bounded(DTLS_REPORTS);
        owner.set_dtls_orders(order_tx);
        dtls::spawn(
            owner.certificate(),
            dtls_inbound,
            orders,
            dtls_socket,
            report_tx,
            shared.dtls.clone(),
        )?;
        let (owner_tx, handle) = owner::spawn(owner, latches, reports)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("control-http")
            .enable_all()
            .build()?;
        let mut servers = vec![http::Server::start(
            &runtime,
            config.control,
            http::Surface::Api,
            shared.clone(),
            owner_tx.clone(),
        )?];
        let _ = owner_tx.send(Request::Control(servers[0].addr));
        if let Some(setup) = &config.fleet {
            // Joins while the API already answers (`/readyz` says `fenced`); the relay forwards
            // nothing until the control thread has applied the fleet's rules and acked.
            let link = owner::fleet::join(
                &setup.settings,
                setup.status.clone(),
                servers[0].addr,
                &config.data_dir,
                owner_tx.clone(),
            )?;
            owner_tx
                .send(Request::Fleet(Box::new(link)))
                .map_err(|_| anyhow::anyhow!("the control thread stopped"))?;
        }
        let (webhook_stop, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(hook) = config.webhook {
            runtime.spawn(webhook::run(hook, shared.clone(), stop_rx));
        }
        if let Some(ops) = config.ops {
            servers.push(http::Server::start(
                &runtime,
                ops,
                http::Surface::Ops,
                shared.clone(),
                owner_tx.clone(),
            )?);
        }
        Ok(Self {
            shared,
            owner_tx,
            owner: Some(handle),
            servers,
            runtime: Some(runtime),
            webhook_stop,
        })
    }

    /// The API's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.servers[0].addr
    }

    /// The ops listener's bound address, if any.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.servers.get(1).map(|s| s.addr)
    }

    /// SIGHUP: new control tokens take effect at once (old ones stop working) and the GeoIP
    /// database is reopened. Forwarding is not touched.
    pub fn reload(&self, tokens: Option<Vec<String>>) {
        if let Some(tokens) = tokens {
            self.shared.set_tokens(tokens);
        }
        let _ = self.owner_tx.send(Request::Reload);
    }

    /// Stops: readiness turns off, the listeners stop accepting, requests in progress finish
    /// (streams are ended), then the control thread saves counters and audits the stop.
    pub fn stop(mut self) {
        self.shared.set_readiness(Readiness::Stopping);
        let _ = self.webhook_stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            for s in self.servers.drain(..) {
                s.stop(&runtime);
            }
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
        }
        let _ = self.owner_tx.send(Request::Stop);
        if let Some(h) = self.owner.take() {
            let _ = h.join();
        }
    }
}

/// What health, readiness, metrics and the HTTP side read without asking the control thread.
pub struct Shared {
    pub(crate) info: Info,
    pub(crate) plane: Arc<DataPlane>,
    tokens: RwLock<Arc<Vec<String>>>,
    pub(crate) events: EventLog,
    pub(crate) gauges: Gauges,
    readiness: AtomicU8,
    rules: Mutex<Arc<Vec<view::RuleMetric>>>,
    pub(crate) http: http::Stats,
    pub(crate) webhook: webhook::WebhookStats,
    /// Fleet mode: the fencing status (`/readyz`, `relay_fleet_fenced`).
    pub(crate) fleet: Option<Arc<crate::fleet::Status>>,
    /// The DTLS thread's counters (`relay_dtls_*`).
    pub(crate) dtls: Arc<dtls::Stats>,
    /// Fleet mode: trunk counters by peer node name (`relay_trunk_packets_*_total`).
    pub(crate) trunks: Mutex<Vec<(String, Arc<crate::route::TrunkCounters>)>>,
}

/// What does not change while the relay runs.
pub(crate) struct Info {
    pub(crate) media_address: SocketAddr,
    pub(crate) media_bound: SocketAddr,
    pub(crate) backend: &'static str,
    pub(crate) workers: usize,
    pub(crate) boot_id: String,
    pub(crate) started_at: String,
}

/// Gauges and counters the control thread keeps up to date.
#[derive(Default)]
pub(crate) struct Gauges {
    pub(crate) rooms: AtomicU64,
    pub(crate) participants: AtomicU64,
    pub(crate) latches: AtomicU64,
    /// 1 when the audit chain verified at its last check, 0 when it did not, -1 not yet checked.
    pub(crate) audit_valid: AtomicI64,
    /// Live relays of the fleet, this one included (fleet mode).
    pub(crate) fleet_nodes: AtomicU64,
}

/// Whether the relay takes new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Readiness {
    /// Restoring state; not serving yet.
    Starting = 0,
    /// Serving.
    Serving = 1,
    /// `POST /v1/drain`: existing rooms go on, new ones are refused.
    Draining = 2,
    /// Shutting down.
    Stopping = 3,
}

impl Shared {
    pub(crate) fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::Relaxed) {
            0 => Readiness::Starting,
            1 => Readiness::Serving,
            2 => Readiness::Draining,
            _ => Readiness::Stopping,
        }
    }

    pub(crate) fn set_readiness(&self, r: Readiness) {
        // Stopping is final.
        let _ = self
            .readiness
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old != Readiness::Stopping as u8).then_some(r as u8)
            });
    }

    pub(crate) fn tokens(&self) -> Arc<Vec<String>> {
        self.tokens
            .read()
            .map_or_else(|e| e.into_inner().clone(), |t| t.clone())
    }

    fn set_tokens(&self, tokens: Vec<String>) {
        let mut t = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        *t = Arc::new(tokens);
    }

    pub(crate) fn rules(&self) -> Arc<Vec<view::RuleMetric>> {
        self.rules
            .lock()
            .map_or_else(|e| e.into_inner().clone(), |r| r.clone())
    }

    pub(crate) fn set_rules(&self, rules: Vec<view::RuleMetric>) {
        let mut r = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        *r = Arc::new(rules);
    }

    /// Trunk counters by peer node name (fleet mode).
    pub(crate) fn trunks(&self) -> Vec<(String, Arc<crate::route::TrunkCounters>)> {
        self.trunks
            .lock()
            .map_or_else(|e| e.into_inner().clone(), |t| t.clone())
    }

    pub(crate) fn set_trunks(&self, trunks: Vec<(String, Arc<crate::route::TrunkCounters>)>) {
        let mut t = self.trunks.lock().unwrap_or_else(|e| e.into_inner());
        *t = trunks;
    }
}

/// A random id for this run, from the OS-seeded CSPRNG.
fn boot_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fresh relay-side ICE credentials from the OS-seeded CSPRNG (RFC 8445 §5.3: ufrag ≥ 24 bits,
/// pwd ≥ 128 bits of randomness).
/// DTLS state changes waiting for the control thread.
const DTLS_REPORTS: usize = 4096;

pub(crate) fn generate_ice() -> body::IceBody {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
            .collect()
    };
    body::IceBody {
        ufrag: pick(8),
        pwd: pick(24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ice_is_valid() {
        let a = generate_ice();
        let b = generate_ice();
        assert!(body::check_ice(&a).is_ok());
        assert_ne!(a, b);
        assert_eq!(boot_id().len(), 32);
    }
}

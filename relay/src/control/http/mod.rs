//! The HTTP server of the control API: hyper on the control plane's own tokio runtime, never on
//! a worker thread.
//!
//! What a hostile or slow client can cost is bounded:
//! - headers must arrive within [`HEADER_TIMEOUT`] (hyper's header read timer, which also
//!   starts when a kept-alive connection waits for its next request, so it bounds idle
//!   connections too);
//! - a body must arrive whole within [`BODY_TIMEOUT`] (`408 request_timeout`) and be at most
//!   [`MAX_BODY`](super::body::MAX_BODY) bytes (`413 body_too_large`); a handler that does not
//!   read a body drops it, and hyper then closes the connection instead of draining it;
//! - at most [`MAX_CONNECTIONS`] connections are open: past that, new ones are closed at once;
//! - at most [`MAX_IN_FLIGHT`] `/v1` requests are in progress: past that, `503 overloaded`;
//!   `/healthz`, `/readyz` and `/metrics` are outside that limit and never wait for the control
//!   thread;
//! - a panic in a handler answers `500 internal` for that request only.
//!
//! Stopping is graceful: the listener closes, event streams end, requests in progress get
//! [`SHUTDOWN_GRACE`] to finish.

mod events;
mod routes;
mod stats;
mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crossbeam_channel::Sender;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub(crate) use stats::Stats;

use super::Shared;
use super::error::{ApiError, Code};
use super::owner::Request;

pub use routes::openapi_document;

/// Time a client has to send a request's headers (and an idle kept-alive connection has before
/// it is closed).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a whole request body.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener.
pub(crate) const MAX_CONNECTIONS: usize = 512;
/// `/v1` requests in progress per listener.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Time requests in progress get to finish when the relay stops.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// Everything: the API, health, readiness, metrics.
    Api,
    /// `/healthz`, `/readyz` and `/metrics` only (`--ops`).
    Ops,
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) shared: Arc<Shared>,
    pub(crate) owner: Sender<Request>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) in_flight: Arc<Semaphore>,
}

/// One listening server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves `surface` on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Runtime,
        addr: SocketAddr,
        surface: Surface,
        shared: Arc<Shared>,
        owner: Sender<Request>,
    ) -> anyhow::Result<Self> {
        let listener = runtime
            .block_on(TcpListener::bind(addr))
            .map_err(|e| anyhow::anyhow!("binding the control API to {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let app = App {
            shared,
            owner,
            stop: stop_rx.clone(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        let router = routes::router(surface, app);
        let task = runtime.spawn(serve(listener, router, stop_rx));
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting, ends streams, and waits up to [`SHUTDOWN_GRACE`] for requests in progress.
    pub(crate) fn stop(self, runtime: &tokio::runtime::Runtime) {
        let _ = self.stop.send(true);
        let _ =
            runtime.block_on(async { tokio::time::timeout(SHUTDOWN_GRACE * 2, self.task).await });
    }
}

async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a control connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over the connection limit: close at once (dropping the stream).
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, header timeout): nothing to do.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// A JSON reply with a status.
pub(crate) fn json_reply(status: u16, body: &serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_value(self.body()).unwrap_or_default();
        json_reply(self.status(), &body)
    }
}

/// Reads a whole request body: at most `MAX_BODY` bytes, within [`BODY_TIMEOUT`].
pub(crate) async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, super::body::MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            Code::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            Code::InvalidJson,
            format!("reading the body failed: {e}"),
        )),
    }
}

pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        Code::BodyTooLarge,
        format!(
            "request bodies are limited to {} bytes",
            super::body::MAX_BODY
        ),
    )
}

/// The 500 answer to a handler that panicked.
pub(crate) fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a control API handler panicked");
    ApiError::new(
        Code::Internal,
        "the relay failed handling this request; it is logged",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::control::{Gauges, Info, Readiness};
    use crate::io::{DataPlane, DataPlaneConfig};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// A handler that panics answers 500 `internal` for its request only; the server goes on.
    #[test]
    fn a_panic_answers_500_for_that_request_only() {
        let plane = Arc::new(
            DataPlane::start(&DataPlaneConfig {
                media: "127.0.0.1:0".parse().unwrap(),
                pin: false,
                ..DataPlaneConfig::default()
            })
            .unwrap(),
        );
        let shared = Arc::new(Shared {
            info: Info {
                media_address: plane.local_addr(),
                media_bound: plane.local_addr(),
                backend: "mmsg",
                workers: 1,
                boot_id: "b".into(),
                started_at: "t".into(),
            },
            plane,
            tokens: std::sync::RwLock::new(Arc::new(Vec::new())),
            events: crate::control::event::EventLog::new(1, 16),
            gauges: Gauges::default(),
            readiness: std::sync::atomic::AtomicU8::new(Readiness::Serving as u8),
            rules: std::sync::Mutex::new(Arc::new(Vec::new())),
            http: Stats::default(),
            webhook: crate::control::webhook::WebhookStats::default(),
            fleet: None,
            dtls: Arc::default(),
            trunks: std::sync::Mutex::new(Vec::new()),
        });
        let (owner, _rx) = crossbeam_channel::bounded(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let app = App {
            shared: shared.clone(),
            owner,
            stop: stop_rx.clone(),
            in_flight: Arc::new(Semaphore::new(4)),
        };
        let routes = Router::new()
            .route(
                "/v1/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("a bug");
                    }
                    "never"
                }),
            )
            .route("/v1/fine", axum::routing::get(|| async { "fine" }));
        let router = routes::layered(routes, app);
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = runtime.spawn(serve(listener, router, stop_rx));
        let thread = std::thread::spawn(move || {
            let boom = get(addr, "/v1/boom");
            let fine = get(addr, "/v1/fine");
            let again = get(addr, "/v1/boom");
            (boom, fine, again)
        });
        let (boom, fine, again) = runtime.block_on(async {
            loop {
                if thread.is_finished() {
                    break thread.join().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(boom.starts_with("HTTP/1.1 500"), "{boom}");
        assert!(boom.contains("\"code\":\"internal\""), "{boom}");
        assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
        assert!(again.starts_with("HTTP/1.1 500"), "{again}");
        let mut metrics = String::new();
        shared.http.render(&mut metrics);
        assert!(
            metrics.contains("route=\"/v1/boom\",method=\"GET\",status=\"500\"} 2"),
            "{metrics}"
        );
        let _ = stop.send(true);
        runtime.block_on(task).unwrap();
    }
}

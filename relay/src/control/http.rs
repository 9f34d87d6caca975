//! The HTTP/JSON control API: request parsing, authentication, routing to [`State`].
//!
//! A few handler threads accept requests; each reads and checks its request (size, token, JSON)
//! before taking the state lock, so a slow or hostile client never holds up the others' changes.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use super::api::{ApiError, MAX_BODY};
use super::metrics;
use super::state::State;

/// Handler threads.
const THREADS: usize = 4;

/// The running control API.
pub struct ControlServer {
    server: Arc<Server>,
    threads: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    token: Option<String>,
    stopping: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds `addr` and starts serving `state`.
    pub fn start(addr: SocketAddr, state: State, token: Option<String>) -> anyhow::Result<Self> {
        let server = Arc::new(
            Server::http(addr)
                .map_err(|e| anyhow::anyhow!("binding the control API to {addr}: {e}"))?,
        );
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow::anyhow!("control API has no IP address"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            token,
            stopping: stopping.clone(),
        });
        let mut threads: Vec<JoinHandle<()>> = (0..THREADS)
            .map(|i| {
                let server = server.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("control-{i}"))
                    .spawn(move || serve(&server, &shared))
            })
            .collect::<Result<_, _>>()?;
        let latcher = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("control-latch".into())
                .spawn(move || apply_latches(&latcher))?,
        );
        let ticker = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("control-tick".into())
                .spawn(move || tick(&ticker))?,
        );
        let closer = shared;
        Ok(Self {
            server,
            threads,
            stopping,
            addr,
            shared: closer,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits for the handlers to finish the ones they hold.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Ok(mut state) = self.shared.state.lock() {
            state.close();
        }
    }
}

/// Applies latch requests from the workers as they come.
fn apply_latches(shared: &Shared) {
    let rx = match shared.state.lock() {
        Ok(state) => state.plane().latches().clone(),
        Err(_) => return,
    };
    while !shared.stopping.load(Ordering::SeqCst) {
        if let Ok(latch) = rx.recv_timeout(Duration::from_millis(100))
            && let Ok(mut state) = shared.state.lock()
        {
            state.latch(latch);
        }
    }
}

/// Expires rules and saves counters, four times a second, so an expiry takes effect within 1 s.
fn tick(shared: &Shared) {
    while !shared.stopping.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        if let Ok(mut state) = shared.state.lock() {
            state.tick();
        }
    }
}

fn serve(server: &Server, shared: &Shared) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(request)) => handle(request, shared),
            Ok(None) => {}
            Err(_) => break,
        }
    }
}

fn handle(mut request: Request, shared: &Shared) {
    let (status, body, content_type) = match respond(&mut request, shared) {
        Ok(Reply::Json(status, v)) => (status, v.to_string(), "application/json"),
        Ok(Reply::Text(text)) => (200, text, "text/plain; version=0.0.4"),
        Err(e) => (e.status, e.body().to_string(), "application/json"),
    };
    let header = Header::from_bytes("Content-Type", content_type).expect("static header");
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    // The client may have gone; nothing to do about it.
    let _ = request.respond(response);
}

enum Reply {
    Json(u16, Value),
    Text(String),
}

fn respond(request: &mut Request, shared: &Shared) -> Result<Reply, ApiError> {
    let url = request.url().to_owned();
    let path = url.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();

    if segments.first() == Some(&"v1") {
        authorize(request, shared.token.as_deref())?;
    }
    let body = read_body(request)?;
    let mut state = shared
        .state
        .lock()
        .map_err(|_| ApiError::new(500, "internal", "state lock poisoned"))?;
    let ok = |v: Value| Ok(Reply::Json(200, v));
    let created = |(new, v): (bool, Value)| Ok(Reply::Json(if new { 201 } else { 200 }, v));
    use Method::{Delete, Get, Patch, Post, Put};
    match (&method, segments.as_slice()) {
        (Get, ["healthz"]) => {
            if state.plane().healthy() {
                ok(json!({"status": "ok"}))
            } else {
                Err(ApiError::new(503, "unhealthy", "a worker has stopped"))
            }
        }
        (Get, ["metrics"]) => Ok(Reply::Text(metrics::render(&state))),
        (Get, ["v1", "info"]) => ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "media_addresses": [state.media_address().to_string()],
            "media_bound": state.plane().local_addr().to_string(),
            "backend": state.plane().backend().name(),
            "workers": state.plane().workers(),
        })),
        (Get, ["v1", "rooms"]) => ok(state.list_rooms()),
        (Put, ["v1", "rooms", room]) => created(state.put_room(room)?),
        (Get, ["v1", "rooms", room]) => ok(state.get_room(room)?),
        (Delete, ["v1", "rooms", room]) => ok(state.delete_room(room)?),
        (Put, ["v1", "rooms", room, "participants", id]) => {
            let b = parse_json(&body)?;
            created(state.put_participant(room, id, b)?)
        }
        (Patch, ["v1", "rooms", room, "participants", id]) => {
            let b = parse_json(&body)?;
            ok(state.patch_participant(room, id, b)?)
        }
        (Get, ["v1", "rooms", room, "participants", id]) => ok(state.get_participant(room, id)?),
        (Delete, ["v1", "rooms", room, "participants", id]) => {
            ok(state.delete_participant(room, id)?)
        }
        (Post, ["v1", "rules"]) => Ok(Reply::Json(201, state.post_rule(&body)?)),
        (Get, ["v1", "rules"]) => ok(state.list_rules()?),
        (Get, ["v1", "rules", id]) => ok(state.get_rule(id)?),
        (Delete, ["v1", "rules", id]) => ok(state.delete_rule(id, &body)?),
        (Get, ["v1", "audit"]) => {
            let after = query(&url, "after")?.unwrap_or(0);
            let limit = query(&url, "limit")?.unwrap_or(1000).min(10_000) as usize;
            ok(state.audit(after, limit)?)
        }
        (Get, ["v1", "transparency"]) => ok(state.transparency()?),
        _ => Err(ApiError::new(
            404,
            "no_such_endpoint",
            format!("no endpoint {method} {path}"),
        )),
    }
}

/// Requires `Authorization: Bearer <token>` when a token is configured.
fn authorize(request: &Request, token: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            401,
            "unauthorized",
            "this relay requires Authorization: Bearer <token>",
        ))
    }
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("reading the body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// A numeric query parameter, e.g. `after` in `/v1/audit?after=10`.
fn query(url: &str, name: &str) -> Result<Option<u64>, ApiError> {
    let Some((_, q)) = url.split_once('?') else {
        return Ok(None);
    };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return v.parse().map(Some).map_err(|_| {
                ApiError::bad_request("invalid_query", format!("{name} must be a whole number"))
            });
        }
    }
    Ok(None)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "missing_body",
            "a JSON body is required",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}

//! The endpoints: each handler parses and checks its request, asks the control thread, and
//! serializes the answer. The OpenAPI document is generated from these handlers and the types
//! they name, so every route the server answers is in it.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{App, Surface, json_reply, panicked, read_body};
use crate::control::body::{LiftBody, ParticipantBody, ParticipantPatch, RoomBody, parse_json};
use crate::control::core::Command;
use crate::control::error::{ApiError, Code, ErrorBody};
use crate::control::owner::fleet::{Placement, PlacementBody};
use crate::control::owner::{Answer, Request as OwnerRequest};
use crate::control::view;
use crate::control::{Readiness, generate_ice, metrics};
use crate::rules::RuleSpec;
use crate::store::{AuditEntry, Transparency};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "relay control API",
        description = "Rooms, participants and scoped drop rules of a media relay. Every /v1 \
            call needs `Authorization: Bearer <token>` when the relay has control tokens. Errors \
            are `{\"error\": {\"code\", \"message\"}}`; docs/API.md lists every code.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody, AuditEntry, Transparency, RuleSpec)),
    tags(
        (name = "health", description = "Probes and metrics: no token, never wait"),
        (name = "rooms", description = "Rooms and participants"),
        (name = "rules", description = "Scoped drop rules, audit log and transparency report"),
        (name = "relay", description = "The relay itself: information, drain, events, this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(info))
        .routes(routes!(openapi_json))
        .routes(routes!(super::events::events))
        .routes(routes!(drain, undrain))
        .routes(routes!(list_rooms))
        .routes(routes!(put_room, get_room, delete_room))
        .routes(routes!(
            put_participant,
            get_participant,
            patch_participant,
            delete_participant
        ))
        .routes(routes!(super::webrtc::webrtc_publish))
        .routes(routes!(
            super::webrtc::webrtc_offer,
            super::webrtc::webrtc_answer
        ))
        .routes(routes!(post_rule, list_rules))
        .routes(routes!(get_rule, delete_rule))
        .routes(routes!(audit))
        .routes(routes!(transparency))
        .routes(routes!(post_placement))
}

/// The OpenAPI document of the control API, as `GET /v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The router of one listener, with its layers.
pub(crate) fn router(surface: Surface, app: App) -> Router {
    let routes: Router<App> = match surface {
        Surface::Api => api().split_for_parts().0,
        Surface::Ops => Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text)),
    };
    layered(routes, app)
}

/// Wraps routes in what every request goes through: panics caught, requests counted, `/v1`
/// guarded; anything unrouted is `no_such_endpoint`.
pub(super) fn layered(routes: Router<App>, app: App) -> Router {
    routes
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(no_such_endpoint)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(middleware::from_fn_with_state(app.clone(), record))
        .with_state(app)
}

/// For `/v1`: the token, then a place among the requests in flight.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return next.run(req).await;
    }
    if let Err(e) = authorize(req.headers(), &app.shared.tokens()) {
        return e.into_response();
    }
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            Code::Overloaded,
            "too many API requests in progress; retry shortly",
        )
        .into_response();
    };
    next.run(req).await
}

/// Counts every request by route, method and status, and times it.
async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = method_name(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    app.shared.http.record(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Requires `Authorization: Bearer <token>` with one of the valid tokens, when there are any.
fn authorize(headers: &HeaderMap, tokens: &[String]) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare with every token, without an early exit, so the time taken reveals nothing.
    let mut ok = false;
    for t in tokens {
        ok |= constant_time_eq(given.as_bytes(), t.as_bytes());
    }
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::Unauthorized,
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

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn no_such_endpoint(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        Code::NoSuchEndpoint,
        format!("no endpoint {method} {}", uri.path()),
    )
    .into_response()
}

/// Sends a request to the control thread and waits for its answer.
async fn ask(app: &App, make: impl FnOnce(oneshot::Sender<Answer>) -> OwnerRequest) -> Response {
    let (tx, rx) = oneshot::channel();
    if app.owner.try_send(make(tx)).is_err() {
        return ApiError::new(
            Code::Overloaded,
            "the control thread is not taking requests; retry shortly",
        )
        .into_response();
    }
    match rx.await {
        Ok(Ok((status, body))) => json_reply(status, &body),
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::new(Code::Internal, "the control thread stopped").into_response(),
    }
}

pub(super) async fn command(app: &App, cmd: Command) -> Response {
    ask(app, |tx| OwnerRequest::Core(Box::new(cmd), tx)).await
}

pub(super) fn path_error(_: PathRejection) -> Response {
    ApiError::new(
        Code::InvalidId,
        "ids in the path must be 1 to 128 bytes of [A-Za-z0-9._-]",
    )
    .into_response()
}

/// Reads and parses a JSON body.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    parse_json(&read_body(body).await?)
}

macro_rules! path_or_reply {
    ($p:expr) => {
        match $p {
            Ok(Path(v)) => v,
            Err(e) => return path_error(e),
        }
    };
}

macro_rules! body_or_reply {
    ($b:expr) => {
        match read_body($b).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        }
    };
}

/// Liveness: the process answers and every worker runs.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "Every worker runs", body = view::Status),
        (status = 503, description = "A worker stopped (`unhealthy`)", body = ErrorBody),
    ))]
async fn healthz(State(app): State<App>) -> Response {
    if app.shared.plane.healthy() {
        json_reply(200, &serde_json::json!({"status": "ok"}))
    } else {
        ApiError::new(Code::Unhealthy, "a worker has stopped").into_response()
    }
}

/// Readiness: serving. 503 while starting, draining or stopping.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Serving", body = view::Status),
        (status = 503, description = "Starting or stopping (`not_ready`), draining (`draining`), a worker stopped (`unhealthy`), or fenced from the fleet (`fenced`)", body = ErrorBody),
    ))]
async fn readyz(State(app): State<App>) -> Response {
    if !app.shared.plane.healthy() {
        return ApiError::new(Code::Unhealthy, "a worker has stopped").into_response();
    }
    if app.shared.fleet.as_ref().is_some_and(|f| f.fenced()) {
        return ApiError::new(
            Code::Fenced,
            "the relay is fenced from its fleet (joining, catching up with the rules, or its \
             etcd lease is lost): it forwards nothing",
        )
        .into_response();
    }
    match app.shared.readiness() {
        Readiness::Serving => json_reply(200, &serde_json::json!({"status": "ok"})),
        Readiness::Draining => ApiError::new(
            Code::Draining,
            "the relay is draining: it takes no new rooms",
        )
        .into_response(),
        Readiness::Starting => {
            ApiError::new(Code::NotReady, "the relay is starting").into_response()
        }
        Readiness::Stopping => {
            ApiError::new(Code::NotReady, "the relay is stopping").into_response()
        }
    }
}

/// Prometheus text exposition (docs/API.md lists the series).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics::render(&app.shared),
    )
        .into_response()
}

/// The relay: version, addresses, backend, and this run's boot id.
#[utoipa::path(get, path = "/v1/info", tag = "relay", security(("bearer" = [])),
    responses((status = 200, body = view::Info), (status = 401, body = ErrorBody)))]
async fn info(State(app): State<App>) -> Response {
    let i = &app.shared.info;
    let v = view::Info {
        version: env!("CARGO_PKG_VERSION").into(),
        media_addresses: vec![i.media_address.to_string()],
        media_bound: i.media_bound.to_string(),
        backend: i.backend.into(),
        workers: i.workers,
        boot_id: i.boot_id.clone(),
        started_at: i.started_at.clone(),
        draining: app.shared.readiness() == Readiness::Draining,
    };
    json_reply(200, &serde_json::to_value(v).unwrap_or_default())
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "relay", security(("bearer" = [])),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object), (status = 401, body = ErrorBody)))]
async fn openapi_json() -> Response {
    let doc = serde_json::to_value(openapi_document()).unwrap_or_default();
    json_reply(200, &doc)
}

/// Drains: new rooms are refused with 503 `draining`, existing rooms go on, `/readyz` answers 503.
#[utoipa::path(post, path = "/v1/drain", tag = "relay", security(("bearer" = [])),
    responses((status = 200, body = view::Drain), (status = 401, body = ErrorBody)))]
async fn drain(State(app): State<App>) -> Response {
    command(&app, Command::Drain { on: true }).await
}

/// Ends a drain: new rooms are taken again.
#[utoipa::path(delete, path = "/v1/drain", tag = "relay", security(("bearer" = [])),
    responses((status = 200, body = view::Drain), (status = 401, body = ErrorBody)))]
async fn undrain(State(app): State<App>) -> Response {
    command(&app, Command::Drain { on: false }).await
}

/// Every room with its number of participants.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = view::RoomList), (status = 401, body = ErrorBody)))]
async fn list_rooms(State(app): State<App>) -> Response {
    command(&app, Command::ListRooms).await
}

/// Creates a room; idempotent. The body is optional: `{"plain_legs": true}` lets media from
/// WebRTC participants reach plain RTP participants (decrypted); it is set at creation.
#[utoipa::path(put, path = "/v1/rooms/{room}", tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path, description = "1 to 128 bytes of [A-Za-z0-9._-]")),
    request_body(content = Option<RoomBody>, description = "optional"),
    responses(
        (status = 201, description = "Created", body = view::Room),
        (status = 200, description = "It existed", body = view::Room),
        (status = 400, description = "`invalid_id`, `invalid_json`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "`too_many_rooms`; `plain_legs_fixed`: the room exists with the other value", body = ErrorBody),
        (status = 503, description = "`draining`", body = ErrorBody),
    ))]
async fn put_room(
    State(app): State<App>,
    room: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let room = path_or_reply!(room);
    let bytes = body_or_reply!(body);
    let body: RoomBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        RoomBody::default()
    } else {
        match parse_json(&bytes) {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        }
    };
    command(
        &app,
        Command::PutRoom {
            room,
            plain_legs: body.plain_legs,
        },
    )
    .await
}

/// A room with its participants and summed counters.
#[utoipa::path(get, path = "/v1/rooms/{room}", tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path)),
    responses((status = 200, body = view::Room), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_room(State(app): State<App>, room: Result<Path<String>, PathRejection>) -> Response {
    let room = path_or_reply!(room);
    command(&app, Command::GetRoom { room }).await
}

/// Closes a room: its participants are removed from every worker at once.
#[utoipa::path(delete, path = "/v1/rooms/{room}", tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path)),
    responses((status = 200, body = view::RoomClosed), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`", body = ErrorBody), (status = 503, description = "`workers_unavailable`", body = ErrorBody)))]
async fn delete_room(
    State(app): State<App>,
    room: Result<Path<String>, PathRejection>,
) -> Response {
    let room = path_or_reply!(room);
    command(&app, Command::DeleteRoom { room }).await
}

/// Adds or replaces a participant; in force on every worker when it returns.
#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{participant}", tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    request_body = ParticipantBody,
    responses(
        (status = 201, description = "Added", body = view::Participant),
        (status = 200, description = "Replaced (its counters are kept)", body = view::Participant),
        (status = 400, description = "`invalid_json`, `missing_body`, `invalid_id`, `invalid_address`, `invalid_region`, `invalid_ice`, `duplicate_ssrc`, `too_many_tracks`, `too_many_subscriptions`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 408, description = "`request_timeout`", body = ErrorBody),
        (status = 409, description = "`ssrc_in_use`, `address_in_use`, `ufrag_in_use`, `room_full`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 503, description = "`workers_unavailable`, `overloaded`", body = ErrorBody),
    ))]
async fn put_participant(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let (room, id) = path_or_reply!(path);
    let bytes = body_or_reply!(body);
    let body: ParticipantBody = match parse_json(&bytes) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let fresh_ice = generate_ice();
    command(
        &app,
        Command::PutParticipant {
            room,
            id,
            body,
            fresh_ice,
        },
    )
    .await
}

/// One participant: region and its source, whether its address is set or latched (never the
/// address itself), tracks, subscriptions and counters.
#[utoipa::path(get, path = "/v1/rooms/{room}/participants/{participant}", tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    responses((status = 200, body = view::Participant), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn get_participant(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (room, id) = path_or_reply!(path);
    command(&app, Command::GetParticipant { room, id }).await
}

/// Changes tracks, subscriptions, region or address; absent fields stay.
#[utoipa::path(patch, path = "/v1/rooms/{room}/participants/{participant}", tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    request_body = ParticipantPatch,
    responses(
        (status = 200, body = view::Participant),
        (status = 400, description = "as for PUT", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "as for PUT", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
async fn patch_participant(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let (room, id) = path_or_reply!(path);
    let bytes = body_or_reply!(body);
    let patch: ParticipantPatch = match parse_json(&bytes) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    command(&app, Command::PatchParticipant { room, id, patch }).await
}

/// Removes one participant; the others' media goes on.
#[utoipa::path(delete, path = "/v1/rooms/{room}/participants/{participant}", tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    responses((status = 200, body = view::ParticipantRemoved), (status = 401, body = ErrorBody), (status = 404, description = "`not_found`", body = ErrorBody)))]
async fn delete_participant(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (room, id) = path_or_reply!(path);
    command(&app, Command::DeleteParticipant { room, id }).await
}

/// Adds a drop rule; 201 once it is in force on every worker. RULES.md has the model.
#[utoipa::path(post, path = "/v1/rules", tag = "rules", security(("bearer" = [])),
    request_body = RuleSpec,
    responses(
        (status = 201, body = view::Rule),
        (status = 400, description = "`invalid_json`, `missing_basis`, `invalid_basis`, `invalid_jurisdiction`, `empty_match`, `invalid_region`, `invalid_id`, `too_many`, `missing_expiry`, `invalid_expiry`, `expired`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_rule_changes`", body = ErrorBody),
        (status = 503, description = "`workers_unavailable`", body = ErrorBody),
    ))]
async fn post_rule(State(app): State<App>, body: Body) -> Response {
    let body = body_or_reply!(body).to_vec();
    command(&app, Command::AddRule { body }).await
}

/// Every rule (active, lifted, expired) with its counters.
#[utoipa::path(get, path = "/v1/rules", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = view::RuleList), (status = 401, body = ErrorBody)))]
async fn list_rules(State(app): State<App>) -> Response {
    command(&app, Command::ListRules).await
}

/// One rule with its counters.
#[utoipa::path(get, path = "/v1/rules/{id}", tag = "rules", security(("bearer" = [])),
    params(("id" = u64, Path)),
    responses((status = 200, body = view::Rule), (status = 401, body = ErrorBody), (status = 404, description = "`rule_not_found`", body = ErrorBody)))]
async fn get_rule(State(app): State<App>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = path_or_reply!(id);
    command(&app, Command::GetRule { id }).await
}

/// Lifts a rule with a reason (audited); returns once no worker applies it any more.
#[utoipa::path(delete, path = "/v1/rules/{id}", tag = "rules", security(("bearer" = [])),
    params(("id" = u64, Path)),
    request_body = LiftBody,
    responses(
        (status = 200, body = view::Rule),
        (status = 400, description = "`invalid_reason`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`rule_not_found`", body = ErrorBody),
        (status = 409, description = "`rule_not_active`", body = ErrorBody),
        (status = 429, description = "`too_many_rule_changes`", body = ErrorBody),
    ))]
async fn delete_rule(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Response {
    let id = path_or_reply!(id);
    let body = body_or_reply!(body).to_vec();
    command(&app, Command::LiftRule { id, body }).await
}

/// The audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "rules", security(("bearer" = [])),
    params(
        ("after" = Option<u64>, Query, description = "entries after this seq (default 0)"),
        ("limit" = Option<u64>, Query, description = "at most this many (default 1000, at most 10000)"),
    ),
    responses((status = 200, description = "`{\"entries\": [...]}`", body = Object), (status = 400, description = "`invalid_query`", body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn audit(State(app): State<App>, uri: axum::http::Uri) -> Response {
    let query = uri.query().unwrap_or("");
    let after = match number(query, "after") {
        Ok(v) => v.unwrap_or(0),
        Err(e) => return e.into_response(),
    };
    let limit = match number(query, "limit") {
        Ok(v) => v.unwrap_or(1000).min(10_000) as usize,
        Err(e) => return e.into_response(),
    };
    ask(&app, |reply| OwnerRequest::Audit {
        after,
        limit,
        reply,
    })
    .await
}

/// Counts of rules by jurisdiction and authority, participants affected, packets dropped; no
/// personal data.
#[utoipa::path(get, path = "/v1/transparency", tag = "rules", security(("bearer" = [])),
    responses((status = 200, body = Transparency), (status = 401, body = ErrorBody)))]
async fn transparency(State(app): State<App>) -> Response {
    ask(&app, OwnerRequest::Transparency).await
}

/// Suggests a relay for a participant: the least loaded live relay of its region, else the
/// least loaded live relay. Add the participant on that relay. Alone, the relay names itself.
#[utoipa::path(post, path = "/v1/placements", tag = "rooms", security(("bearer" = [])),
    request_body = PlacementBody,
    responses(
        (status = 200, body = Placement),
        (status = 400, description = "`invalid_json`, `invalid_region`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, description = "`fleet_unavailable`: no live relay known", body = ErrorBody),
    ))]
async fn post_placement(State(app): State<App>, body: Body) -> Response {
    let body = body_or_reply!(body);
    let placement: PlacementBody = match parse_json(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(r) = &placement.region
        && (r.is_empty() || !crate::config::valid_region(r))
    {
        return ApiError::new(
            Code::InvalidRegion,
            "region is up to 16 of [A-Z0-9-], e.g. \"CN\"",
        )
        .into_response();
    }
    let region = placement.region;
    ask(&app, |reply| OwnerRequest::Placement { region, reply }).await
}

/// A numeric query parameter, e.g. `after` in `/v1/audit?after=10`.
pub(super) fn number(query: &str, name: &str) -> Result<Option<u64>, ApiError> {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return v.parse().map(Some).map_err(|_| {
                ApiError::new(Code::InvalidQuery, format!("{name} must be a whole number"))
            });
        }
    }
    Ok(None)
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

    #[test]
    fn any_valid_token_passes() {
        let tokens = vec!["old".to_owned(), "new".to_owned()];
        let mut h = HeaderMap::new();
        assert!(authorize(&h, &tokens).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer new"),
        );
        assert!(authorize(&h, &tokens).is_ok());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer old"),
        );
        assert!(authorize(&h, &tokens).is_ok());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer ol"));
        assert!(authorize(&h, &tokens).is_err());
        assert!(authorize(&HeaderMap::new(), &[]).is_ok());
    }

    /// docs/openapi.json is the document the code generates. To refresh it after an API change:
    /// `RELAY_WRITE_OPENAPI=1 cargo test -p relay --lib openapi`.
    #[test]
    fn committed_openapi_document_is_current() {
        let doc = serde_json::to_string_pretty(&openapi_document()).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        if std::env::var_os("RELAY_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &doc).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == doc,
            "docs/openapi.json is out of date: RELAY_WRITE_OPENAPI=1 cargo test -p relay --lib openapi"
        );
    }

    #[test]
    fn queries() {
        assert_eq!(number("after=10&limit=5", "limit").unwrap(), Some(5));
        assert_eq!(number("", "after").unwrap(), None);
        assert_eq!(
            number("after=x", "after").unwrap_err().code,
            Code::InvalidQuery
        );
    }
}

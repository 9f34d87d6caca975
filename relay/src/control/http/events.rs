//! `GET /v1/events`: the event stream (Server-Sent Events).
//!
//! A stream starts from now, or resumes after `?after=ID` or the `Last-Event-ID` header. Each
//! event is sent as `id`, `event` (its type) and `data` (a JSON object). A stream never holds
//! events of its own: it reads the shared history with a cursor, so a slow client costs a cursor,
//! and one that falls out of the history is counted and ended.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::watch;

use super::App;
use crate::control::error::{ApiError, Code, ErrorBody};
use crate::control::event::{EventLog, Published, Resume};

/// Events sent per wake-up at most, so one stream cannot hold the history's lock for long.
const CHUNK: usize = 256;

/// A stream of what happens: rooms, participants (joined, latched, unlatched, left), rules
/// (added, lifted, expired), drains and restarts. Bodies carry ids and regions, never addresses.
#[utoipa::path(get, path = "/v1/events", tag = "relay", security(("bearer" = [])),
    params(
        ("after" = Option<u64>, Query, description = "resume after this event id (or send `Last-Event-ID`)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: each event has `id`, `event` (its type) and `data` (a JSON object with `id`, `type`, `time` and the event's fields)", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 410, description = "`events_gone`: the events after that id are no longer kept (the relay restarted, or the client fell behind); read the state again and start a new stream", body = ErrorBody),
    ))]
pub(super) async fn events(
    State(app): State<App>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let after = match super::routes::number(uri.query().unwrap_or(""), "after") {
        Ok(Some(a)) => Some(a),
        Ok(None) => match headers.get("last-event-id") {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse().ok()) {
                Some(a) => Some(a),
                None => {
                    return ApiError::new(
                        Code::InvalidQuery,
                        "Last-Event-ID must be a whole number",
                    )
                    .into_response();
                }
            },
        },
        Err(e) => return e.into_response(),
    };
    let cursor = match app.shared.events.resume(after) {
        Resume::After(c) => c,
        Resume::Gone => {
            return ApiError::new(
                Code::EventsGone,
                "the events after that id are no longer kept: read the state again, then stream from now",
            )
            .into_response();
        }
    };
    let state = Cursor {
        shared: app.shared.clone(),
        newest: app.shared.events.subscribe(),
        stop: app.stop.clone(),
        cursor,
        pending: Vec::new().into_iter(),
        done: false,
    };
    Sse::new(stream(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct Cursor {
    shared: Arc<crate::control::Shared>,
    newest: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    cursor: u64,
    pending: std::vec::IntoIter<Arc<Published>>,
    done: bool,
}

fn stream(state: Cursor) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if let Some(e) = s.pending.next() {
                s.cursor = e.id;
                let event = SseEvent::default()
                    .id(e.id.to_string())
                    .event(e.kind)
                    .data(e.json.as_str());
                return Some((Ok(event), s));
            }
            match fetch(&s.shared.events, s.cursor) {
                Ok(batch) if !batch.is_empty() => {
                    s.pending = batch.into_iter();
                    continue;
                }
                Ok(_) => {}
                Err(missed) => {
                    // Fell out of the history: say so and end; the client resumes, gets 410
                    // and reads the state again.
                    s.done = true;
                    let event = SseEvent::default()
                        .event("events_lost")
                        .data(format!("{{\"missed\":{missed}}}"));
                    return Some((Ok(event), s));
                }
            }
            tokio::select! {
                changed = s.newest.changed() => if changed.is_err() { return None; },
                _ = s.stop.changed() => return None,
            }
        }
    })
}

fn fetch(log: &EventLog, after: u64) -> Result<Vec<Arc<Published>>, u64> {
    log.after(after, CHUNK)
}

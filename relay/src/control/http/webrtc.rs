//! The WebRTC endpoints: the publish and subscribe SDP exchanges of a browser participant.
//! The signaling server passes SDP through; the relay answers with its own.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::App;
use super::routes::{command, path_error, read_json};
use crate::control::body::{WebrtcAnswerBody, WebrtcPublishBody, WebrtcSubscribeBody};
use crate::control::core::{Command, Fresh};
use crate::control::error::ErrorBody;
use crate::control::generate_ice;

/// The JSON body of an SDP exchange's answer (200).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct SdpBody {
    /// The relay's SDP: its answer (publish) or its offer (subscribe).
    pub sdp: String,
}

fn fresh() -> Fresh {
    use rand::Rng;
    Fresh {
        ice: generate_ice(),
        // RFC 8829 §5.2.1: a 64-bit id with the most significant bit zero.
        session_id: rand::thread_rng().r#gen::<u64>() >> 1,
    }
}

/// Publishes from a browser: takes the client's offer (its publishing peer connection) and
/// answers with the relay's. Creates the participant if needed, as `PUT` does; its tracks come
/// from the offer's `a=ssrc` lines. The answer is ice-lite, `a=setup:passive`, rtcp-mux, with
/// only the room's codecs (Opus, VP8, H.264 constrained baseline); TWCC and REMB are not
/// negotiated.
#[utoipa::path(post, path = "/v1/rooms/{room}/participants/{participant}/webrtc/publish",
    tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    request_body = WebrtcPublishBody,
    responses(
        (status = 200, description = "The relay's answer", body = SdpBody),
        (status = 400, description = "`invalid_sdp` (naming the line), `invalid_json`, `missing_body`, `invalid_id`, `invalid_region`, `too_many_tracks`, `too_many_subscriptions`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 409, description = "`codec_mismatch` (naming the codec), `ssrc_in_use`, `ufrag_in_use`, `room_full`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 503, description = "`workers_unavailable`, `overloaded`", body = ErrorBody),
    ))]
pub(super) async fn webrtc_publish(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let (room, id) = match path {
        Ok(Path(v)) => v,
        Err(e) => return path_error(e),
    };
    let body: WebrtcPublishBody = match read_json(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let fresh = fresh();
    command(
        &app,
        Command::WebrtcPublish {
            room,
            id,
            body,
            fresh,
        },
    )
    .await
}

/// Starts (or restarts) the subscribe exchange: the relay offers one `sendonly` media section
/// per track the participant may receive, with the publisher's SSRCs and the room's payload
/// types. Run it again on `subscription_changed`. Creates the participant if needed (the body
/// may then carry `region` and `subscribe`).
#[utoipa::path(post, path = "/v1/rooms/{room}/participants/{participant}/webrtc/subscribe",
    tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    request_body = WebrtcSubscribeBody,
    responses(
        (status = 200, description = "The relay's offer", body = SdpBody),
        (status = 400, description = "`invalid_json`, `missing_body`, `invalid_id`, `invalid_region`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 409, description = "`nothing_to_receive`: no track to offer yet; `ufrag_in_use`, `room_full`", body = ErrorBody),
        (status = 503, description = "`workers_unavailable`, `overloaded`", body = ErrorBody),
    ))]
pub(super) async fn webrtc_offer(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let (room, id) = match path {
        Ok(Path(v)) => v,
        Err(e) => return path_error(e),
    };
    let body: WebrtcSubscribeBody = match read_json(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let fresh = fresh();
    command(
        &app,
        Command::WebrtcOffer {
            room,
            id,
            body,
            fresh,
        },
    )
    .await
}

/// Completes the subscribe exchange with the client's answer (`recvonly` sections,
/// `a=setup:active`).
#[utoipa::path(put, path = "/v1/rooms/{room}/participants/{participant}/webrtc/subscribe",
    tag = "rooms", security(("bearer" = [])),
    params(("room" = String, Path), ("participant" = String, Path)),
    request_body = WebrtcAnswerBody,
    responses(
        (status = 204, description = "Taken"),
        (status = 400, description = "`invalid_sdp` (naming the line), `invalid_json`, `missing_body`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`no_offer`: no subscribe offer is waiting for an answer", body = ErrorBody),
    ))]
pub(super) async fn webrtc_answer(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let (room, id) = match path {
        Ok(Path(v)) => v,
        Err(e) => return path_error(e),
    };
    let body: WebrtcAnswerBody = match read_json(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    command(
        &app,
        Command::WebrtcAnswer {
            room,
            id,
            sdp: body.sdp,
        },
    )
    .await
}

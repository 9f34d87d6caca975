//! SDP for WebRTC legs: parse the client's offers and answers, build the relay's answers and
//! offers. Pure: text and typed values in, text and typed values out.
//!
//! Read first: RFC 8866 (SDP syntax), RFC 3264 (offer/answer), RFC 8829 (JSEP), RFC 9143
//! (BUNDLE), RFC 8839 (ICE in SDP), RFC 8122 and RFC 8842 (fingerprint, setup), RFC 5576
//! (`a=ssrc`), RFC 4588 (RTX).
//!
//! # Model
//!
//! - [`parse()`] turns text into a [`Session`]: session-level and per-section ICE credentials,
//!   fingerprints, setup, mid, direction, rtcp-mux, payload types with their rtpmap/fmtp/rtcp-fb,
//!   SSRCs with cname and msid, SSRC groups, extmaps, msid, BUNDLE. Anything else is skipped. Sizes
//!   are bounded ([`parse::MAX_BYTES`], [`parse::MAX_MEDIA`], [`parse::MAX_SSRCS`], ...). A
//!   [`ParseError`] names the line number and the line: the API answers `400 invalid_sdp` with it.
//! - [`write()`] is the one writer: every description the relay sends is a [`Session`] built by
//!   [`answer_publish`] or [`offer_subscribe`] and written by it. `parse(write(s)) == s`.
//! - [`CodecTable`] is a room's payload type numbers (below).
//!
//! # Calling order
//!
//! Publish (the client offers, the relay answers):
//! 1. `let offer = sdp::parse(text)?;`
//! 2. `let publish = sdp::answer_publish(&offer, &room.codecs, &local)?;` with the relay's
//!    [`Local`] values (ICE credentials of the participant, certificate fingerprint, media
//!    addresses, session id and version).
//! 3. On success store `publish.table` as the room's table, declare `publish.tracks`, give
//!    `publish.remote.fingerprints` to the DTLS engine, and answer `sdp::write(&publish.answer)`.
//!
//! Subscribe (the relay offers, the client answers):
//! 1. `let offer = sdp::offer_subscribe(&slots, &room.codecs, &local)?;` answer
//!    `sdp::write(&offer)` and keep `offer` until the answer comes.
//! 2. `let answer = sdp::read_subscribe_answer(&sdp::parse(text)?, &offer)?;` then give
//!    `answer.remote.fingerprints` to the DTLS engine.
//!
//! # The codec rule
//!
//! The relay takes Opus (48000/2), VP8, and H.264 constrained baseline with packetization-mode 1
//! (profile_idc 0x42 with constraint_set1, any level: `42e01f` and family), each with its RTX
//! (`apt=`) for video. It forwards RTP unchanged, so a room uses one payload type number per
//! codec for everyone:
//!
//! 1. A room's [`CodecTable`] starts empty. The first accepted offer that brings a codec fixes its
//!    number (and its RTX number) to the offer's own, unless the room already gave that number to
//!    another codec; then the codec gets the first dynamic number (96-127, then 35-63) that
//!    neither the room nor the offer uses.
//! 2. Where the relay only **receives** (a publish offer's `sendonly`/`sendrecv` sections,
//!    answered `recvonly`), a later offer that maps a codec to another number is answered with
//!    the **room's** number. RFC 3264 §6.1: the payload type numbers in an answer are those the
//!    answerer expects to receive, and reusing the offer's is only a SHOULD. Measured here with
//!    `getParameters()` after `setRemoteDescription` (tests/tests/webrtc_sdp.rs): Chromium 156,
//!    Firefox ESR 153 and aiortc 1.16 all send with the answer's numbers, even where their own
//!    offer used that number for another codec (Firefox with Opus and VP8 swapped, Chromium with
//!    the room's Opus on its own VP8 number). So no receive-only section is refused.
//! 3. Where the relay would **send** (the client receives in a section it offered), RFC 3264
//!    §6.1 says the answerer "MUST use the payload type numbers from the offer"; the relay does
//!    not rewrite them, so an offered number other than the room's is refused with
//!    [`CodecMismatch`] (`409 codec_mismatch`, naming the codec). The publish exchange never
//!    sends, and in the subscribe exchange the relay is the offerer (the client answers with the
//!    relay's numbers), so neither produces it today; it guards any flow where a client offers
//!    what it receives.
//! 4. A section with no codec the relay takes (data channels, other codecs, port 0 without
//!    `a=bundle-only`) is rejected with port 0 and keeps its mid; the others are answered
//!    `recvonly` (the client's `sendonly`/`sendrecv`) or `inactive`, with only the room's codecs.
//!
//! Not negotiated in this version: `transport-cc` and `goog-remb` (TWCC and REMB: the relay
//! does not terminate congestion control), header extensions (no `sdes:mid`: subscribers
//! demultiplex by `a=ssrc`; no transport-wide-cc; no others, so no extension ids to pin per
//! room), `rtcp-rsize` (the relay's RTCP routing reads compound packets), simulcast.
//!
//! # Tracks
//!
//! A sending section must declare its SSRC with `a=ssrc` (and its RTX with
//! `a=ssrc-group:FID`): the relay routes on declared SSRCs and has no MID or RID demultiplexing.
//! Chromium 156 (Debian), Firefox ESR 153 and aiortc 1.16 declare them in their offers (see
//! `testdata/`). A sending section without them is refused with `invalid_sdp` naming its `m=`
//! line; so is simulcast (`a=ssrc-group:SIM`) and more than one media SSRC per section.
#![deny(unsafe_code)]

mod codec;
mod exchange;
mod fingerprint;
pub mod parse;
mod session;
mod write;

pub use codec::{CODECS, Codec, CodecMismatch, CodecTable, Entry, Negotiated};
pub use exchange::{
    ExchangeError, Local, Publish, Remote, Slot, SubscribeAnswer, Track, answer_publish,
    offer_subscribe, read_subscribe_answer,
};
pub use fingerprint::{Fingerprint, FingerprintError, HashFunction};
pub use parse::{ParseError, parse};
pub use session::{
    Candidate, Direction, Extmap, IceCredentials, Media, MediaKind, Msid, Payload, Session, Setup,
    SsrcGroup, SsrcInfo,
};
pub use write::write;

#[cfg(test)]
mod tests;

//! Sans-IO packet layer: zero-copy views over received datagrams and builders for what the relay
//! sends.
//!
//! Read first: RFC 7983 (demultiplexing), RFC 3550 (RTP/RTCP), RFC 8489 (STUN).
//!
//! # Model
//!
//! Every function here takes a byte slice that the caller owns and borrows it for the length of
//! one call (or of the view it returns). Nothing here touches a socket, a thread or the clock, and
//! nothing allocates: parsers return views whose getters read straight from the buffer, builders
//! write into a buffer the caller hands in.
//!
//! A worker calls, for each received datagram:
//!
//! 1. [`demux::classify`] on the first bytes (RFC 7983), before any other parsing;
//! 2. then, by the [`demux::Kind`] it got:
//!    - RTP: [`rtp::Packet::new_checked`], and routes on [`rtp::Packet::ssrc`];
//!    - RTCP: [`rtcp::classify`], which says whether the compound follows the sender's media,
//!      goes back to the publishers it names as feedback, or is encrypted SRTCP;
//!    - STUN: [`stun::Message::new_checked`], then [`stun::Message::verify_integrity`] with the
//!      participant's ICE password, and a reply built with [`stun::BindingResponse`] or
//!      [`stun::ErrorResponse`].
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use relay::packet::{demux, rtcp, rtp, stun};
//!
//! fn handle(datagram: &[u8], source: SocketAddr, reply: &mut [u8]) -> Option<usize> {
//!     match demux::classify(datagram) {
//!         demux::Kind::Rtp => {
//!             let packet = rtp::Packet::new_checked(datagram).ok()?;
//!             let _track = packet.ssrc(); // look up the track, fan out
//!         }
//!         demux::Kind::Rtcp => match rtcp::classify(datagram).ok()? {
//!             rtcp::Route::Sender { sender, also_feedback } => {
//!                 let _ = (sender, also_feedback); // to the subscribers of `sender` (and ...)
//!             }
//!             rtcp::Route::Feedback { feedback, .. } => {
//!                 for _publisher in feedback.media_ssrcs() {}
//!             }
//!             rtcp::Route::Encrypted { sender: _ } => {}
//!         },
//!         demux::Kind::Stun => {
//!             let msg = stun::Message::new_checked(datagram).ok()?;
//!             if msg.class() != stun::Class::Request || msg.method() != stun::BINDING {
//!                 return None;
//!             }
//!             let password = b"VOkJxbRl1RmTxUk/WvJxBt"; // found through msg.username()
//!             let transaction_id = msg.transaction_id();
//!             let written = match msg.verify_integrity(password) {
//!                 Ok(()) => stun::BindingResponse {
//!                     transaction_id,
//!                     mapped: source,
//!                     software: None,
//!                     integrity_key: password,
//!                 }
//!                 .emit(reply),
//!                 Err(_) => stun::ErrorResponse::unauthorized(transaction_id).emit(reply),
//!             };
//!             return written.ok();
//!         }
//!         demux::Kind::Dtls | demux::Kind::Other => {} // counted drops
//!     }
//!     None
//! }
//!
//! let mut reply = [0u8; 128];
//! let source: SocketAddr = "127.0.0.1:5004".parse().unwrap();
//! let request = stun::BindingRequest {
//!     transaction_id: [7; 12],
//!     username: b"relay:client",
//!     priority: 1,
//!     ice_controlling: Some(42),
//!     use_candidate: true,
//!     integrity_key: b"VOkJxbRl1RmTxUk/WvJxBt",
//!     fingerprint: true,
//! };
//! let mut datagram = [0u8; 128];
//! let n = request.emit(&mut datagram).unwrap();
//! let len = handle(&datagram[..n], source, &mut reply).unwrap();
//! let response = stun::Message::new_checked(&reply[..len]).unwrap();
//! assert_eq!(response.xor_mapped_address(), Some(source));
//! ```
//!
//! A datagram that arrives on a trunk socket (from another relay of the fleet) goes through
//! [`trunk::Packet::new_checked`] first; its [`trunk::Packet::payload`] is then the RTP or RTCP
//! datagram above, untouched.
//!
//! Every parser checks lengths once, in the order its RFC gives, and reports what was wrong with
//! a small `Copy` error enum. After a successful check no getter panics. No parser panics on any
//! input (property tests feed them arbitrary bytes).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod demux;
pub mod rtcp;
pub mod rtp;
pub mod stun;
pub mod trunk;

#[cfg(test)]
mod proptests;

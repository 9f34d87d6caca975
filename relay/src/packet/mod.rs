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
//! Every parser checks lengths once, in the order its RFC gives, and reports what was wrong with
//! a small `Copy` error enum. After a successful check no getter panics. No parser panics on any
//! input (property tests feed them arbitrary bytes).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod demux;
pub mod rtcp;
pub mod rtp;

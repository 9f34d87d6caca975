//! The one SDP writer: a [`Session`] in, RFC 8866 text with CRLF line ends out.
//!
//! Every description the relay sends is built as a typed [`Session`] first and written here,
//! so there is no string templating anywhere else.

use std::fmt::Write;

use super::session::*;

/// Writes `session` as SDP text. Values are written as they are: the builders only put valid
/// ones in (the round-trip property test checks `parse(write(s)) == s`).
pub fn write(session: &Session) -> String {
    let mut out = String::with_capacity(1024 + 1024 * session.media.len());
    let w = &mut out;
    line(w, format_args!("v=0"));
    line(
        w,
        format_args!(
            "o=- {} {} IN IP4 127.0.0.1",
            session.session_id, session.session_version
        ),
    );
    line(w, format_args!("s=-"));
    line(w, format_args!("t=0 0"));
    if session.ice_lite {
        line(w, format_args!("a=ice-lite"));
    }
    if !session.bundle.is_empty() {
        line(
            w,
            format_args!("a=group:BUNDLE {}", session.bundle.join(" ")),
        );
    }
    write_transport(
        w,
        session.ice.as_ref(),
        &session.fingerprints,
        session.setup,
    );
    for m in &session.media {
        write_media(w, m);
    }
    out
}

fn write_media(w: &mut String, m: &Media) {
    line(
        w,
        format_args!(
            "m={} {} {} {}",
            m.kind.name(),
            m.port,
            m.protocol,
            m.formats.join(" ")
        ),
    );
    if let Some(c) = &m.connection {
        line(w, format_args!("c={c}"));
    }
    if let Some(mid) = &m.mid {
        line(w, format_args!("a=mid:{mid}"));
    }
    if m.bundle_only {
        line(w, format_args!("a=bundle-only"));
    }
    line(w, format_args!("a={}", m.direction.name()));
    write_transport(w, m.ice.as_ref(), &m.fingerprints, m.setup);
    if m.rtcp_mux {
        line(w, format_args!("a=rtcp-mux"));
    }
    if m.rtcp_rsize {
        line(w, format_args!("a=rtcp-rsize"));
    }
    for c in &m.candidates {
        line(
            w,
            format_args!(
                "a=candidate:{} {} {} {} {} {} typ {}",
                c.foundation, c.component, c.transport, c.priority, c.address, c.port, c.typ
            ),
        );
    }
    if m.end_of_candidates {
        line(w, format_args!("a=end-of-candidates"));
    }
    for e in &m.extmaps {
        line(w, format_args!("a=extmap:{} {}", e.id, e.uri));
    }
    if let Some(msid) = &m.msid {
        line(w, format_args!("a=msid:{}", msid_value(msid)));
    }
    for p in &m.payloads {
        if !p.encoding.is_empty() {
            match p.channels {
                Some(ch) => line(
                    w,
                    format_args!("a=rtpmap:{} {}/{}/{ch}", p.pt, p.encoding, p.clock_rate),
                ),
                None => line(
                    w,
                    format_args!("a=rtpmap:{} {}/{}", p.pt, p.encoding, p.clock_rate),
                ),
            }
        }
        if let Some(fmtp) = &p.fmtp {
            line(w, format_args!("a=fmtp:{} {fmtp}", p.pt));
        }
        for fb in &p.rtcp_fb {
            line(w, format_args!("a=rtcp-fb:{} {fb}", p.pt));
        }
    }
    for g in &m.ssrc_groups {
        let ssrcs: Vec<String> = g.ssrcs.iter().map(u32::to_string).collect();
        line(
            w,
            format_args!("a=ssrc-group:{} {}", g.semantics, ssrcs.join(" ")),
        );
    }
    for s in &m.ssrcs {
        if let Some(cname) = &s.cname {
            line(w, format_args!("a=ssrc:{} cname:{cname}", s.ssrc));
        }
        if let Some(msid) = &s.msid {
            line(
                w,
                format_args!("a=ssrc:{} msid:{}", s.ssrc, msid_value(msid)),
            );
        }
    }
}

fn write_transport(
    w: &mut String,
    ice: Option<&IceCredentials>,
    fingerprints: &[super::Fingerprint],
    setup: Option<Setup>,
) {
    if let Some(ice) = ice {
        line(w, format_args!("a=ice-ufrag:{}", ice.ufrag));
        line(w, format_args!("a=ice-pwd:{}", ice.pwd));
    }
    for fp in fingerprints {
        line(w, format_args!("a=fingerprint:{fp}"));
    }
    if let Some(setup) = setup {
        line(w, format_args!("a=setup:{}", setup.name()));
    }
}

fn msid_value(msid: &Msid) -> String {
    match &msid.track {
        Some(track) => format!("{} {track}", msid.stream),
        None => msid.stream.clone(),
    }
}

fn line(w: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing into a String cannot fail.
    let _ = w.write_fmt(args);
    w.push_str("\r\n");
}

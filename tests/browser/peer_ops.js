// The operations of a test peer, run inside the browser page (Chromium and Firefox alike):
// window.peerOp(request) -> reply. See sdp_peer.mjs for the requests.
window.pcs = [];
window.peerOp = async (req) => {
  const config = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
  if (req.op === 'publish_offer') {
    const pc = new RTCPeerConnection(config);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    if (req.datachannel) pc.createDataChannel('chat');
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    window.pcs.push(pc);
    return { id: window.pcs.length - 1, sdp: offer.sdp };
  }
  if (req.op === 'set_answer') {
    const pc = window.pcs[req.id];
    await pc.setRemoteDescription({ type: 'answer', sdp: req.sdp });
    const senders = pc.getSenders().map((s) => {
      const p = s.getParameters();
      return {
        kind: s.track && s.track.kind,
        codecs: (p.codecs || []).map((c) => ({ mimeType: c.mimeType, payloadType: c.payloadType })),
      };
    });
    return { ok: true, senders, signalingState: pc.signalingState };
  }
  if (req.op === 'answer') {
    const pc = new RTCPeerConnection(config);
    const tracks = [];
    pc.ontrack = (e) => tracks.push({ mid: e.transceiver.mid, kind: e.track.kind, streams: e.streams.map((s) => s.id) });
    await pc.setRemoteDescription({ type: 'offer', sdp: req.sdp });
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    window.pcs.push(pc);
    return { id: window.pcs.length - 1, sdp: answer.sdp, tracks };
  }
  if (req.op === 'stats') {
    // Connection state and, where the browser has RTCTransportStats (Chromium), the DTLS and SRTP
    // parameters it negotiated.
    const pc = window.pcs[req.id];
    const out = { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState };
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'transport') {
        Object.assign(out, {
          dtlsState: r.dtlsState, dtlsRole: r.dtlsRole, srtpCipher: r.srtpCipher,
          dtlsCipher: r.dtlsCipher, tlsVersion: r.tlsVersion,
        });
      }
      if (r.type === 'outbound-rtp') out.packetsSent = (out.packetsSent || 0) + r.packetsSent;
      if (r.type === 'inbound-rtp') {
        out.packetsReceived = (out.packetsReceived || 0) + r.packetsReceived;
        out.packetsLost = (out.packetsLost || 0) + r.packetsLost;
        if (r.kind === 'video') out.framesDecoded = (out.framesDecoded || 0) + (r.framesDecoded || 0);
        if (r.kind === 'audio') out.audioPacketsReceived = (out.audioPacketsReceived || 0) + r.packetsReceived;
      }
      if (r.type === 'local-candidate' || r.type === 'remote-candidate') {
        (out[r.type] = out[r.type] || []).push(`${r.address}:${r.port} ${r.candidateType}`);
      }
      if (r.type === 'candidate-pair') (out.pairs = out.pairs || []).push(r.state);
    });
    return out;
  }
  if (req.op === 'capabilities') {
    return { audio: RTCRtpSender.getCapabilities('audio'), video: RTCRtpSender.getCapabilities('video') };
  }
  throw new Error('unknown op ' + req.op);
};

// Prints what Debian's Chromium says in SDP, for relay/src/sdp/testdata/:
//   node capture.mjs publish-offer     a publish offer: audio + video, addTransceiver sendonly
//   node capture.mjs recvonly-answer   a recvonly answer to a sendonly audio + video offer
//   node capture.mjs capabilities      RTCRtpSender.getCapabilities for audio and video (JSON)
import { launch } from './chromium.mjs';

const what = process.argv[2];
const { page, close } = await launch();
try {
  const out = await page.evaluate(async (what) => {
    const media = async () => navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    if (what === 'publish-offer') {
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
      const stream = await media();
      for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      return offer.sdp;
    }
    if (what === 'recvonly-answer') {
      // A second Chromium peer connection makes the sendonly offer; this one answers it.
      const sender = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
      const stream = await media();
      for (const track of stream.getTracks()) sender.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      const offer = await sender.createOffer();
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
      await pc.setRemoteDescription(offer);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      return answer.sdp;
    }
    if (what === 'capabilities') {
      return JSON.stringify({
        audio: RTCRtpSender.getCapabilities('audio'),
        video: RTCRtpSender.getCapabilities('video'),
      }, null, 1);
    }
    throw new Error('unknown: ' + what);
  }, what);
  process.stdout.write(out);
} finally {
  await close();
}

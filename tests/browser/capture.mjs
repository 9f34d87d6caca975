// Prints what Debian's Chromium says in SDP, for relay/src/sdp/testdata/:
//   node capture.mjs publish-offer     a publish offer: audio + video, addTransceiver sendonly
//   node capture.mjs recvonly-answer   its recvonly answer to such an offer (from a second
//                                      peer connection)
//   node capture.mjs capabilities      RTCRtpSender.getCapabilities for audio and video (JSON)
// Firefox: the same requests through firefox_peer.mjs (see testdata/README.md).
import { fileURLToPath } from 'node:url';

import { launch } from './chromium.mjs';

const what = process.argv[2];
const { page, close } = await launch();
try {
  await page.addScriptTag({ path: fileURLToPath(new URL('./peer_ops.js', import.meta.url)) });
  const op = (req) => page.evaluate((req) => window.peerOp(req), req);
  if (what === 'publish-offer') {
    process.stdout.write((await op({ op: 'publish_offer' })).sdp);
  } else if (what === 'recvonly-answer') {
    const offer = await op({ op: 'publish_offer' });
    process.stdout.write((await op({ op: 'answer', sdp: offer.sdp })).sdp);
  } else if (what === 'capabilities') {
    process.stdout.write(JSON.stringify(await op({ op: 'capabilities' }), null, 1));
  } else {
    throw new Error('usage: node capture.mjs publish-offer|recvonly-answer|capabilities');
  }
} finally {
  await close();
}

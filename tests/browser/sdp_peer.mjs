// A Chromium peer (firefox_peer.mjs: the same for Firefox) driven over stdin/stdout, one JSON object per line, for tests that check what
// the browser says and accepts in SDP. Each request gets one reply line:
//   {"op":"publish_offer","datachannel":false}  -> {"id":N,"sdp":"<offer>"}
//        a peer connection with audio + video transceivers, sendonly (fake devices)
//   {"op":"set_answer","id":N,"sdp":"..."}     -> {"ok":true,"senders":[{"kind","codecs":[{"mimeType","payloadType"}]}]}
//        setRemoteDescription(answer) on that peer connection
//   {"op":"answer","sdp":"<offer>"}             -> {"id":M,"sdp":"<answer>","tracks":[{"mid","kind","streams"}]}
//        a new peer connection answers an offer (recvonly for the offer's sendonly sections)
//   {"op":"stats","id":N}                       -> {"connectionState","dtlsState","srtpCipher",...}
//   {"op":"capabilities"}                       -> RTCRtpSender.getCapabilities for audio and video
// Errors come back as {"error":"..."}. EOF closes the browser.
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { launch } from './chromium.mjs';

const { page, close } = await launch();

await page.addScriptTag({ path: fileURLToPath(new URL('./peer_ops.js', import.meta.url)) });

async function handle(req) {
  return page.evaluate((req) => window.peerOp(req), req);
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = await handle(JSON.parse(line));
  } catch (e) {
    reply = { error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
await close();

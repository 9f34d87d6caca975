// The same peer as sdp_peer.mjs, in Debian's Firefox ESR. Playwright cannot drive stock Firefox
// (no Juggler), so the page drives itself: it long-polls this script's HTTP server on
// 127.0.0.1 for the next request, runs it with peer_ops.js, and posts the reply back.
// Requests and replies: JSON lines on stdin/stdout, as in sdp_peer.mjs.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const ops = fs.readFileSync(path.join(here, 'peer_ops.js'), 'utf8');
const page = `<!doctype html><title>relay</title><script>${ops}
(async () => {
  for (;;) {
    const req = await (await fetch('/next')).json();
    let reply;
    try { reply = await window.peerOp(req); } catch (e) { reply = { error: String(e && e.message ? e.message : e) }; }
    await fetch('/result', { method: 'POST', body: JSON.stringify(reply) });
  }
})();
</script>`;

// Prefs: fake camera and microphone without a prompt, loopback ICE, and no traffic of Firefox's
// own (updates, telemetry, safe browsing, captive portal, push): tests only talk to loopback.
const prefs = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'app.update.enabled': false,
  'app.update.auto': false,
  'browser.shell.checkDefaultBrowser': false,
  'browser.safebrowsing.malware.enabled': false,
  'browser.safebrowsing.phishing.enabled': false,
  'browser.safebrowsing.downloads.enabled': false,
  'datareporting.healthreport.uploadEnabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
  'dom.push.enabled': false,
  'extensions.update.enabled': false,
  'browser.newtabpage.enabled': false,
  'browser.startup.homepage_override.mstone': 'ignore',
  'services.settings.server': 'http://127.0.0.1:9/',
  'network.dns.disablePrefetch': true,
  'network.prefetch-next': false,
};
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-firefox-'));
fs.writeFileSync(
  path.join(profile, 'user.js'),
  Object.entries(prefs).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`).join('\n'),
);

const queue = [];
let waiting = null; // the page's pending /next response
let pending = null; // resolves the current request's reply
function deliver() {
  if (waiting && queue.length) {
    waiting.end(JSON.stringify(queue.shift()));
    waiting = null;
  }
}
const server = http.createServer((req, res) => {
  if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page);
  } else if (req.url === '/next') {
    res.writeHead(200, { 'content-type': 'application/json' });
    waiting = res;
    deliver();
  } else if (req.url === '/result') {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.end('ok');
      if (pending) pending(body);
    });
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const firefox = spawn(
  process.env.FIREFOX_BIN || '/usr/bin/firefox-esr',
  ['--headless', '--no-remote', '--profile', profile, `http://127.0.0.1:${server.address().port}/`],
  { stdio: ['ignore', 'ignore', 'ignore'] },
);

function call(req) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(JSON.stringify({ error: 'Firefox did not answer within 60 s' })), 60000);
    pending = (body) => {
      clearTimeout(timer);
      resolve(body);
    };
    queue.push(req);
    deliver();
  });
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = await call(JSON.parse(line));
  } catch (e) {
    reply = JSON.stringify({ error: String(e) });
  }
  process.stdout.write(reply.trim() + '\n');
}
firefox.kill();
server.close();
fs.rmSync(profile, { recursive: true, force: true });

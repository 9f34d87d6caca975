// Starts Debian's Chromium headless through playwright-core (no bundled browser) with fake media
// devices. Shared by the capture script and the SDP peer.
import http from 'node:http';

import { chromium } from 'playwright-core';

/** Flags: headless, no network services of its own, fake camera and microphone, loopback ICE. */
export const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

/**
 * Launches Chromium and opens one empty page served from 127.0.0.1 (a secure context, which
 * getUserMedia needs; about:blank is not one). The caller calls `close()`.
 */
export async function launch() {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>relay</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    args: FLAGS,
    headless: true,
    timeout: 30000,
  });
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const close = async () => {
    await browser.close();
    server.close();
  };
  return { page, close };
}

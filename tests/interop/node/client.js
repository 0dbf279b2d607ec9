'use strict';
// A scripted `ws` client: connects to the URL given as its argument, reports what it observes and
// runs the commands it reads on stdin (see peer.js). It never answers messages by itself.
//
// Usage: node client.js ws://127.0.0.1:PORT/PATH [--max-payload=BYTES] [--deflate=on|off]
//   [--deflate-threshold=BYTES] (with --deflate=on: compress messages of at least this size; ws's
//   default is 1024). Reports {"event": "upgrade", "extensions"} with the server's answer first.

const WebSocket = require('ws');
const { watch, obeyStdin, option, report, deflateOption } = require('./peer');

const url = process.argv[2];
if (!url || !url.startsWith('ws')) {
  report({ event: 'error', message: 'usage: node client.js ws://HOST:PORT/PATH' });
  process.exit(2);
}

const ws = new WebSocket(url, {
  maxPayload: Number(option('max-payload', String(64 * 1024 * 1024))),
  perMessageDeflate: deflateOption(),
});
ws.on('upgrade', (response) => {
  report({ event: 'upgrade', extensions: response.headers['sec-websocket-extensions'] ?? null });
});
watch(ws);
obeyStdin(() => ws);

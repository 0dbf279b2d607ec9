'use strict';
// A Node `ws` client for the capture tests: compresses everything (threshold 0), sends a fixed script, closes.
// Usage: node ws_client.js ws://127.0.0.1:PORT/PATH
const path = require('node:path');
const WebSocket = require(path.join(__dirname, '..', 'interop', 'node', 'node_modules', 'ws'));

const ws = new WebSocket(process.argv[2], { perMessageDeflate: { threshold: 0 } });
const send = (data, options) => new Promise((resolve, reject) => ws.send(data, options, (e) => (e ? reject(e) : resolve())));
let replies = 0;
let expected = 0;
let finished = null;
ws.on('message', () => { replies += 1; if (replies === expected && finished) finished(); });
ws.on('open', async () => {
  const repeated = 'node ws compresses this '.repeat(40);
  expected = 5;
  const done = new Promise((resolve) => { finished = resolve; });
  await send('hello from node');
  await send(Buffer.alloc(65536, 7), { binary: true });
  await send(repeated);
  // one fragmented compressed message
  await send('first part, ', { fin: false });
  await send('second part', { fin: true });
  await send(Buffer.from([1, 2, 3]), { binary: true });
  await done;
  ws.close(4001, 'node says bye');
});
ws.on('close', () => process.exit(0));
ws.on('error', (e) => { console.error(String(e)); process.exit(1); });

'use strict';
// A `ws` echo server on 127.0.0.1 with a free port: answers every message with the same bytes and
// the same type, and reports what it sees (see peer.js). Its first line on stdout is
// {"event": "listening", "port": N}. Stdin commands act on the most recent connection.
//
// Options: --max-payload=BYTES (default 64 MiB), --deflate=on|off (default off), --deflate-threshold=BYTES
// (with --deflate=on; ws's default is 1024), --deflate-client-window=BITS (clientMaxWindowBits). The connection event carries the negotiated `extensions`
// and the `response_extensions` header this server answered with.

const { WebSocketServer } = require('ws');
const { report, watch, obeyStdin, option, deflateOption } = require('./peer');

const server = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  maxPayload: Number(option('max-payload', String(64 * 1024 * 1024))),
  perMessageDeflate: deflateOption(),
});

let answered = null;
server.on('headers', (headers) => {
  const line = headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions:'));
  answered = line === undefined ? null : line.slice(line.indexOf(':') + 1).trim();
});

let latest = null;

server.on('connection', (ws, request) => {
  latest = ws;
  report({
    event: 'connection',
    path: request.url,
    headers: request.headers,
    extensions: ws.extensions,
    response_extensions: answered,
  });
  watch(ws, (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

server.on('listening', () => report({ event: 'listening', port: server.address().port }));
server.on('error', (error) => {
  report({ event: 'error', message: String(error && error.message) });
  process.exit(1);
});

obeyStdin(() => latest);

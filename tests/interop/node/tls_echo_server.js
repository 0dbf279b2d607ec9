'use strict';
// The echo server of echo_server.js over TLS: an `https` server with the certificate and key given as PEM
// files, and a `ws` server on it. Its first line on stdout is {"event": "listening", "port": N}.
//
// Usage: node tls_echo_server.js --cert=CERT.pem --key=KEY.pem

const fs = require('node:fs');
const https = require('node:https');
const { WebSocketServer } = require('ws');
const { report, watch, obeyStdin, option } = require('./peer');

const httpsServer = https.createServer({
  cert: fs.readFileSync(option('cert')),
  key: fs.readFileSync(option('key')),
});
const server = new WebSocketServer({ server: httpsServer });

let latest = null;

server.on('connection', (ws, request) => {
  latest = ws;
  report({ event: 'connection', path: request.url, headers: request.headers });
  watch(ws, (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

httpsServer.on('error', (error) => {
  report({ event: 'error', message: String(error && error.message) });
  process.exit(1);
});
httpsServer.listen(0, '127.0.0.1', () => report({ event: 'listening', port: httpsServer.address().port }));

obeyStdin(() => latest);

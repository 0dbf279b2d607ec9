'use strict';
// The scripted client of client.js for wss:// URLs: trusts the CA given as a PEM file (and only it), so the
// server's certificate and host name are verified as a browser would.
//
// Usage: node tls_client.js wss://HOST:PORT/PATH --ca=CA.pem

const fs = require('node:fs');
const WebSocket = require('ws');
const { watch, obeyStdin, option, report } = require('./peer');

const url = process.argv[2];
if (!url || !url.startsWith('wss://')) {
  report({ event: 'error', message: 'usage: node tls_client.js wss://HOST:PORT/PATH --ca=CA.pem' });
  process.exit(2);
}

const ws = new WebSocket(url, { ca: fs.readFileSync(option('ca')), perMessageDeflate: false });
watch(ws);
obeyStdin(() => ws);

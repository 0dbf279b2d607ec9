'use strict';
// Node's http server (keep-alive) with a `ws` echo on the same port, for the capture test of a
// connection that carries ordinary requests before its Upgrade. Prints the port, runs until killed.
const http = require('node:http');
const path = require('node:path');
const { WebSocketServer } = require(path.join(__dirname, '..', 'interop', 'node', 'node_modules', 'ws'));

const server = http.createServer((request, response) => {
  request.resume();
  request.on('end', () => {
    if (request.method === 'POST') {
      response.write('chunked '); // no Content-Length: a chunked answer
      response.end('answer');
    } else {
      response.setHeader('Content-Length', '5');
      response.end('hello');
    }
  });
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));

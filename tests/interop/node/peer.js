'use strict';
// Shared plumbing for the Node `ws` peers used by the Python interop tests.
//
// A peer reports everything it observes as one JSON object per line on stdout, and obeys commands
// given as one JSON object per line on stdin, so a Python test can drive it step by step and assert
// on what this independent implementation actually saw. Payloads travel as base64 so that any byte
// sequence (including invalid UTF-8 pieces of a text message) survives the pipe unchanged.
//
// Events (stdout): {"event": "open"} | {"event": "message", "binary", "size", "sha256", "text"?}
//   | {"event": "ping"|"pong", "data": base64} | {"event": "close", "code", "reason"}
//   | {"event": "error", "message"} | {"event": "done", "command"} after each command has run.
// Commands (stdin): {"op": "send", "data": base64, "binary": bool}
//   | {"op": "send_fragments", "fragments": [base64, ...], "binary": bool, "ping_between"?: base64}
//   | {"op": "ping", "data": base64} | {"op": "close", "code": int, "reason": str}
//   | {"op": "exit"}

const crypto = require('node:crypto');
const readline = require('node:readline');

// Text messages up to this many bytes are reported in full, so tests can compare strings directly.
const TEXT_REPORT_LIMIT = 4096;

function report(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function describeMessage(data, isBinary) {
  const buffer = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
  const event = {
    event: 'message',
    binary: isBinary,
    size: buffer.length,
    sha256: crypto.createHash('sha256').update(buffer).digest('hex'),
  };
  if (!isBinary && buffer.length <= TEXT_REPORT_LIMIT) {
    event.text = buffer.toString('utf8');
  }
  return event;
}

// Reports every event of one connection; `onMessage` may answer a message (the echo server does).
function watch(ws, onMessage) {
  ws.on('open', () => report({ event: 'open' }));
  ws.on('message', (data, isBinary) => {
    report(describeMessage(data, isBinary));
    if (onMessage) onMessage(data, isBinary);
  });
  ws.on('ping', (data) => report({ event: 'ping', data: data.toString('base64') }));
  ws.on('pong', (data) => report({ event: 'pong', data: data.toString('base64') }));
  ws.on('close', (code, reason) => report({ event: 'close', code, reason: reason.toString('utf8') }));
  ws.on('error', (error) => report({ event: 'error', message: String(error && error.message) }));
}

function sendAsync(ws, data, options) {
  return new Promise((resolve, reject) => {
    ws.send(data, options, (error) => (error ? reject(error) : resolve()));
  });
}

async function run(ws, command) {
  switch (command.op) {
    case 'send':
      await sendAsync(ws, Buffer.from(command.data, 'base64'), { binary: command.binary });
      break;
    case 'send_fragments': {
      // `fin: false` starts or continues a fragmented message; `ws` adds the continuation opcodes.
      // With `ping_between`, a ping goes out after each non-final fragment: RFC 6455 §5.4 lets
      // control frames sit in the middle of a fragmented message.
      const pieces = command.fragments.map((piece) => Buffer.from(piece, 'base64'));
      for (let index = 0; index < pieces.length; index += 1) {
        const fin = index === pieces.length - 1;
        await sendAsync(ws, pieces[index], { binary: command.binary, fin, compress: false });
        if (!fin && command.ping_between !== undefined) {
          ws.ping(Buffer.from(command.ping_between, 'base64'));
        }
      }
      break;
    }
    case 'ping':
      ws.ping(Buffer.from(command.data, 'base64'));
      break;
    case 'close':
      ws.close(command.code, command.reason);
      break;
    case 'exit':
      process.exit(0);
      break;
    default:
      throw new Error(`unknown command ${JSON.stringify(command.op)}`);
  }
}

// Runs the commands read from stdin one after the other against the connection `current()` returns.
function obeyStdin(current) {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const command = JSON.parse(line);
      try {
        const ws = current();
        if (!ws && command.op !== 'exit') throw new Error('no connection to run the command on');
        await run(ws, command);
        report({ event: 'done', command: command.op });
      } catch (error) {
        report({ event: 'error', message: String(error && error.message), command: command.op });
      }
    });
  });
  // The test closed our stdin: it is finished with us.
  lines.on('close', () => process.exit(0));
}

function option(name, fallback) {
  const prefix = `--${name}=`;
  const found = process.argv.find((argument) => argument.startsWith(prefix));
  return found === undefined ? fallback : found.slice(prefix.length);
}

// The perMessageDeflate option from --deflate=on|off and --deflate-threshold=BYTES.
function deflateOption() {
  if (option('deflate', 'off') !== 'on') return false;
  const threshold = option('deflate-threshold', undefined);
  const clientWindow = option('deflate-client-window', undefined);
  if (threshold === undefined && clientWindow === undefined) return true;
  const settings = {};
  if (threshold !== undefined) settings.threshold = Number(threshold);
  if (clientWindow !== undefined) settings.clientMaxWindowBits = Number(clientWindow);
  return settings;
}

module.exports = { report, watch, obeyStdin, option, deflateOption };

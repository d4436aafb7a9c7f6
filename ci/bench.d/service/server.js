// A trivial HTTP service for `ci/bench applier`: no dependencies, port and release from argv.
'use strict';
const http = require('http');
const [port, release] = process.argv.slice(2);
const version = require('./package.json').version;
const server = http.createServer((req, res) => {
  const body = JSON.stringify({ name: 'bench-service', version, release });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(body + '\n');
});
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));

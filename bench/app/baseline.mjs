// The peer of bench/app: the same function in a plain Node.js http server
// (keep-alive on), which nginx reaches with proxy_pass.
//   node baseline.mjs PORT
import http from 'node:http';

import { hello } from './handler/handler.js';

const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
    const body = JSON.stringify(hello(req.url));
    res.writeHead(200, { 'content-type': 'application/json',
                         'content-length': Buffer.byteLength(body) });
    res.end(body);
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));

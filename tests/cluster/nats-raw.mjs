// NATS spoken by hand (the text protocol over TCP), as anyone on a node's
// machine could: for tests/cluster.sh.
//
//   node nats-raw.mjs hello PORT [TOKEN]     the server's answer to CONNECT
//   node nats-raw.mjs republish PORT TOKEN SEQ
//        the log's entry SEQ, as JetStream holds it, published again on
//        the log's subject: prints the new entry's seq

import net from 'node:net';

const [mode, port, token, seq] = process.argv.slice(2);
const sock = net.connect(Number(port), '127.0.0.1');
let buf = Buffer.alloc(0);
const waiters = [];

sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    waiters.splice(0).forEach((w) => w());
});
sock.on('error', (e) => {
    console.log(`error: ${e.message}`);
    process.exit(1);
});

// The next protocol line (and, for MSG, its payload).
async function next() {
    for (;;) {
        const end = buf.indexOf('\r\n');
        if (end >= 0) {
            const line = buf.subarray(0, end).toString();
            const m = /^MSG \S+ \S+ (?:\S+ )?(\d+)$/.exec(line);
            if (!m) {
                buf = buf.subarray(end + 2);
                return { line };
            }
            const len = Number(m[1]);
            if (buf.length >= end + 2 + len + 2) {
                const payload = buf.subarray(end + 2, end + 2 + len);
                buf = buf.subarray(end + 2 + len + 2);
                return { line, payload };
            }
        }
        await new Promise((r) => waiters.push(r));
    }
}

async function skipPings(f) {
    while (f.line === 'PING' || f.line.startsWith('INFO ')) {
        if (f.line === 'PING') {
            sock.write('PONG\r\n');
        }
        f = await next();
    }
    return f;
}

const connect = { verbose: false, pedantic: false, headers: true };
if (token) {
    connect.auth_token = token;
}
await next();                                   /* INFO */
sock.write(`CONNECT ${JSON.stringify(connect)}\r\nPING\r\n`);
const hello = await skipPings(await next());

if (mode === 'hello') {
    console.log(hello.line);
    process.exit(0);
}

function request(subject, body) {
    const data = Buffer.from(body);
    sock.write(`PUB ${subject} _INBOX.raw ${data.length}\r\n`);
    sock.write(Buffer.concat([data, Buffer.from('\r\n')]));
}

sock.write('SUB _INBOX.raw 1\r\n');
request('$JS.API.STREAM.MSG.GET.PROVEN_LOG', JSON.stringify({ seq: Number(seq) }));
let f = await skipPings(await next());
const got = JSON.parse(f.payload.toString());
if (!got.message) {
    console.log(`no entry ${seq}: ${f.payload}`);
    process.exit(1);
}
request('proven.log', Buffer.from(got.message.data, 'base64'));
f = await skipPings(await next());
console.log(JSON.parse(f.payload.toString()).seq);
process.exit(0);

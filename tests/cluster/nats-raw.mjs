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
            // MSG subject sid [reply] len; HMSG subject sid [reply] hlen
            // len.  The server may pad fields with more than one space
            // (an empty reply field: "MSG _INBOX.raw 1  32  ").
            const words = line.trim().split(/\s+/);
            const m = words[0] === 'MSG' && (words.length === 4
                                             || words.length === 5);
            const h = words[0] === 'HMSG' && (words.length === 5
                                              || words.length === 6);
            if (!m && !h) {
                buf = buf.subarray(end + 2);
                return { line };
            }
            const len = Number(words[words.length - 1]);
            const headerLen = m ? 0 : Number(words[words.length - 2]);
            if (buf.length >= end + 2 + len + 2) {
                const whole = buf.subarray(end + 2, end + 2 + len);
                buf = buf.subarray(end + 2 + len + 2);
                return {
                    line,
                    headers: whole.subarray(0, headerLen).toString(),
                    payload: whole.subarray(headerLen),
                };
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

const connect = {
    verbose: false, pedantic: false, headers: true, no_responders: true,
};
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
// The publish's answer is JetStream's ack, {"stream":..,"seq":N}. A
// server whose JetStream is between leaders answers 503 "no responders"
// (a header-only HMSG) instead: publish again a few times; a second copy
// that did land is one more repeat for the nodes to refuse.
for (let attempt = 0; attempt < 20; attempt++) {
    request('proven.log', Buffer.from(got.message.data, 'base64'));
    f = await skipPings(await next());
    const text = f.payload ? f.payload.toString() : '';
    if (text.startsWith('{')) {
        const ack = JSON.parse(text);
        if (ack.seq) {
            console.log(ack.seq);
            process.exit(0);
        }
    }
    console.error(`publish answered: ${f.line} ${f.headers || ''} ${text}`);
    await new Promise((r) => setTimeout(r, 250));
}
console.log('no ack');
process.exit(1);

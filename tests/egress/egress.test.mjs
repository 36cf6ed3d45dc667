// proven-egress: the enclave's way out.  A client inside asks the enclave's
// proxy (HTTP CONNECT on loopback) for a destination; the proxy checks it
// against the image's list, resolves names over DoH (a local DoH
// responder, its certificate from a CA made here), and asks the host's
// side over the transport (a unix socket stands in for vsock), which
// checks again against its own list before it connects.
//
//   PROVEN_EGRESS: the proven-egress binary; PROVEN_WORK: a scratch directory

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { bigServer, echoServer, sumServer } from '../servers.mjs';

const bin = process.env.PROVEN_EGRESS;
const work = process.env.PROVEN_WORK;
const procs = [];
const servers = [];
const logs = {};

function openssl(args) {
    const r = spawnSync('openssl', args, { cwd: work, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
}

// a CA, and a certificate of it for 127.0.0.1; another, self-signed
function makeCerts() {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
             '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
             '-subj', '/CN=test DoH CA']);
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
             '-keyout', 'doh.key', '-out', 'doh.csr', '-subj', '/CN=127.0.0.1']);
    fs.writeFileSync(path.join(work, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    openssl(['x509', '-req', '-in', 'doh.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
             '-CAcreateserial', '-out', 'doh.pem', '-days', '2', '-extfile', 'san.ext']);
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
             '-nodes', '-keyout', 'rogue.key', '-out', 'rogue.pem', '-days', '2',
             '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
}

function listen(server, host = '127.0.0.1') {
    servers.push(server);
    return new Promise((resolve) => server.listen(0, host,
                                                  () => resolve(server.address().port)));
}

async function freePort() {
    const probe = net.createServer();
    const port = await new Promise((r) => probe.listen(0, '127.0.0.1',
                                                       () => r(probe.address().port)));
    await new Promise((r) => probe.close(r));
    return port;
}

// a DNS answer for the question in q: an A record for names in the table
function dnsAnswer(q, table) {
    let off = 12;
    const labels = [];
    while (q[off] !== 0) {
        labels.push(q.subarray(off + 1, off + 1 + q[off]).toString());
        off += 1 + q[off];
    }
    const question = q.subarray(12, off + 5);
    const type = q.readUInt16BE(off + 1);
    const ip = table[labels.join('.')];
    const head = Buffer.alloc(12);
    head.writeUInt16BE(q.readUInt16BE(0), 0);
    head.writeUInt16BE(ip === undefined ? 0x8183 : 0x8180, 2);
    head.writeUInt16BE(1, 4);
    const answers = [];
    if (ip !== undefined && type === 1) {
        const rr = Buffer.alloc(16);
        rr.writeUInt16BE(0xC00C, 0);
        rr.writeUInt16BE(1, 2);
        rr.writeUInt16BE(1, 4);
        rr.writeUInt32BE(60, 6);
        rr.writeUInt16BE(4, 10);
        Buffer.from(ip.split('.').map(Number)).copy(rr, 12);
        answers.push(rr);
    }
    head.writeUInt16BE(answers.length, 6);
    return Buffer.concat([head, question, ...answers]);
}

function dohServer(keyFile, certFile, table) {
    return https.createServer({
        key: fs.readFileSync(path.join(work, keyFile)),
        cert: fs.readFileSync(path.join(work, certFile)),
    }, (req, res) => {
        if (req.url === '/hello') {
            res.end('hello over TLS\n');
            return;
        }
        const parts = [];
        req.on('data', (d) => parts.push(d));
        req.on('end', () => {
            res.setHeader('Content-Type', 'application/dns-message');
            res.end(dnsAnswer(Buffer.concat(parts), table));
        });
    });
}

// detached: a process group of its own, its connections' children in it
function start(args, name, detached = false) {
    return new Promise((resolve, reject) => {
        const p = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], detached });
        logs[name] = '';
        p.stderr.on('data', (d) => {
            logs[name] += d;
            if (logs[name].includes('listening on')) {
                resolve(p);
            }
        });
        p.on('exit', (code) => reject(new Error(`${name} exited ${code}: ${logs[name]}`)));
        procs.push(p);
    });
}

// what proven-egress says when it will not start
function refusesToStart(args) {
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 5000 });
    return { status: r.status, said: r.stderr };
}

function write(name, text) {
    const f = path.join(work, name);
    fs.writeFileSync(f, text);
    return f;
}

// CONNECT through the proxy; the status line and, on 200, the socket
function connect(proxyPort, dest, extraBytes = null) {
    return new Promise((resolve, reject) => {
        const s = net.connect(proxyPort, '127.0.0.1');
        let got = Buffer.alloc(0);
        s.on('error', reject);
        s.on('connect', () => {
            s.write(`CONNECT ${dest} HTTP/1.1\r\nHost: ${dest}\r\n\r\n`);
            if (extraBytes) {
                s.write(extraBytes);
            }
        });
        const onData = (d) => {
            got = Buffer.concat([got, d]);
            const end = got.indexOf('\r\n\r\n');
            if (end < 0) {
                return;
            }
            const head = got.subarray(0, end).toString();
            const status = Number(head.split(' ')[1]);
            s.removeListener('data', onData);
            if (status !== 200) {
                s.on('data', (more) => { got = Buffer.concat([got, more]); });
                s.on('end', () => resolve({ status, body: got.subarray(end + 4).toString() }));
                return;
            }
            const rest = got.subarray(end + 4);
            s.pause();                  /* nothing lost before drain() */
            if (rest.length) {
                s.unshift(rest);
            }
            resolve({ status, socket: s });
        };
        s.on('data', onData);
    });
}

// all a socket sends until its end
function drain(s) {
    return new Promise((resolve, reject) => {
        const parts = [];
        s.on('data', (d) => parts.push(d));
        s.on('end', () => resolve(Buffer.concat(parts)));
        s.on('error', reject);
        s.resume();
    });
}

const P = {};                           /* ports */
let sock;

// destinations (../servers.mjs): echo (what it gets, back), sum (sha256
// of what it gets until the end), big (N random bytes then their sha256)
const echo = echoServer();
const sum = sumServer();
const big = bigServer();
const banner = net.createServer((s) => { s.on('error', () => {}); s.end('banner first\n'); });

before(async () => {
    makeCerts();
    P.echo = await listen(echo);
    P.sum = await listen(sum);
    P.big = await listen(big);
    P.banner = await listen(banner);
    P.closed = await freePort();
    P.doh = await listen(dohServer('doh.key', 'doh.pem', {
        'api.test': '127.0.0.1', 'loop.test': '127.0.0.1', 'sum.test': '127.0.0.1',
        'other.test': '127.0.0.1', 'private.test': '10.1.2.3',
    }));
    P.rogue = await listen(dohServer('rogue.key', 'rogue.pem', { 'api.test': '127.0.0.1' }));
    sock = path.join(work, 'egress.sock');

    const enclaveList = write('enclave.allow', [
        '# the image\'s list',
        `127.0.0.1:${P.echo}`, `127.0.0.1:${P.big}`, `127.0.0.1:${P.banner}`,
        `127.0.0.1:${P.closed}`, `127.0.0.1:${P.sum}`, `private.test:443`,
        `api.test:${P.echo}`, `*.test:${P.sum}`, `loop.test:${P.echo}`,
        `nohost.test:${P.echo}`, `127.0.0.1:${P.doh}`,
        `[::1]:${P.echo}`,
    ].join('\n') + '\n');
    // the operator's: not the sum port's names, not nohost.test, not the DoH
    // responder of the proxy's own tunnel test
    const hostList = write('host.allow', [
        `127.0.0.1:${P.echo}`, `127.0.0.1:${P.big}`, `127.0.0.1:${P.banner}`,
        `127.0.0.1:${P.closed}`, `127.0.0.1:${P.doh}`, `127.0.0.1:${P.rogue}`,
        `api.test:${P.echo}`, `loop.test:${P.echo}`, `sum.test:${P.sum}`,
        `127.0.0.1:${P.sum}`,
    ].join('\n') + '\n');
    write('host-noloop.allow', `loop.test:${P.echo}\n127.0.0.1:${P.doh}\n`);

    await start(['host', '--listen', `unix:${sock}`, '--allow', hostList], 'host');
    P.proxy = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${P.proxy}`, '--to', `unix:${sock}`,
                 '--allow', enclaveList, '--doh', `https://127.0.0.1:${P.doh}/dns-query`,
                 '--ca', path.join(work, 'ca.pem')], 'proxy');

    // the same, with a host that lists loop.test but not its address
    const sock2 = path.join(work, 'egress2.sock');
    await start(['host', '--listen', `unix:${sock2}`, '--allow',
                 path.join(work, 'host-noloop.allow')], 'host2');
    P.proxy2 = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${P.proxy2}`, '--to', `unix:${sock2}`,
                 '--allow', enclaveList, '--doh', `https://127.0.0.1:${P.doh}/dns-query`,
                 '--ca', path.join(work, 'ca.pem')], 'proxy2');

    // and one whose DoH server's certificate is not of the CA shipped
    P.proxy3 = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${P.proxy3}`, '--to', `unix:${sock}`,
                 '--allow', enclaveList, '--doh', `https://127.0.0.1:${P.rogue}/dns-query`,
                 '--ca', path.join(work, 'ca.pem')], 'proxy3');
});

after(() => {
    for (const p of procs) {
        p.kill('SIGKILL');
    }
    for (const s of servers) {
        s.close();
    }
});

test('an address on both lists: the tunnel carries bytes both ways', async () => {
    const r = await connect(P.proxy, `127.0.0.1:${P.echo}`);
    assert.equal(r.status, 200);
    r.socket.end('ping through the tunnel');
    assert.equal((await drain(r.socket)).toString(), 'ping through the tunnel');
});

test('bytes sent right behind the CONNECT (before the 200) are not lost', async () => {
    const r = await connect(P.proxy, `127.0.0.1:${P.echo}`, 'early bytes');
    assert.equal(r.status, 200);
    r.socket.end();
    assert.equal((await drain(r.socket)).toString(), 'early bytes');
});

test('a destination that speaks first: its bytes follow the 200 whole', async () => {
    const r = await connect(P.proxy, `127.0.0.1:${P.banner}`);
    assert.equal(r.status, 200);
    assert.equal((await drain(r.socket)).toString(), 'banner first\n');
});

test('a name resolved over DoH, on both lists', async () => {
    const r = await connect(P.proxy, `API.test:${P.echo}`);
    assert.equal(r.status, 200);
    r.socket.end('by name');
    assert.equal((await drain(r.socket)).toString(), 'by name');
});

test('16 MB up with its checksum, 16 MB down with its checksum', async () => {
    const up = await connect(P.proxy, `sum.test:${P.sum}`);
    assert.equal(up.status, 200);
    const h = crypto.createHash('sha256');
    for (let i = 0; i < 16; i++) {
        const chunk = crypto.randomBytes(1 << 20);
        h.update(chunk);
        if (!up.socket.write(chunk)) {
            await new Promise((r) => up.socket.once('drain', r));
        }
    }
    up.socket.end();                    /* the half-close crosses too */
    assert.equal((await drain(up.socket)).toString(), h.digest('hex'));

    const down = await connect(P.proxy, `127.0.0.1:${P.big}`);
    assert.equal(down.status, 200);
    down.socket.write(`${16 << 20}\n`);
    const got = await drain(down.socket);
    const data = got.subarray(0, 16 << 20);
    assert.equal(got.subarray((16 << 20) + 1).toString(),
                 crypto.createHash('sha256').update(data).digest('hex'));
});

test('not on the enclave\'s list: 403, logged, and the host never asked', async () => {
    const before = logs.host;
    const r = await connect(P.proxy, '10.0.0.1:443');
    assert.equal(r.status, 403);
    assert.match(r.body, /10\.0\.0\.1:443 is not on the enclave's allow-list/);
    assert.match(logs.proxy, /refused 10\.0\.0\.1:443: not on the enclave's allow-list/);
    assert.equal(logs.host, before);
    // a pattern does not cover the name itself, nor another port
    assert.equal((await connect(P.proxy, `test:${P.sum}`)).status, 403);
    assert.equal((await connect(P.proxy, `api.test:${P.big}`)).status, 403);
});

test('on the enclave\'s list, not on the host\'s: the host refuses, and logs it', async () => {
    const r = await connect(P.proxy, `other.test:${P.sum}`);
    assert.equal(r.status, 403);
    assert.match(r.body, /other\.test:\d+ is not on the host's allow-list/);
    assert.match(logs.host, /refused other\.test:\d+: not on the host's allow-list/);
});

test('the host refuses what only a bypassing enclave would ask', async () => {
    // a frame straight to the host's side, as code that skipped the proxy
    const ask = (fields) => new Promise((resolve, reject) => {
        const s = net.connect(sock);
        const parts = [];
        s.on('error', reject);
        s.on('data', (d) => parts.push(d));
        s.on('end', () => resolve(Buffer.concat(parts)));
        const text = (t) => Buffer.concat([Buffer.from([0x60 + t.length]), Buffer.from(t)]);
        const body = Buffer.concat([Buffer.from([0xA3]),
            text('host'), text(fields.host),
            text('port'), Buffer.from([0x19, fields.port >> 8, fields.port & 255]),
            text('ip'), text(fields.ip)]);
        const len = Buffer.alloc(4);
        len.writeUInt32BE(body.length);
        s.end(Buffer.concat([len, body]));
    });
    let got = await ask({ host: '10.1.2.3', port: 22, ip: '10.1.2.3' });
    assert.match(got.toString(), /10\.1\.2\.3:22 is not on the host's allow-list/);
    // a listed name, and an address of the host's own (cloud metadata)
    got = await ask({ host: 'api.test', port: P.echo, ip: '169.254.169.254' });
    assert.match(got.toString(), /at 169\.254\.169\.254: not a public address/);
    // AWS's IPv6 metadata, a private network, NAT64 around loopback
    for (const ip of ['fd00:ec2::254', '10.0.0.5', '192.168.1.1', '64:ff9b::7f00:1',
                      '::ffff:127.0.0.1']) {
        got = await ask({ host: 'api.test', port: P.echo, ip });
        assert.match(got.toString(), /not a public address/, ip);
    }
    // a listed address, and another address to connect to
    got = await ask({ host: '127.0.0.1', port: P.echo, ip: '10.9.9.9' });
    assert.match(got.toString(), /not a public address/);
    assert.match(logs.host, /refused 10\.1\.2\.3:22/);
    // a name with a newline in it: logged as one line, not as a forged one
    got = await ask({ host: 'x\negress: forged', port: 22, ip: '1.2.3.4' });
    assert.match(got.toString(), /not a destination/);
    assert.doesNotMatch(logs.host, /^egress: forged/m);
});

test('a name that resolves to the host\'s loopback, its address not listed: refused', async () => {
    const r = await connect(P.proxy2, `loop.test:${P.echo}`);
    assert.equal(r.status, 403);
    assert.match(r.body, /loop\.test:\d+ at 127\.0\.0\.1: not a public address/);
});

test('a listed name that resolves into a private network: the enclave refuses it', async () => {
    const before = logs.host;
    const r = await connect(P.proxy, 'private.test:443');
    assert.equal(r.status, 403);
    assert.match(r.body, /private\.test:443 resolved to 10\.1\.2\.3, not a public address/);
    assert.equal(logs.host, before, 'the host was never asked');
});

test('DoH: an unknown name is 502 "no such name"; a server not of the CA is not believed', async () => {
    let r = await connect(P.proxy, `nohost.test:${P.echo}`);
    assert.equal(r.status, 502);
    assert.match(r.body, /cannot resolve nohost\.test: no such name/);
    r = await connect(P.proxy3, `api.test:${P.echo}`);
    assert.equal(r.status, 502);
    assert.match(r.body, /cannot resolve api\.test: DoH .*(certificate|SSL)/i);
});

test('a destination that is down: 502 with the host\'s reason', async () => {
    const r = await connect(P.proxy, `127.0.0.1:${P.closed}`);
    assert.equal(r.status, 502);
    assert.match(r.body, /connect 127\.0\.0\.1:\d+: .*refused/i);
});

test('either side killed mid-transfer: the client is not left waiting', async () => {
    for (const side of ['host', 'proxy']) {
        const sockK = path.join(work, `kill-${side}.sock`);
        const host = await start(['host', '--listen', `unix:${sockK}`, '--allow',
                                  path.join(work, 'host.allow')], `kill-host-${side}`, true);
        const port = await freePort();
        const proxy = await start(['proxy', '--listen', `tcp:127.0.0.1:${port}`,
                                   '--to', `unix:${sockK}`, '--allow',
                                   path.join(work, 'enclave.allow')], `kill-proxy-${side}`, true);
        const r = await connect(port, `127.0.0.1:${P.big}`);
        assert.equal(r.status, 200);
        r.socket.write(`${256 << 20}\n`);
        let got = 0;
        const ended = new Promise((resolve) => {
            r.socket.on('data', (d) => {
                got += d.length;
                if (got >= (1 << 20) && !r.killed) {
                    r.killed = true;
                    process.kill(-(side === 'host' ? host : proxy).pid, 'SIGKILL');
                }
            });
            r.socket.on('close', () => resolve('closed'));
            r.socket.on('error', () => {});
            r.socket.resume();
        });
        const timeout = new Promise((resolve) => setTimeout(() => resolve('hung'), 10000));
        assert.equal(await Promise.race([ended, timeout]), 'closed', side);
        assert.ok(got < 256 << 20, 'it ended before the whole');
        process.kill(-(side === 'host' ? proxy : host).pid, 'SIGKILL');
    }
});

test('--max: those beyond get 503, and the log a line a second, not one each', async () => {
    const port = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${port}`, '--to', `unix:${sock}`,
                 '--allow', path.join(work, 'enclave.allow'), '--max', '2'], 'proxy-max');
    // two that hold their slots (no request head yet)
    const held = [net.connect(port, '127.0.0.1'), net.connect(port, '127.0.0.1')];
    held.forEach((h) => h.on('error', () => {}));
    await new Promise((r) => setTimeout(r, 300));
    const answers = await Promise.all(Array.from({ length: 20 }, () => new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d) => { got += d; });
        s.on('error', () => resolve(got));
        s.on('close', () => resolve(got));
    })));
    for (const a of answers) {
        assert.match(a, /^HTTP\/1\.1 503 .*too many connections at once/s);
    }
    held.forEach((h) => h.destroy());
    const lines = logs['proxy-max'].match(/refused \d+ connection\(s\)/g) ?? [];
    assert.ok(lines.length >= 1 && lines.length <= 3, logs['proxy-max']);
});

test('libcurl honours it: https_proxy, TLS ending at the destination', async () => {
    // not spawnSync: the destination is a server of this process
    const p = spawn('curl', ['-sS', '--max-time', '10', '--cacert', path.join(work, 'ca.pem'),
                             `https://127.0.0.1:${P.doh}/hello`],
                    { env: { ...process.env, https_proxy: `http://127.0.0.1:${P.proxy}`,
                             no_proxy: '' } });
    let out = '', said = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { said += d; });
    await new Promise((r) => p.on('exit', r));
    assert.equal(out, 'hello over TLS\n', said);
    assert.match(logs.proxy, /127\.0\.0\.1:\d+ \(127\.0\.0\.1\)|listening/);
});

test('bad requests: not CONNECT, no port, a head too large or never ended', async () => {
    const raw = (bytes, endAfter = true) => new Promise((resolve) => {
        const s = net.connect(P.proxy, '127.0.0.1');
        const parts = [];
        s.on('error', () => resolve(Buffer.concat(parts).toString()));
        s.on('data', (d) => parts.push(d));
        s.on('end', () => resolve(Buffer.concat(parts).toString()));
        s.write(bytes);
        if (endAfter) {
            s.end();
        }
    });
    assert.match(await raw('GET http://127.0.0.1/ HTTP/1.1\r\n\r\n'),
                 /^HTTP\/1\.1 405 .*only CONNECT/s);
    assert.match(await raw('CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw('CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw('CONNECT bad_name!:443 HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(await raw('CONNECT a:1 HTTP/1.1\r\nX: ' + 'y'.repeat(9000) + '\r\n\r\n'),
                 /^HTTP\/1\.1 400 .*8 KiB/s);
    assert.match(await raw('CONNECT a:1 HTTP/1.1\r\n'), /^HTTP\/1\.1 400 /);
});

test('initialize\'s additions: only those the image permits', async () => {
    const permit = write('permit', `*.chain.test:443\n`);
    let r = refusesToStart(['proxy', '--listen', 'tcp:127.0.0.1:1', '--to', `unix:${sock}`,
                            '--allow', write('a1', ''), '--extra',
                            write('x1', 'evil.example:443\n'), '--permit', permit]);
    assert.equal(r.status, 2);
    assert.match(r.said, /evil\.example:443 is not one the image permits/);
    r = refusesToStart(['proxy', '--listen', 'tcp:127.0.0.1:1', '--to', `unix:${sock}`,
                        '--allow', write('a2', ''), '--extra',
                        write('x2', '*.chain.test:443\n'), '--permit', permit]);
    assert.match(r.said, /not one the image permits/);
    const port = await freePort();
    const hostList = write('x3', `rpc.chain.test:443\n`);
    await start(['proxy', '--listen', `tcp:127.0.0.1:${port}`, '--to', `unix:${sock}`,
                 '--allow', write('a3', ''), '--extra', hostList, '--permit', permit],
                'proxy4');
    assert.match(logs.proxy4, /1 allowed/);
    // no DoH on this one: on the list now, but no way to resolve it
    const got = await connect(port, 'rpc.chain.test:443');
    assert.equal(got.status, 502);
    assert.equal((await connect(port, 'other.chain.test:443')).status, 403);
});

// until fn() is true (or false after ms)
async function until(fn, ms = 5000) {
    for (const end = Date.now() + ms; Date.now() < end; ) {
        if (await fn()) {
            return true;
        }
        await new Promise((r) => setTimeout(r, 100));
    }
    return false;
}

// a plain TCP connection: what it gets until the end, after sending what
function exchange(port, what) {
    return new Promise((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1');
        const parts = [];
        s.on('error', reject);
        s.on('connect', () => s.end(what));
        s.on('data', (d) => parts.push(d));
        s.on('close', () => resolve(Buffer.concat(parts).toString()));
    });
}

test('additions the agent makes later (add_peer) are taken within a second, still only permitted ones', async () => {
    const permit = write('permit5', `127.0.0.1:${P.echo}\n127.0.0.1:${P.sum}\n`);
    const extra = path.join(work, 'x5');
    const port = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${port}`, '--to', `unix:${sock}`,
                 '--allow', write('a8', ''), '--extra', extra, '--permit', permit],
                'proxy5');
    assert.equal((await connect(port, `127.0.0.1:${P.echo}`)).status, 403);
    write('x5', `127.0.0.1:${P.echo}\n`);
    assert.ok(await until(async () => {
        const r = await connect(port, `127.0.0.1:${P.echo}`);
        r.socket?.destroy();
        return r.status === 200;
    }), 'an addition written later is taken');
    // one the image does not permit: the whole file is refused, the list
    // stays as it was
    write('x5', `127.0.0.1:${P.echo}\n127.0.0.1:${P.big}\n`);
    assert.ok(await until(() => logs.proxy5.includes('the additions stay as they were')));
    assert.equal((await connect(port, `127.0.0.1:${P.big}`)).status, 403);
    const r = await connect(port, `127.0.0.1:${P.echo}`);
    assert.equal(r.status, 200);
    r.socket.destroy();
});

test('--forwards: a port of loopback carried to one destination, checked on both sides', async () => {
    const permit = write('permit6', `127.0.0.1:${P.echo}\n127.0.0.1:${P.sum}\n127.0.0.1:${P.big}\n`);
    const extra = write('x6', `127.0.0.1:${P.echo}\n127.0.0.1:${P.sum}\n`);
    const forwards = path.join(work, 'fw6');
    const [p1, p2, p3, p4] = [await freePort(), await freePort(), await freePort(),
                              await freePort()];
    const proxy = await freePort();
    await start(['proxy', '--listen', `tcp:127.0.0.1:${proxy}`, '--to', `unix:${sock}`,
                 '--allow', write('a9', ''), '--extra', extra, '--permit', permit,
                 '--forwards', forwards], 'proxy6');
    // p3: not on the enclave's list (the additions hold echo and sum only)
    write('fw6', `${p1} 127.0.0.1:${P.echo}\n${p3} 127.0.0.1:${P.big}\n`);
    assert.ok(await until(() => logs.proxy6.includes(`forwarding 127.0.0.1:${p1}`)));
    assert.equal(await exchange(p1, 'through a forward\n'), 'through a forward\n');
    // each connection is checked as a CONNECT is
    assert.ok(await until(() => logs.proxy6.includes(`forwarding 127.0.0.1:${p3}`)));
    const refused = await exchange(p3, 'x').catch((e) => e.code);
    assert.ok(refused === '' || refused === 'ECONNRESET', refused);
    assert.match(logs.proxy6, new RegExp(`refused 127.0.0.1:${P.big}: not on the enclave's allow-list`));
    // a line added later (add_peer); and one to a destination the host's
    // list does not hold: the connection is closed, and both sides log it
    write('fw6', `${p1} 127.0.0.1:${P.echo}\n${p3} 127.0.0.1:${P.big}\n`
                 + `${p2} 127.0.0.1:${P.sum}\n`);
    assert.ok(await until(() => logs.proxy6.includes(`forwarding 127.0.0.1:${p2}`)));
    const want = crypto.createHash('sha256').update('summed').digest('hex');
    assert.equal((await exchange(p2, 'summed')).trim(), want);
    const unlisted = await listen(echoServer());    /* not on the host's list */
    fs.writeFileSync(permit, fs.readFileSync(permit, 'utf8') + `127.0.0.1:${unlisted}\n`);
    fs.writeFileSync(extra, `127.0.0.1:${P.echo}\n127.0.0.1:${P.sum}\n127.0.0.1:${unlisted}\n`);
    write('fw6', `${p1} 127.0.0.1:${P.echo}\n${p2} 127.0.0.1:${P.sum}\n`
                 + `${p4} 127.0.0.1:${unlisted}\n`);
    assert.ok(await until(() => logs.proxy6.includes(`forwarding 127.0.0.1:${p4}`)));
    // closed or reset, nothing carried
    const got = await exchange(p4, 'not for the host\n').catch((e) => e.code);
    assert.ok(got === '' || got === 'ECONNRESET', got);
    assert.match(logs.proxy6, new RegExp(`127.0.0.1:${unlisted} \\(127.0.0.1\\): the host refused`));
    assert.match(logs.host, new RegExp(`127.0.0.1:${unlisted}`));
    // a line that is not PORT HOST:PORT is logged and skipped; a port's
    // destination is the file's latest (an add_peer left unfinished, then
    // done again)
    write('fw6', `${p1} 127.0.0.1:${P.echo}\nnonsense\n${p2} 127.0.0.1:${P.echo}\n`);
    assert.ok(await until(() => logs.proxy6.includes('"nonsense" is not PORT HOST:PORT')));
    assert.match(logs.proxy6, new RegExp(`forwarding 127.0.0.1:${p2} to 127.0.0.1:${P.echo} now`));
    assert.equal(await exchange(p1, 'still\n'), 'still\n');
    assert.equal(await exchange(p2, 'echoed now\n'), 'echoed now\n');
});

test('bad lists and arguments are refused at start, with the line', () => {
    let r = refusesToStart(['host', '--listen', `unix:${sock}x`, '--allow',
                            write('bad1', 'ok.test:443\nnot a destination\n')]);
    assert.equal(r.status, 2);
    assert.match(r.said, /bad1:2: "not a destination" is not HOST:PORT/);
    r = refusesToStart(['proxy', '--listen', 'unix:/tmp/x', '--to', `unix:${sock}`,
                        '--allow', write('a4', '')]);
    assert.match(r.said, /the proxy is an HTTP proxy/);
    r = refusesToStart(['proxy', '--listen', 'tcp:127.0.0.1:1', '--to', `unix:${sock}`,
                        '--allow', write('a5', ''), '--doh', 'https://dns.example/q',
                        '--ca', path.join(work, 'ca.pem')]);
    assert.match(r.said, /the host must be an address/);
    r = refusesToStart(['host', '--listen', `unix:${sock}y`, '--allow', write('a6', ''),
                        '--doh', 'https://127.0.0.1/q']);
    assert.match(r.said, /the enclave's side's/);
    r = refusesToStart(['proxy', '--listen', 'tcp:127.0.0.1:1', '--to', `unix:${sock}`,
                        '--allow', write('a7', ''), '--doh', 'https://127.0.0.1/q']);
    assert.match(r.said, /--doh needs --ca/);
    r = refusesToStart(['host', '--listen', `unix:${sock}z`, '--allow', write('a10', ''),
                        '--forwards', path.join(work, 'fw')]);
    assert.match(r.said, /the enclave's side's/);
});

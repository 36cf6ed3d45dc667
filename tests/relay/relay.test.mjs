// proven-relay (lib/net) as the inbound path has it: a client's TCP
// connection to the host's relay, carried over the transport (a unix
// socket stands in for vsock) to the enclave's relay, and from there to a
// server on loopback.  What passes must arrive whole, in order, with its
// half-closes and resets; a relay that dies must not leave a client
// hanging.
//
//   PROVEN_RELAY: the proven-relay binary; PROVEN_WORK: a scratch directory

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { bigServer, echoServer, sumServer } from '../servers.mjs';

const relayBin = process.env.PROVEN_RELAY;
const work = process.env.PROVEN_WORK;
const relays = [];
const extra = [];                       /* servers of single tests */

function startRelay(args) {
    return new Promise((resolve, reject) => {
        const p = spawn(relayBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        let said = '';
        p.stderr.on('data', (d) => {
            said += d;
            if (said.includes(' -> ')) {
                resolve(p);
            }
        });
        p.on('exit', (code) => reject(new Error(`relay exited ${code}: ${said}`)));
        relays.push(p);
    });
}

function listen(server) {
    return new Promise((resolve) => server.listen(0, '127.0.0.1',
                                                  () => resolve(server.address().port)));
}

// Servers behind the enclave's relay (../servers.mjs), and two of its own.
const echo = echoServer();
const half = sumServer();
const big = bigServer();
// reset: resets every connection as soon as it has a byte.
const resetter = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.resetAndDestroy());
});
// proxy: answers with the first 28 bytes it got, in hex.
const proxy = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', (d) => s.end(d.subarray(0, 28).toString('hex')));
});

const ports = {};

// host relay (tcp -> unix) and enclave relay (unix -> tcp) for a server
async function chain(name, server, hostArgs = []) {
    const target = await listen(server);
    const sock = path.join(work, `${name}.sock`);
    await startRelay(['--listen', `unix:${sock}`, '--transport', 'listen',
                      '--to', `tcp:127.0.0.1:${target}`]);
    // a free port for the host side: listen on 0, close, reuse
    const probe = net.createServer();
    const port = await listen(probe);
    await new Promise((r) => probe.close(r));
    const host = await startRelay(['--listen', `tcp:127.0.0.1:${port}`,
                                   '--to', `unix:${sock}`, '--transport', 'to',
                                   ...hostArgs]);
    ports[name] = port;
    return host;
}

let bigHost;
before(async () => {
    await chain('echo', echo);
    await chain('half', half);
    bigHost = await chain('big', big);
    await chain('reset', resetter);
    await chain('proxy', proxy, ['--proxy-protocol']);
});

after(() => {
    for (const p of relays) {
        p.kill('SIGKILL');
    }
    for (const s of [echo, half, big, resetter, proxy, ...extra]) {
        s.close();
    }
});

function connect(port) {
    return new Promise((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
    });
}

// everything the socket says until its end: {data, error}
function drain(s) {
    return new Promise((resolve) => {
        const parts = [];
        s.on('data', (d) => parts.push(d));
        s.on('error', (e) => resolve({ data: Buffer.concat(parts), error: e }));
        s.on('end', () => resolve({ data: Buffer.concat(parts), error: null }));
    });
}

test('1000 connections at once, each echoed whole and in order', async () => {
    const one = async () => {
        const s = await connect(ports.echo);
        const sent = crypto.randomBytes(64 * 1024);
        const got = drain(s);
        s.end(sent);
        const { data, error } = await got;
        assert.equal(error, null);
        assert.ok(data.equals(sent));
    };
    await Promise.all(Array.from({ length: 1000 }, one));
});

test('a half-close passes: the server reads to the end, then answers', async () => {
    const s = await connect(ports.half);
    const sent = crypto.randomBytes(3 * 1024 * 1024 + 17);
    const got = drain(s);
    s.end(sent);
    const { data, error } = await got;
    assert.equal(error, null);
    assert.equal(data.toString(),
                 crypto.createHash('sha256').update(sent).digest('hex'));
});

test('64 MB one way and 64 MB the other, checksums equal', async () => {
    const s = await connect(ports.echo);
    const h = crypto.createHash('sha256');
    const got = drain(s);
    let left = 64 << 20;
    await new Promise((resolve) => {
        const more = () => {
            while (left > 0) {
                const chunk = crypto.randomBytes(1 << 20);
                left -= chunk.length;
                h.update(chunk);
                if (!s.write(chunk)) {
                    s.once('drain', more);
                    return;
                }
            }
            s.end();
            resolve();
        };
        more();
    });
    const { data, error } = await got;
    assert.equal(error, null);
    assert.equal(data.length, 64 << 20);
    assert.equal(crypto.createHash('sha256').update(data).digest('hex'),
                 h.digest('hex'));
});

// A unix socket (and vsock) has no reset of its own: the transport leg's
// RESET frame carries it.
test('a reset by the server reaches the client as a reset', async () => {
    const s = await connect(ports.reset);
    const got = drain(s);
    s.write('x');
    const { error } = await got;
    assert.ok(error, 'no error');
    assert.equal(error.code, 'ECONNRESET');
});

test('the PROXY v2 header gives the server the client\'s address', async () => {
    const s = await connect(ports.proxy);
    const clientPort = s.localPort;
    const got = drain(s);
    s.end('hello');
    const { data } = await got;
    const h = Buffer.from(data.toString(), 'hex');
    assert.equal(h.subarray(0, 12).toString('hex'), '0d0a0d0a000d0a515549540a');
    assert.equal(h[12], 0x21);
    assert.equal(h[13], 0x11);
    assert.equal(h.readUInt16BE(14), 12);
    assert.equal([...h.subarray(16, 20)].join('.'), '127.0.0.1');
    assert.equal(h.readUInt16BE(24), clientPort);
    assert.equal(h.readUInt16BE(26), ports.proxy);
});

test('no server behind the relay: the client is reset at once',
     { timeout: 10000 }, async () => {
    const sock = path.join(work, 'nobody.sock');
    const probe = net.createServer();
    const port = await listen(probe);
    await new Promise((r) => probe.close(r));
    await startRelay(['--listen', `tcp:127.0.0.1:${port}`, '--to', `unix:${sock}`]);
    const outcome = await new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', (e) => resolve(e.code));
        s.on('data', () => resolve('data'));
        s.on('end', () => resolve('end'));
    });
    assert.equal(outcome, 'ECONNRESET');
});

test('a reset by the client reaches the server as a reset', async () => {
    const seen = new Promise((resolve) => {
        half.once('connection', (s) => s.on('error', (e) => resolve(e.code)));
    });
    const s = await connect(ports.half);
    s.write('partial');
    await new Promise((r) => setTimeout(r, 100));
    s.resetAndDestroy();
    assert.equal(await seen, 'ECONNRESET');
});

// A chain whose relays say what they do (--verbose): {said()} of each.
async function verboseChain(server) {
    const target = await listen(server);
    const sock = path.join(work, `v${target}.sock`);
    const log = { enclave: '', host: '' };
    const inner = await startRelay(['--listen', `unix:${sock}`, '--transport',
                                    'listen', '--to', `tcp:127.0.0.1:${target}`,
                                    '--verbose']);
    inner.stderr.on('data', (d) => { log.enclave += d; });
    const probe = net.createServer();
    const port = await listen(probe);
    await new Promise((r) => probe.close(r));
    const outer = await startRelay(['--listen', `tcp:127.0.0.1:${port}`, '--to',
                                    `unix:${sock}`, '--transport', 'to', '--verbose']);
    outer.stderr.on('data', (d) => { log.host += d; });
    return { port, log };
}

async function until(what, test) {
    for (let i = 0; i < 100 && !test(); i++) {
        await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(test(), what);
}

test('a reset after a half-close still crosses the transport, both ways',
     async () => {
    // the client ends its side, then resets, while the server keeps its
    // own side open and idle: the enclave's relay learns of it and
    // resets the server (before, it waited for the server to write)
    const lingerer = net.createServer({ allowHalfOpen: true });
    lingerer.on('connection', (t) => { t.on('error', () => {}); t.resume(); });
    extra.push(lingerer);
    let v = await verboseChain(lingerer);
    const c = await connect(v.port);
    c.on('error', () => {});
    c.end('x');
    await new Promise((r) => setTimeout(r, 100));
    c.resetAndDestroy();
    await until(`the enclave relay resets the server: ${JSON.stringify(v.log)}`, () =>
        v.log.enclave.includes('a connection reset'));

    // the server ends its side, then resets, the client half open and
    // idle: the host's relay learns of it and resets the client
    const endThenReset = net.createServer((t) => {
        t.on('error', () => {});
        t.once('data', () => {
            t.end('bye');
            setTimeout(() => t.resetAndDestroy(), 100);
        });
    });
    extra.push(endThenReset);
    v = await verboseChain(endThenReset);
    const d = await new Promise((resolve, reject) => {
        const x = net.connect({ port: v.port, host: '127.0.0.1',
                                allowHalfOpen: true }, () => resolve(x));
        x.once('error', reject);
    });
    d.on('error', () => {});
    d.write('hello');
    d.resume();
    await until('the host relay resets the client', () =>
        v.log.host.includes('a connection reset'));
});

test('the transport leg cut (the enclave relay killed): a reset, not a hang',
     { timeout: 10000 }, async () => {
    const sock = path.join(work, 'cut.sock');
    const quiet = net.createServer((s) => {
        s.on('error', () => {});
    });
    extra.push(quiet);
    const target = await listen(quiet);
    const inner = await startRelay(['--listen', `unix:${sock}`,
                                    '--transport', 'listen',
                                    '--to', `tcp:127.0.0.1:${target}`]);
    const probe = net.createServer();
    const port = await listen(probe);
    await new Promise((r) => probe.close(r));
    await startRelay(['--listen', `tcp:127.0.0.1:${port}`, '--to',
                      `unix:${sock}`, '--transport', 'to']);
    const s = await connect(port);
    const got = drain(s);
    s.write('hello');
    await new Promise((r) => setTimeout(r, 100));
    inner.kill('SIGKILL');
    const { error } = await got;
    assert.equal(error?.code, 'ECONNRESET');
});

// CPU time (user + system, seconds) of a process so far
function cpu(pid) {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
}

test('a peer that half-closes and then reads nothing costs no CPU',
     { timeout: 20000 }, async () => {
    // the server answers 4 MB after the client's end; the client never
    // reads it: both relays wait, with sockets that have hung up
    const late = net.createServer((s) => {
        s.on('error', () => {});
        s.on('data', () => {});
        s.on('end', () => s.end(Buffer.alloc(1 << 20, 1)));
    });
    extra.push(late);
    const before = relays.length;
    await chain('late', late);
    const pids = relays.slice(before).map((p) => p.pid);
    // as the host would: framed, straight to the enclave's relay, "x" and
    // END, then nothing read (the server's end arrives while its bytes
    // wait: a socket shut both ways, with data, hangs up for good)
    const s = net.connect(path.join(work, 'late.sock'));
    await new Promise((r) => s.once('connect', r));
    s.on('error', () => {});
    s.write(Buffer.from([0, 0, 0, 1, 0x78, 0x40, 0, 0, 0]));
    s.pause();
    await new Promise((r) => setTimeout(r, 500));
    const t0 = pids.map(cpu);
    await new Promise((r) => setTimeout(r, 1500));
    const spent = pids.map((p, i) => cpu(p) - t0[i]);
    s.destroy();
    for (const t of spent) {
        assert.ok(t < 0.15, `a relay spent ${t} s of CPU waiting`);
    }
});

test('the leg closed while the bytes for a slow server wait: no CPU spent',
     { timeout: 20000 }, async () => {
    // the enclave relay's pipe to a server that reads nothing is full when
    // the host closes the leg: the hang-up cannot be read yet, and must
    // not wake the relay over and over meanwhile
    const stuck = net.createServer((t) => { t.on('error', () => {}); t.pause(); });
    extra.push(stuck);
    const before = relays.length;
    await chain('stuck', stuck);
    const pids = relays.slice(before, before + 1).map((p) => p.pid);
    const s = net.connect(path.join(work, 'stuck.sock'));
    await new Promise((r) => s.once('connect', r));
    s.on('error', () => {});
    const frame = Buffer.alloc(4 + 65536, 7);
    frame.writeUInt32BE(65536);
    // 32 MB: more than the server's socket buffers take
    for (let i = 0; i < 512; i++) {
        s.write(frame);
    }
    await new Promise((r) => setTimeout(r, 1000));
    s.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const t0 = pids.map(cpu);
    await new Promise((r) => setTimeout(r, 1500));
    const spent = pids.map((p, i) => cpu(p) - t0[i]);
    for (const t of spent) {
        assert.ok(t < 0.15, `the enclave relay spent ${t} s of CPU waiting`);
    }
});

test('out of file descriptors, the relay refuses and does not spin',
     { timeout: 20000 }, async () => {
    const quiet = net.createServer((s) => s.on('error', () => {}));
    extra.push(quiet);
    const target = await listen(quiet);
    const probe = net.createServer();
    const port = await listen(probe);
    await new Promise((r) => probe.close(r));
    // 40 descriptors: (40 - 16) / 6 = 4 connections at once
    const p = spawn('prlimit', ['--nofile=40:40', relayBin, '--listen',
                                `tcp:127.0.0.1:${port}`, '--to',
                                `tcp:127.0.0.1:${target}`],
                    { stdio: 'ignore' });
    relays.push(p);
    await new Promise((r) => setTimeout(r, 300));
    const conns = await Promise.all(Array.from({ length: 12 }, () =>
        new Promise((resolve) => {
            const s = net.connect(port, '127.0.0.1');
            s.on('error', () => resolve('refused'));
            s.on('close', () => resolve('refused'));
            s.on('connect', () => setTimeout(() => resolve(s), 300));
        })));
    const open = conns.filter((c) => c !== 'refused' && !c.destroyed);
    assert.ok(open.length <= 4, `${open.length} connections held`);
    const t0 = cpu(p.pid);
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(cpu(p.pid) - t0 < 0.15, 'the relay spins');
    for (const c of open) {
        c.destroy();
    }
});

test('the host relay killed mid-transfer: the client does not hang',
     { timeout: 20000 }, async () => {
    const s = await connect(ports.big);
    const got = drain(s);
    s.write(`${1 << 30}\n`);
    let seen = 0;
    s.on('data', (d) => {
        seen += d.length;
        if (seen > 8 << 20 && bigHost.exitCode === null) {
            bigHost.kill('SIGKILL');
        }
    });
    const { data } = await got;
    assert.ok(data.length < 1 << 30, 'the transfer was not cut');
});

test('bad addresses are refused with a reason', () => {
    for (const [addr, why] of [
        ['vsock:x:1', /CID is a number or "any"/],
        ['vsock:3', /needs a CID and a port/],
        ['tcp:example.com:80', /not a numeric address/],
        ['tcp:127.0.0.1:99999', /port/],
        ['tcp:::1:80', /IPv6 host goes in brackets/],
        ['unix:', /path of 1 to/],
        ['http://127.0.0.1', /is not vsock:CID:PORT, unix:PATH or tcp:HOST:PORT/],
    ]) {
        const r = spawnSync(relayBin, ['--listen', addr, '--to', 'unix:/x']);
        assert.equal(r.status, 2, addr);
        assert.match(r.stderr.toString(), why, addr);
    }
});

// A connected pair over a unix socket: {client, inner}; inner is the end
// qemu's guestfwd would hand a program as its stdin, stdout and stderr.
async function handOver(name) {
    const sock = path.join(work, name);
    const server = net.createServer();
    extra.push(server);
    await new Promise((resolve) => server.listen(sock, resolve));
    const handed = new Promise((resolve) => server.once('connection', resolve));
    const client = await new Promise((resolve) => {
        const c = net.connect(sock, () => resolve(c));
    });
    return { client, inner: await handed };
}

test('--listen fd:0 carries the one socket on its stdin (qemu guestfwd), '
     + 'writes nothing of its own to it, then ends', { timeout: 10000 },
     async () => {
    const { client, inner } = await handOver('fd0.sock');
    /* as libslirp does: one socket as stdin, stdout and stderr */
    const p = spawn(relayBin, ['--listen', 'fd:0', '--to',
                               `tcp:127.0.0.1:${echo.address().port}`,
                               '--verbose'], { stdio: [inner, inner, inner] });
    const exited = new Promise((resolve) => p.on('exit', resolve));
    inner.destroy();                  /* the child holds it now */
    const got = drain(client);
    client.end('through fd 0');
    const { data, error } = await got;
    assert.equal(error, null);
    assert.equal(data.toString(), 'through fd 0');
    assert.equal(await exited, 0);
});

test('--listen fd:N refuses what is not a connected stream socket', () => {
    const r = spawnSync(relayBin, ['--listen', 'fd:0', '--to', 'unix:/x'],
                        { stdio: [fs.openSync('/dev/null', 'r'), 'pipe',
                                  'pipe'] });
    assert.equal(r.status, 2);
    assert.match(r.stderr.toString(), /fd:N wants a connected stream socket/);
});

test('--listen fd:0 whose target refuses: the connection ends, exit 1',
     { timeout: 10000 }, async () => {
    const { client, inner } = await handOver('fd0b.sock');
    const p = spawn(relayBin, ['--listen', 'fd:0', '--to',
                               `unix:${path.join(work, 'nobody.sock')}`],
                    { stdio: [inner, inner, inner] });
    const exited = new Promise((resolve) => p.on('exit', resolve));
    inner.destroy();
    const { data } = await drain(client);
    assert.equal(data.length, 0);
    assert.equal(await exited, 1);
});

test('a unix path another relay listens on is not taken from it', async () => {
    const sock = path.join(work, 'taken.sock');
    const first = await startRelay(['--listen', `unix:${sock}`, '--to',
                                    `tcp:127.0.0.1:${echo.address().port}`]);
    const r = spawnSync(relayBin, ['--listen', `unix:${sock}`, '--to',
                                   'unix:/x']);
    assert.equal(r.status, 1);
    assert.match(r.stderr.toString(), /another process listens there/);
    /* and the first still serves */
    const s = await new Promise((resolve, reject) => {
        const c = net.connect(sock, () => resolve(c));
        c.on('error', reject);
    });
    const got = drain(s);
    s.end('still mine');
    assert.equal((await got).data.toString(), 'still mine');
    first.kill('SIGKILL');
});

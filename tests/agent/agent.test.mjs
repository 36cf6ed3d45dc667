// proven-agent: the enclave's end of the host's control channel, over the
// unix stand-in for vsock.  A stand-in init answers status and shutdown on
// its socket as rootfs/init does; log lines go in as init sends them (a
// SOCK_SEQPACKET record a line, written here by perl: Node has no such
// sockets).
//
//   PROVEN_AGENT: the proven-agent binary; PROVEN_WORK: a scratch directory

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';

import * as cbor from '../../runtime/node_modules/cborg/cborg.js';

const bin = process.env.PROVEN_AGENT;
const work = process.env.PROVEN_WORK;
const at = (name) => path.join(work, name);
let agent, said = '';
const initGot = [];

// a request as lib's frame: 4-byte length, CBOR
const frame = (obj) => {
    const body = cbor.encode(obj);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    return Buffer.concat([len, body]);
};

// init's control socket: "status" and "shutdown [GRACE]", as init answers
const fakeInit = net.createServer((s) => {
    s.on('data', (d) => {
        const line = d.toString().trim();
        initGot.push(line);
        if (line === 'status') {
            s.end('agent running pid 2 starts 1 up 3 s\nnginx restarting in 200 ms starts 2\nend\n');
        } else if (line.startsWith('shutdown')) {
            s.end('ok\n');
        } else {
            s.end('unknown command\n');
        }
    });
});

// calls fn with each whole frame the socket gives, decoded
function onFrames(s, fn) {
    let got = Buffer.alloc(0);
    s.on('data', (d) => {
        got = Buffer.concat([got, d]);
        while (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
            fn(cbor.decode(got.subarray(4, 4 + got.readUInt32BE(0)),
                           { useMaps: false }));
            got = got.subarray(4 + got.readUInt32BE(0));
        }
    });
}

// one request over a fresh connection; the decoded answer
function ask(request, raw = null) {
    return new Promise((resolve, reject) => {
        const s = net.connect(at('control.sock'));
        let got = Buffer.alloc(0);
        s.on('error', reject);
        s.on('data', (d) => {
            got = Buffer.concat([got, d]);
            if (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
                s.destroy();
                resolve(cbor.decode(got.subarray(4, 4 + got.readUInt32BE(0)),
                                    { useMaps: false }));
            }
        });
        s.on('close', () => resolve(null));
        const body = raw ?? cbor.encode(request);
        const len = Buffer.alloc(4);
        len.writeUInt32BE(body.length);
        s.write(Buffer.concat([len, body]));
    });
}

// lines to the agent's log socket, as init sends them
function writeLines(count, width) {
    return new Promise((resolve, reject) => {
        const p = spawn('perl', ['-MSocket', '-MIO::Socket::UNIX', '-e', `
            my $s = IO::Socket::UNIX->new(Type => SOCK_SEQPACKET,
                                          Peer => $ARGV[0]) or die "connect: $!";
            for my $i (0 .. $ARGV[1] - 1) {
                my $line = sprintf("svc: line %06d ", $i) . ("x" x $ARGV[2]);
                defined $s->send($line) or die "send: $!";
            }`, at('log.sock'), String(count), String(width)]);
        let err = '';
        p.stderr.on('data', (d) => { err += d; });
        p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(err))));
    });
}

before(async () => {
    await new Promise((r) => fakeInit.listen(at('init.sock'), r));
    fs.writeFileSync(at('permit'), '*.chain.test:443\n127.0.0.1:8545\n');
    agent = spawn(bin, ['--control', `unix:${at('control.sock')}`, '--ready', at('ready'),
                        '--extra', at('extra'), '--permit', at('permit'),
                        '--init-socket', at('init.sock'), '--log-socket', at('log.sock'),
                        '--log-buffer', '8192'],
                  { stdio: ['ignore', 'ignore', 'pipe'] });
    agent.stderr.on('data', (d) => { said += d; });
    while (!said.includes('control on')) {
        await new Promise((r) => setTimeout(r, 20));
    }
});

after(() => {
    agent.kill('SIGKILL');
    fakeInit.close();
});

test('status before initialize: not initialized, and init (busy starting) not asked', async () => {
    const r = await ask({ id: 1, op: 'status' });
    assert.equal(r.id, 1);
    assert.equal(r.ok, true);
    assert.equal(r.result.initialized, false);
    assert.deepEqual(r.result.services, []);
    assert.deepEqual(initGot, []);
});

test('initialize refuses what the image does not permit, and leaves no trace', async () => {
    let r = await ask({ id: 2, op: 'initialize', config: { allow: ['evil.example:443'] } });
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 'bad_request');
    assert.match(r.error.message, /evil\.example:443 is not one the image permits/);
    r = await ask({ id: 3, op: 'initialize', config: { allow: ['*.chain.test:443'] } });
    assert.match(r.error.message, /not HOST:PORT|not one the image permits/);
    r = await ask({ id: 4, op: 'initialize',
                    config: { allow: [], nginx_conf: 'server { ... }' } });
    assert.match(r.error.message, /only "allow", "cluster" and "tls" are the host's to set/);
    r = await ask({ id: 43, op: 'initialize', config: { tls: { domain: 'node.example' } } });
    assert.equal(r.error.code, 'invalid');
    assert.match(r.error.message, /this image orders no certificate/);
    r = await ask({ id: 41, op: 'initialize', config: { cluster: { node: 'n1', peers: [
        { name: 'n2', attestation: 'https://rpc.chain.test/attestation',
          route: 'rpc.chain.test:443' }] } } });
    assert.match(r.error.message, /this image is not made to cluster/);
    r = await ask({ id: 5, op: 'initialize', config: { allow: 'rpc.chain.test:443' } });
    assert.match(r.error.message, /a list of HOST:PORT/);
    assert.equal(fs.existsSync(at('ready')), false);
    assert.equal(fs.existsSync(at('extra')), false);
});

test('initialize once: the additions written, ready made; a second is a conflict', async () => {
    let r = await ask({ id: 6, op: 'initialize',
                        config: { allow: ['RPC.chain.test:443', '127.0.0.1:8545'] } });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(fs.readFileSync(at('extra'), 'utf8'), 'rpc.chain.test:443\n127.0.0.1:8545\n');
    assert.equal(fs.existsSync(at('ready')), true);
    r = await ask({ id: 7, op: 'initialize', config: { allow: [] } });
    assert.equal(r.error.code, 'conflict');
    r = await ask({ id: 42, op: 'add_peer', name: 'n2',
                    attestation: 'https://rpc.chain.test/attestation',
                    route: 'rpc.chain.test:443' });
    assert.equal(r.error.code, 'invalid');
    assert.match(r.error.message, /this image is not made to cluster/);
    const st = (await ask({ id: 8, op: 'status' })).result;
    assert.equal(st.initialized, true);
    assert.deepEqual(st.services, ['agent running pid 2 starts 1 up 3 s',
                                   'nginx restarting in 200 ms starts 2']);
});

test('shutdown: the grace goes to init; out of range refused', async () => {
    let r = await ask({ id: 9, op: 'shutdown', grace: 0 });
    assert.match(r.error.message, /grace: seconds, 1 to 300/);
    r = await ask({ id: 10, op: 'shutdown', grace: 301 });
    assert.equal(r.ok, false);
    assert.equal(initGot.filter((l) => l.startsWith('shutdown')).length, 0);
    r = await ask({ id: 11, op: 'shutdown', grace: 7 });
    assert.equal(r.ok, true);
    assert.equal(initGot.at(-1), 'shutdown 7');
});

test('requests sent together are answered in turn', async () => {
    const frames = [{ id: 21, op: 'status' }, { id: 22, op: 'status' }].map(frame);
    const ids = await new Promise((resolve, reject) => {
        const s = net.connect(at('control.sock'));
        let got = Buffer.alloc(0);
        const seen = [];
        s.on('error', reject);
        s.on('data', (d) => {
            got = Buffer.concat([got, d]);
            while (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
                seen.push(cbor.decode(got.subarray(4, 4 + got.readUInt32BE(0))).id);
                got = got.subarray(4 + got.readUInt32BE(0));
            }
            if (seen.length === 2) {
                s.destroy();
                resolve(seen);
            }
        });
        s.write(Buffer.concat(frames));
        setTimeout(() => reject(new Error(`only ${seen.length} answers`)), 5000);
    });
    assert.deepEqual(ids, [21, 22]);
});

test('bad requests: not CBOR, an unknown op, a frame too large', async () => {
    let r = await ask(null, Buffer.from('not cbor at all'));
    assert.equal(r.ok, false);
    r = await ask({ id: 12, op: 'reboot_into', image: 'x' });
    assert.equal(r.error.code, 'unknown_op');
    // a length over the bound: the connection is closed, the agent lives
    r = await new Promise((resolve) => {
        const s = net.connect(at('control.sock'));
        s.on('close', () => resolve('closed'));
        s.on('error', () => {});
        const len = Buffer.alloc(4);
        len.writeUInt32BE(16 * 1024 * 1024);
        s.write(len);
    });
    assert.equal(r, 'closed');
    assert.equal((await ask({ id: 13, op: 'status' })).ok, true);
});

test('logs: in order, and under a slow host bounded, the oldest dropped and counted', async () => {
    const s = net.connect(at('control.sock'));
    const frames = [];
    onFrames(s, (f) => frames.push(f));
    s.write(frame({ id: 14, op: 'logs' }));
    while (frames.length === 0) {
        await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(frames[0].ok, true);

    // a few lines, read as they come: all of them, in order, none dropped
    await writeLines(50, 10);
    const lines = () => frames.slice(1).flatMap((f) => f.lines);
    const dropped = () => frames.slice(1).reduce((n, f) => n + f.dropped, 0);
    for (let i = 0; i < 200 && lines().length < 50; i++) {
        await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(lines().length, 50);
    assert.equal(lines()[0], 'svc: line 000000 xxxxxxxxxx');
    assert.equal(dropped(), 0);

    // a record with a NUL, a CR and an escape: one line of text still
    await new Promise((resolve, reject) => {
        const p = spawn('perl', ['-MSocket', '-MIO::Socket::UNIX', '-e', `
            my $s = IO::Socket::UNIX->new(Type => SOCK_SEQPACKET, Peer => $ARGV[0])
                or die "connect: $!";
            $s->send("svc: a\\0b\\rc\\e[2Jd") or die "send: $!";`, at('log.sock')]);
        p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error('perl'))));
    });
    for (let i = 0; i < 200 && lines().length < 51; i++) {
        await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(lines()[50], 'svc: a?b?c?[2Jd');

    // a host that stops reading: 20000 lines of 200 bytes (4 MB) against
    // an 8 KiB buffer
    s.pause();
    await writeLines(20000, 200);
    const status = (await ask({ id: 15, op: 'status' })).result.logs;
    assert.ok(status.dropped > 0, JSON.stringify(status));
    assert.ok(status.buffered <= 8192 / 200 + 1, JSON.stringify(status));
    s.resume();
    for (let i = 0; i < 500 && lines().length + dropped() < 20051; i++) {
        await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(lines().length + dropped(), 20051, 'every line shipped or counted');
    assert.ok(dropped() > 0);
    assert.match(lines().at(-1), /^svc: line 019999 /, 'the newest are kept');
    s.destroy();
});

// ---- backup and restore: a second agent, with a stand-in provend ------------


// sends buffers on a fresh connection to sock; the frames that come back
// until it closes (or until `until` of them), decoded
function converse(sock, buffers, { until = Infinity, end = false } = {}) {
    return new Promise((resolve, reject) => {
        const s = net.connect(sock);
        const frames = [];
        const done = () => { s.destroy(); resolve(frames); };
        s.on('error', (e) => (e.code === 'EPIPE' || e.code === 'ECONNRESET'
                              ? done() : reject(e)));
        onFrames(s, (f) => {
            frames.push(f);
            if (frames.length >= until) {
                done();
            }
        });
        s.on('close', done);
        s.write(Buffer.concat(buffers));
        if (end) {
            s.end();
        }
    });
}

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

test('backup and restore through the agent: bounded, whole or nothing', async () => {
    // provend's stand-in: "backup" answers a file it wrote, or a refusal
    let content = Buffer.alloc(150 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7919) % 251;
    let refuse = false;
    const provend = net.createServer((s) => {
        s.once('data', (d) => {
            const req = cbor.decode(d.subarray(4), { useMaps: false });
            assert.equal(req.op, 'backup');
            if (refuse) {
                s.end(frame({ id: req.id, ok: false,
                              error: { code: 'backup_unavailable', message: 'no --keyd' } }));
                return;
            }
            fs.writeFileSync(at('provend.pbk'), content);
            s.end(frame({ id: req.id, ok: true,
                          result: { path: at('provend.pbk'), bytes: 1, files: 1,
                                    chunks: 1, paused_ms: 3 } }));
        });
    });
    await new Promise((r) => provend.listen(at('provend.sock'), r));
    let said2 = '';
    const agent2 = spawn(bin, ['--control', `unix:${at('control2.sock')}`,
                               '--ready', at('ready2'), '--init-socket', at('init.sock'),
                               '--provend', at('provend.sock'),
                               '--restore', at('handed'), '--restore-max', '200000'],
                         { stdio: ['ignore', 'ignore', 'pipe'] });
    agent2.stderr.on('data', (d) => { said2 += d; });
    try {
        while (!said2.includes('control on')) await wait(20);
        const sock = at('control2.sock');
        const data = (b) => frame({ data: b });

        // the backup: the answer, then exactly its bytes; provend's copy removed
        let f = await converse(sock, [frame({ id: 1, op: 'backup' })]);
        assert.equal(f[0].ok, true, JSON.stringify(f[0]));
        assert.equal(f[0].result.bytes, content.length);
        assert.equal(f[0].result.paused_ms, 3);
        const body = Buffer.concat(f.slice(1).map((x) => Buffer.from(x.data)));
        assert.ok(f.slice(1).every((x) => x.data.length <= 48 * 1024));
        assert.deepEqual(body, content);
        await wait(100);
        assert.equal(fs.existsSync(at('provend.pbk')), false);
        refuse = true;
        f = await converse(sock, [frame({ id: 2, op: 'backup' })], { until: 1 });
        assert.equal(f[0].error.code, 'backup_unavailable');
        await wait(100);
        // one the image could never take back is not sent (and not kept)
        refuse = false;
        content = Buffer.alloc(200001);
        f = await converse(sock, [frame({ id: 15, op: 'backup' })]);
        assert.equal(f[0].error.code, 'too_large');
        assert.match(f[0].error.message, /more than this image takes back/);
        await wait(100);
        assert.equal(fs.existsSync(at('provend.pbk')), false);

        // restore: the size bounded; short, long or wrong data leave nothing
        f = await converse(sock, [frame({ id: 3, op: 'restore', bytes: 200001 })], { until: 1 });
        assert.equal(f[0].error.code, 'too_large');
        f = await converse(sock, [frame({ id: 4, op: 'restore' })], { until: 1 });
        assert.match(f[0].error.message, /bytes: the backup's size, 1 to 200000/);
        f = await converse(sock, [frame({ id: 5, op: 'restore', bytes: 10 }),
                                  data(Buffer.alloc(5))], { end: true });
        await wait(100);
        f = await converse(sock, [frame({ id: 6, op: 'restore', bytes: 10 }),
                                  data(Buffer.alloc(20))]);
        assert.match(f[0].error.message, /more bytes than said/);
        await wait(100);
        f = await converse(sock, [frame({ id: 7, op: 'restore', bytes: 10 }),
                                  frame({ data: 'text, not bytes' })]);
        assert.match(f[0].error.message, /not \{"data": bytes\}/);
        await wait(100);
        assert.deepEqual(fs.readdirSync(work).filter((n) => n.startsWith('handed')), []);

        // while one is under way, initialize waits: the node must not start
        // before its backup is whole
        const s = net.connect(sock);
        s.write(frame({ id: 8, op: 'restore', bytes: 10 }));
        s.write(data(Buffer.from('0123')));
        await wait(100);
        f = await converse(sock, [frame({ id: 9, op: 'initialize' })], { until: 1 });
        assert.match(f[0].error.message, /a backup is being handed in/);
        // and the agent serves the rest meanwhile
        f = await converse(sock, [frame({ id: 14, op: 'status' })], { until: 1 });
        assert.equal(f[0].ok, true);
        f = await converse(sock, [frame({ id: 10, op: 'restore', bytes: 10 })], { until: 1 });
        assert.equal(f[0].error.code, 'conflict');
        const answer = new Promise((r) => s.on('data', (d) =>
            r(cbor.decode(d.subarray(4), { useMaps: false }))));
        s.write(data(Buffer.from('456789')));
        assert.equal((await answer).ok, true);
        s.destroy();
        assert.equal(fs.readFileSync(at('handed'), 'utf8'), '0123456789');
        await wait(100);
        f = await converse(sock, [frame({ id: 11, op: 'restore', bytes: 10 })], { until: 1 });
        assert.match(f[0].error.message, /handed in already/);
        f = await converse(sock, [frame({ id: 12, op: 'initialize' })], { until: 1 });
        assert.equal(f[0].ok, true, JSON.stringify(f[0]));
        fs.unlinkSync(at('handed'));
        f = await converse(sock, [frame({ id: 13, op: 'restore', bytes: 10 })], { until: 1 });
        assert.match(f[0].error.message, /initialized already/);
    } finally {
        agent2.kill('SIGKILL');
        provend.close();
    }
});

test('config.tls: the name of the certificate, checked, for provend and nginx', async () => {
    let said3 = '';
    const agent3 = spawn(bin, ['--control', `unix:${at('control3.sock')}`,
                               '--ready', at('ready3'), '--init-socket', at('init.sock'),
                               '--tls-domain', at('tls.domain')],
                         { stdio: ['ignore', 'ignore', 'pipe'] });
    agent3.stderr.on('data', (d) => { said3 += d; });
    try {
        while (!said3.includes('control on')) await wait(20);
        const sock = at('control3.sock');
        const init = async (id, tls) => (await converse(sock,
            [frame({ id, op: 'initialize', config: { tls } })], { until: 1 }))[0];
        for (const [tls, why] of [
            [{ domain: 'Node.Example' }, /not a DNS name in lower case/],
            [{ domain: '-node.example' }, /not a DNS name/],
            [{ domain: 'node-.example' }, /not a DNS name/],
            [{ domain: 'node..example' }, /not a DNS name/],
            [{ domain: 'node.example.' }, /not a DNS name/],
            [{ domain: 'node.example\nother.example' }, /not a DNS name/],
            [{ domain: `${'a'.repeat(64)}.example` }, /not a DNS name/],
            [{ domain: `${'a'.repeat(60)}.`.repeat(5) + 'example' }, /not a DNS name|253/],
            [{ domain: 'node.example', contact: 'mailto:x@y' }, /\{"domain": NAME\}/],
            ['node.example', /\{"domain": NAME\}/],
            [{ domain: 7 }, /\{"domain": NAME\}/],
        ]) {
            const r = await init(1, tls);
            assert.equal(r.ok, false, JSON.stringify(tls));
            assert.equal(r.error.code, 'bad_request');
            assert.match(r.error.message, why);
        }
        assert.equal(fs.existsSync(at('tls.domain')), false);
        assert.equal(fs.existsSync(at('ready3')), false);
        const r = await init(2, { domain: 'node-1.example.com' });
        assert.equal(r.ok, true, JSON.stringify(r));
        assert.equal(fs.readFileSync(at('tls.domain'), 'utf8'), 'node-1.example.com\n');
        assert.equal(fs.existsSync(at('ready3')), true);
    } finally {
        agent3.kill('SIGKILL');
    }
});

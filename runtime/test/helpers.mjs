// Test helpers: pack a tree of sources, start proven-runtime on it, talk
// frames to it.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { encodeFrame, FrameReader } from '../lib/frames.mjs';
import { pack } from '../lib/package.mjs';

export const BIN = new URL('../bin/proven-runtime.mjs', import.meta.url).pathname;

export function tree(files) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-test-'));
    for (const [name, source] of Object.entries(files)) {
        fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
        fs.writeFileSync(path.join(dir, name), source);
    }
    return dir;
}

export class Client {
    constructor(socketPath) {
        this.socketPath = socketPath;
        this.nextId = 1;
        this.waiting = new Map();
    }

    connect() {
        return new Promise((resolve, reject) => {
            this.conn = net.connect(this.socketPath, resolve);
            this.conn.once('error', reject);
            const reader = new FrameReader((f) => {
                const w = this.waiting.get(f.id);
                if (w) {
                    this.waiting.delete(f.id);
                    w(f);
                }
            }, (err) => { throw err; });
            this.conn.on('data', (c) => reader.push(c));
            // a worker gone: what waits gets {closed: true}
            this.conn.on('close', () => {
                for (const w of this.waiting.values()) {
                    w({ closed: true });
                }
                this.waiting.clear();
            });
        });
    }

    call(op, args = {}) {
        const id = this.nextId++;
        return new Promise((resolve) => {
            if (this.conn.destroyed) {
                resolve({ closed: true });
                return;
            }
            this.waiting.set(id, resolve);
            this.conn.write(encodeFrame({ id, op, ...args }));
        });
    }

    http(method, p, extra = {}) {
        const [pathOnly, query] = p.split('?');
        return this.call('app.http', { method, path: pathOnly,
                                       query: query || '', ...extra });
    }

    close() {
        this.conn.destroy();
    }
}

// Packs files, starts `proven-runtime serve` on them; resolves when ready.
export async function startRuntime(files, extraArgs = []) {
    const dir = tree(files);
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-run-'));
    const { id, bytes } = await pack(dir);
    const pkgFile = path.join(work, 'package.cbor');
    fs.writeFileSync(pkgFile, bytes);
    const socket = path.join(work, 'app.sock');

    const child = spawn(process.execPath, [
        '--experimental-vm-modules', '--no-warnings', BIN, 'serve',
        '--app', 'test', '--package', pkgFile, '--listen', socket,
        ...extraArgs,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });

    let stderr = '';
    await new Promise((resolve, reject) => {
        child.stderr.on('data', (d) => {
            stderr += d;
            if (stderr.includes(' ready on ')) {
                resolve();
            }
        });
        child.on('exit', (code) => reject(new Error(
            `proven-runtime exited ${code}: ${stderr}`)));
    });

    const client = new Client(socket);
    await client.connect();
    return {
        id, client, child, work, socket,
        // a fresh connection (after the isolate was replaced), once it
        // answers again
        async reconnect() {
            for (let i = 0; i < 200; i++) {
                const c = new Client(socket);
                try {
                    await c.connect();
                    const s = await c.call('runtime.status');
                    if (s.ok) {
                        this.client.close();
                        this.client = c;
                        return s.result;
                    }
                } catch (e) {
                    /* not listening yet */
                }
                c.close?.();
                await new Promise((r) => setTimeout(r, 25));
            }
            throw new Error('the runtime did not come back');
        },
        stderr: () => stderr,
        async stop() {
            this.client.close();
            child.kill('SIGTERM');
            await new Promise((r) => child.once('exit', r));
            fs.rmSync(work, { recursive: true, force: true });
            fs.rmSync(dir, { recursive: true, force: true });
        },
    };
}

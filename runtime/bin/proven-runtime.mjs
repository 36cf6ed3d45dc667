#!/usr/bin/env node
// proven-runtime: runs one application's deployed package.
//
//   proven-runtime pack PATH [--out FILE]
//       Packs the modules at PATH (a file or a folder) and prints the
//       package id; --out writes the package bytes.
//   proven-runtime check --app NAME --package FILE
//       Loads the package as serve would and says whether it runs: its
//       encoding is canonical, its modules load, its manifest lists the
//       handlers its code declares.  Prints the routes as JSON.
//   proven-runtime serve --app NAME --package FILE --listen SOCKET
//       [--memory-mb N] [--expose-errors] [--provend-fd N]
//       Loads the package in a sandboxed worker thread and answers frames
//       on the unix socket SOCKET (see lib/server.mjs); prints "ready" on
//       standard output once it serves.  --provend-fd: the socket pair
//       provend gave it for the app's storage (@proven-network/kv, sql).
//
// FILE "-" is standard input (how provend hands a package over: it never
// lands on disk in plain text).
//
// Run it with `node --experimental-vm-modules`: the sandbox links ES
// modules with node:vm's module API.

import fs from 'node:fs';
import process from 'node:process';

import { decodePackage, pack, PackageError }
    from '../lib/package.mjs';
import { AppIsolate } from '../lib/isolate.mjs';
import { ProvendLine } from '../lib/provend.mjs';

function usage(message) {
    if (message) {
        process.stderr.write(`proven-runtime: ${message}\n`);
    }
    process.stderr.write('usage: proven-runtime pack PATH [--out FILE]\n'
        + '       proven-runtime check --app NAME --package FILE\n'
        + '       proven-runtime serve --app NAME --package FILE '
        + '--listen SOCKET [--memory-mb N] [--expose-errors]\n');
    process.exit(2);
}

function options(args, flags, switches = []) {
    const out = { rest: [] };
    for (let i = 0; i < args.length; i++) {
        const a = args[i];
        if (switches.includes(a)) {
            out[a.slice(2)] = true;
        } else if (flags.includes(a)) {
            if (i + 1 >= args.length) {
                usage(`${a} needs a value`);
            }
            out[a.slice(2)] = args[++i];
        } else if (a.startsWith('--')) {
            usage(`unknown option ${a}`);
        } else {
            out.rest.push(a);
        }
    }
    return out;
}

async function packCommand(args) {
    const o = options(args, ['--out']);
    if (o.rest.length !== 1) {
        usage('pack takes one PATH');
    }
    const { id, bytes } = await pack(o.rest[0]);
    if (o.out) {
        fs.writeFileSync(o.out, bytes);
    }
    process.stdout.write(`${id}\n`);
}

function readPackage(file) {
    return file === '-' ? fs.readFileSync(0) : fs.readFileSync(file);
}

// Loads the package in its thread (serving listen, when given) once the
// code is found to declare exactly the manifest's handlers.
async function loadChecked(app, file, options) {
    const pkg = decodePackage(readPackage(file));
    const isolate = new AppIsolate(app, pkg.modules, {
        ...options, manifest: pkg.handlers });
    try {
        await isolate.start();
    } catch (e) {
        await isolate.close();
        throw /manifest does not list/.test(e.message)
            ? new PackageError(e.message) : e;
    }
    return { pkg, isolate };
}

async function checkCommand(args) {
    const o = options(args, ['--app', '--package']);
    if (!o.app || !o.package || o.rest.length) {
        usage('check needs --app and --package');
    }
    const { pkg, isolate } = await loadChecked(o.app, o.package, {});
    await isolate.close();
    process.stdout.write(`${JSON.stringify(pkg.handlers)}\n`);
}

async function serveCommand(args) {
    const o = options(args, ['--app', '--package', '--listen', '--memory-mb',
                             '--provend-fd'], ['--expose-errors']);
    if (!o.app || !o.package || !o.listen || o.rest.length) {
        usage('serve needs --app, --package and --listen');
    }
    const memoryMb = o['memory-mb'] ? Number(o['memory-mb']) : 128;
    if (!Number.isInteger(memoryMb) || memoryMb < 16 || memoryMb > 16384) {
        usage('--memory-mb must be 16 to 16384');
    }

    let storage;
    if (o['provend-fd'] !== undefined) {
        const fd = Number(o['provend-fd']);
        if (!Number.isInteger(fd) || fd < 3) {
            usage('--provend-fd must be a descriptor number from 3');
        }
        const line = new ProvendLine(fd, o.app);
        storage = (request) => line.call(request);
    }
    const { pkg, isolate } = await loadChecked(o.app, o.package, {
        memoryMb, storage, listen: o.listen,
        exposeErrors: Boolean(o['expose-errors']) });
    process.stderr.write(`proven-runtime: app ${o.app} ready on `
                         + `${o.listen} (${pkg.handlers.length} handlers)\n`);
    process.stdout.write('ready\n');

    // Each second, for provend to size the app's pool and to see it idle:
    // how busy the app's thread was (thousandths) and its calls so far.
    process.stdout.on('error', () => {});
    setInterval(() => {
        const { busy, calls } = isolate.load();
        process.stdout.write(`load ${busy} ${calls}\n`);
    }, 1000).unref();

    // SIGTERM: no new connections; calls under way finish (10 s at most).
    let stopping = false;
    const stop = async () => {
        if (stopping) {
            return;
        }
        stopping = true;
        await isolate.drain(10000);
        await isolate.close();
        process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

const [command, ...rest] = process.argv.slice(2);
const commands = { pack: packCommand, check: checkCommand,
                   serve: serveCommand };

if (!commands[command]) {
    usage(command ? `unknown command ${command}` : null);
}

try {
    await commands[command](rest);
} catch (e) {
    const known = e instanceof PackageError || e.code === 'load_failed'
        || e.code === 'ENOENT';
    process.stderr.write(`proven-runtime: ${known ? e.message : e.stack}\n`);
    process.exit(1);
}

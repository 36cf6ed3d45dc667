// Code packages: the ES modules of an application plus the manifest of the
// handlers they export, as deterministic CBOR
//
//     {"format": 1,
//      "modules": {"index.js": "source", "lib/util.js": "source", ...},
//      "handlers": [{"module", "name", "kind", ...options}, ...]}
//
// The package id is the SHA-256 of those bytes, so the same sources always
// give the same id.  The manifest is what the code itself declares: pack
// runs the modules in a sandbox and lists the handlers it finds, and a
// runtime loading a package checks the code still declares exactly that.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { decode } from 'cborg';

import { encodeCanonical } from './canonical.mjs';

export const PACKAGE_FORMAT = 1;
export const MODULES_MAX = 256;
export const MODULE_BYTES_MAX = 1024 * 1024;
export const PACKAGE_BYTES_MAX = 4 * 1024 * 1024;
const MODULE_PATH = /^([A-Za-z0-9_][A-Za-z0-9._-]*\/)*[A-Za-z0-9_][A-Za-z0-9._-]*\.m?js$/;

export class PackageError extends Error {}

// The .js and .mjs files under dir (or the one file), by package path.
export function readSources(target) {
    const modules = {};
    let total = 0, count = 0;
    const stat = fs.statSync(target);

    function add(file, name) {
        if (!MODULE_PATH.test(name) || name.split('/').length > 16) {
            throw new PackageError(`${name}: module paths are letters, `
                                   + 'digits and ._- in at most 16 levels');
        }
        const size = fs.statSync(file).size;
        if (size > MODULE_BYTES_MAX) {
            throw new PackageError(`${name}: ${size} bytes, over the `
                                   + `${MODULE_BYTES_MAX}-byte module limit`);
        }
        if (++count > MODULES_MAX) {
            throw new PackageError(`more than ${MODULES_MAX} modules`);
        }
        const source = fs.readFileSync(file, 'utf8');
        total += Buffer.byteLength(source);
        if (total > PACKAGE_BYTES_MAX) {
            throw new PackageError(`sources over ${PACKAGE_BYTES_MAX} bytes`);
        }
        modules[name] = source;
    }

    function walk(dir, prefix) {
        for (const entry of fs.readdirSync(dir, { withFileTypes: true })
            .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name)))
        {
            if (entry.name.startsWith('.') || entry.name === 'node_modules') {
                continue;
            }
            const full = path.join(dir, entry.name);
            if (entry.isDirectory()) {
                walk(full, `${prefix}${entry.name}/`);
            } else if (entry.isFile() && /\.m?js$/.test(entry.name)) {
                add(full, prefix + entry.name);
            }
        }
    }

    if (stat.isDirectory()) {
        walk(target, '');
    } else {
        add(target, path.basename(target));
    }
    if (count === 0) {
        throw new PackageError(`${target}: no .js or .mjs module`);
    }
    return modules;
}

export function packageId(bytes) {
    return createHash('sha256').update(bytes).digest('hex');
}

// Loads modules in a sandbox (a worker thread, bounded in time and memory)
// and returns the handlers they declare.
export async function declaredHandlers(modules, options = {}) {
    // (here, not at the top: thread.mjs imports this module too)
    const { AppIsolate } = await import('./isolate.mjs');
    const isolate = new AppIsolate(options.app || 'pack', modules, options);
    try {
        return await isolate.start();
    } finally {
        await isolate.close();
    }
}

function manifestEntry(h) {
    const entry = { module: h.module, name: h.name, kind: h.kind };
    for (const k of ['method', 'path', 'timeout', 'cron', 'address',
                     'topics', 'confirmations', 'chain', 'event', 'emitter']) {
        if (h[k] !== undefined) {
            entry[k] = h[k];
        }
    }
    return entry;
}

export async function pack(target, options = {}) {
    const modules = readSources(target);
    const handlers = (await declaredHandlers(modules, options))
        .map(manifestEntry);
    const pkg = { format: PACKAGE_FORMAT, modules, handlers };
    const bytes = encodeCanonical(pkg);
    if (bytes.length > PACKAGE_BYTES_MAX) {
        throw new PackageError(`package of ${bytes.length} bytes, over `
                               + `${PACKAGE_BYTES_MAX}`);
    }
    return { id: packageId(bytes), bytes, package: pkg };
}

// Checks bytes are a package in its one canonical encoding; returns it.
export function decodePackage(bytes) {
    if (bytes.length > PACKAGE_BYTES_MAX) {
        throw new PackageError(`package of ${bytes.length} bytes, over `
                               + `${PACKAGE_BYTES_MAX}`);
    }
    let pkg;
    try {
        pkg = decode(bytes, { rejectDuplicateMapKeys: true });
    } catch (e) {
        throw new PackageError(`not CBOR: ${e.message}`);
    }
    if (pkg === null || typeof pkg !== 'object' || pkg.format !== 1
        || pkg.modules === null || typeof pkg.modules !== 'object'
        || !Array.isArray(pkg.handlers))
    {
        throw new PackageError('not a format 1 package (format, modules, '
                               + 'handlers)');
    }
    const names = Object.keys(pkg.modules);
    if (names.length === 0 || names.length > MODULES_MAX) {
        throw new PackageError(`a package holds 1 to ${MODULES_MAX} modules`);
    }
    for (const name of names) {
        if (!MODULE_PATH.test(name) || typeof pkg.modules[name] !== 'string') {
            throw new PackageError(`module ${JSON.stringify(name)}: bad path `
                                   + 'or source');
        }
    }
    let canonical;
    try {
        canonical = encodeCanonical(pkg);
    } catch (e) {
        throw new PackageError(`package holds a value of no canonical form: `
                               + e.message);
    }
    if (Buffer.compare(Buffer.from(canonical), Buffer.from(bytes)) !== 0) {
        throw new PackageError('package bytes are not in canonical form');
    }
    return pkg;
}

// Whether the handlers the code declares are the manifest's.
export function sameHandlers(declared, manifest) {
    const a = encodeCanonical(declared.map(manifestEntry));
    const b = encodeCanonical(manifest.map(manifestEntry));
    return Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
}

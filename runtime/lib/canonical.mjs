// Deterministic CBOR (RFC 8949, section 4.2.1) for the values a code
// package holds: maps with text keys, arrays, text, byte strings, unsigned
// and negative integers, booleans and null.  The same value always gives
// the same bytes, so a package's id (the SHA-256 of its encoding) depends
// on its content only.  Floats and other types are refused: a package has
// no use for them and each would need its own canonical rule.

const utf8 = new TextEncoder();

function head(out, major, n) {
    if (n < 24) {
        out.push(Uint8Array.of(major << 5 | n));
    } else if (n < 0x100) {
        out.push(Uint8Array.of(major << 5 | 24, n));
    } else if (n < 0x10000) {
        out.push(Uint8Array.of(major << 5 | 25, n >> 8, n & 0xff));
    } else if (n < 0x100000000) {
        const b = new Uint8Array(5);
        b[0] = major << 5 | 26;
        new DataView(b.buffer).setUint32(1, n);
        out.push(b);
    } else {
        const b = new Uint8Array(9);
        b[0] = major << 5 | 27;
        new DataView(b.buffer).setBigUint64(1, BigInt(n));
        out.push(b);
    }
}

function compareBytes(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
        if (a[i] !== b[i]) {
            return a[i] - b[i];
        }
    }
    return a.length - b.length;
}

function put(out, value, depth) {
    if (depth > 16) {
        throw new TypeError('package value nested too deeply');
    }

    if (value === null) {
        out.push(Uint8Array.of(0xf6));
    } else if (value === true || value === false) {
        out.push(Uint8Array.of(value ? 0xf5 : 0xf4));
    } else if (typeof value === 'number') {
        if (!Number.isSafeInteger(value)) {
            throw new TypeError('package numbers must be safe integers');
        }
        if (value >= 0) {
            head(out, 0, value);
        } else {
            head(out, 1, -1 - value);
        }
    } else if (typeof value === 'string') {
        const b = utf8.encode(value);
        head(out, 3, b.length);
        out.push(b);
    } else if (value instanceof Uint8Array) {
        head(out, 2, value.length);
        out.push(value);
    } else if (Array.isArray(value)) {
        head(out, 4, value.length);
        for (const item of value) {
            put(out, item, depth + 1);
        }
    } else if (typeof value === 'object') {
        // Keys ordered by their encoded bytes.
        const entries = Object.keys(value)
            .filter((k) => value[k] !== undefined)
            .map((k) => {
                const key = [];
                put(key, k, depth + 1);
                return [concat(key), value[k]];
            })
            .sort((a, b) => compareBytes(a[0], b[0]));
        head(out, 5, entries.length);
        for (const [key, v] of entries) {
            out.push(key);
            put(out, v, depth + 1);
        }
    } else {
        throw new TypeError(`package values cannot be ${typeof value}`);
    }
}

function concat(parts) {
    let len = 0;
    for (const p of parts) {
        len += p.length;
    }
    const out = new Uint8Array(len);
    let at = 0;
    for (const p of parts) {
        out.set(p, at);
        at += p.length;
    }
    return out;
}

export function encodeCanonical(value) {
    const out = [];
    put(out, value, 0);
    return concat(out);
}

// The frames every Proven process speaks (DESIGN.md, wire format): a 4-byte
// big-endian length N, 1 <= N <= 16 MiB, then N bytes of one CBOR map.
// FrameReader turns a stream's chunks into decoded maps; encodeFrame makes
// one frame.  A frame out of bounds or not a map is a protocol error: the
// reader reports it once and takes nothing more from that stream.

import { decode, encode } from 'cborg';

export const FRAME_MAX = 16 * 1024 * 1024;

// Maps with other than text keys, and tags, are refused on decode.
const decodeOptions = { useMaps: false, rejectDuplicateMapKeys: true };
// Keys go out in the order given: frames need no canonical form.
const encodeOptions = { mapSorter: null };

export function encodeFrame(map) {
    const body = encode(map, encodeOptions);
    if (body.length > FRAME_MAX) {
        throw new RangeError(`frame of ${body.length} bytes over the limit`);
    }
    const frame = Buffer.allocUnsafe(4 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.set(body, 4);
    return frame;
}

// CBOR heads for the hand-written frame below.
function headSize(n) {
    return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

function putHead(buf, at, major, n) {
    if (n < 24) {
        buf[at] = major << 5 | n;
        return at + 1;
    }
    if (n < 0x100) {
        buf[at] = major << 5 | 24;
        buf[at + 1] = n;
        return at + 2;
    }
    if (n < 0x10000) {
        buf[at] = major << 5 | 25;
        buf.writeUInt16BE(n, at + 1);
        return at + 3;
    }
    buf[at] = major << 5 | 26;
    buf.writeUInt32BE(n, at + 1);
    return at + 5;
}

function putText(buf, at, text, len) {
    at = putHead(buf, at, 3, len);
    return at + buf.write(text, at, len, 'utf8');
}

/*
 * The answer to app.http, the hot path, written straight into one buffer:
 * {"id", "ok": true, "result": {"status", "headers": [[name, value]],
 * "body": bytes}}; the same bytes encodeFrame would give (keys in that
 * order).  id and status are below 2^32, as frames carry them.
 */
export function encodeHttpAnswer(id, status, headers, body) {
    let size = 1 + 3 + headSize(id) + 3 + 1 + 7 + 1 + 7 + headSize(status)
               + 8 + headSize(headers.length) + 5 + headSize(body.length)
               + body.length;
    const lens = new Array(headers.length * 2);
    for (let i = 0; i < headers.length; i++) {
        const n = Buffer.byteLength(headers[i][0]);
        const v = Buffer.byteLength(headers[i][1]);
        lens[2 * i] = n;
        lens[2 * i + 1] = v;
        size += 1 + headSize(n) + n + headSize(v) + v;
    }
    if (size > FRAME_MAX || id >= 0x100000000) {
        return encodeFrame({ id, ok: true, result: { status, headers,
                                                     body } });
    }

    const buf = Buffer.allocUnsafe(4 + size);
    buf.writeUInt32BE(size, 0);
    let at = putHead(buf, 4, 5, 3);
    at = putText(buf, at, 'id', 2);
    at = putHead(buf, at, 0, id);
    at = putText(buf, at, 'ok', 2);
    buf[at++] = 0xf5;
    at = putText(buf, at, 'result', 6);
    at = putHead(buf, at, 5, 3);
    at = putText(buf, at, 'status', 6);
    at = putHead(buf, at, 0, status);
    at = putText(buf, at, 'headers', 7);
    at = putHead(buf, at, 4, headers.length);
    for (let i = 0; i < headers.length; i++) {
        at = putHead(buf, at, 4, 2);
        at = putText(buf, at, headers[i][0], lens[2 * i]);
        at = putText(buf, at, headers[i][1], lens[2 * i + 1]);
    }
    at = putText(buf, at, 'body', 4);
    at = putHead(buf, at, 2, body.length);
    buf.set(body, at);
    return buf;
}

export class FrameReader {
    constructor(onFrame, onError, max = FRAME_MAX) {
        this.onFrame = onFrame;
        this.onError = onError;
        this.max = max;
        this.chunks = [];
        this.buffered = 0;
        this.need = 0;              /* the frame's size, once its head is in */
        this.failed = false;
    }

    // Bytes are joined only once a whole frame is in: a big frame arriving
    // in many chunks costs one copy, not one per chunk.
    push(chunk) {
        if (this.failed) {
            return;
        }
        this.chunks.push(chunk);
        this.buffered += chunk.length;

        while (this.buffered >= 4) {
            if (this.need === 0) {
                if (this.chunks[0].length < 4) {
                    this.chunks = [Buffer.concat(this.chunks)];
                }
                const len = this.chunks[0].readUInt32BE(0);
                if (len === 0 || len > this.max) {
                    return this.fail(`frame length ${len} out of bounds`);
                }
                this.need = 4 + len;
            }
            if (this.buffered < this.need) {
                return;
            }

            const data = this.chunks.length === 1
                ? this.chunks[0] : Buffer.concat(this.chunks);
            const body = data.subarray(4, this.need);
            const rest = data.subarray(this.need);
            this.chunks = rest.length ? [rest] : [];
            this.buffered = rest.length;
            this.need = 0;

            let map;
            try {
                map = decode(body, decodeOptions);
            } catch (err) {
                return this.fail(`frame is not CBOR: ${err.message}`);
            }
            if (map === null || typeof map !== 'object' || Array.isArray(map)
                || map instanceof Uint8Array)
            {
                return this.fail('frame is not a CBOR map');
            }
            this.onFrame(map);
        }
    }

    fail(message) {
        this.failed = true;
        this.chunks = [];
        this.buffered = 0;
        this.onError(new Error(message));
    }
}

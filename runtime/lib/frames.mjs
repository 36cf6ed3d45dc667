// The frames every Proven process speaks (DESIGN.md, wire format): a 4-byte
// big-endian length N, 1 <= N <= 16 MiB, then N bytes of one CBOR map.
// FrameReader turns a stream's chunks into decoded maps; encodeFrame makes
// one frame.  A frame out of bounds or not a map is a protocol error: the
// reader reports it once and takes nothing more from that stream.

import { decode, encode } from 'cborg';

export const FRAME_MAX = 16 * 1024 * 1024;

// Maps with other than text keys, and tags, are refused on decode.
const decodeOptions = { useMaps: false, rejectDuplicateMapKeys: true };

export function encodeFrame(map) {
    const body = encode(map);
    if (body.length > FRAME_MAX) {
        throw new RangeError(`frame of ${body.length} bytes over the limit`);
    }
    const frame = Buffer.allocUnsafe(4 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.set(body, 4);
    return frame;
}

export class FrameReader {
    constructor(onFrame, onError, max = FRAME_MAX) {
        this.onFrame = onFrame;
        this.onError = onError;
        this.max = max;
        this.chunks = [];
        this.buffered = 0;
        this.failed = false;
    }

    push(chunk) {
        if (this.failed) {
            return;
        }
        this.chunks.push(chunk);
        this.buffered += chunk.length;

        while (this.buffered >= 4) {
            const data = this.chunks.length === 1
                ? this.chunks[0] : Buffer.concat(this.chunks);
            this.chunks = [data];
            const len = data.readUInt32BE(0);
            if (len === 0 || len > this.max) {
                return this.fail(`frame length ${len} out of bounds`);
            }
            if (data.length < 4 + len) {
                return;
            }
            const body = data.subarray(4, 4 + len);
            const rest = data.subarray(4 + len);
            this.chunks = rest.length ? [rest] : [];
            this.buffered = rest.length;

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

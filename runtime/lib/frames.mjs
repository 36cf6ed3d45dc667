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

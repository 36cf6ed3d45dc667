// Load through a relay chain: node load.mjs PORT SINK_PORT MODE
//   throughput: 4 connections each send 256 MB to the sink; prints MB/s
//   connections: 4000 connect-send-close cycles, 64 at a time; prints /s
// The sink (on SINK_PORT, started here) reads and discards; for
// "connections" it answers one byte and ends.
import net from 'node:net';

const [port, sinkPort, mode] = process.argv.slice(2);

const sink = net.createServer((s) => {
    s.on('error', () => {});
    if (mode === 'connections') {
        s.once('data', () => s.end('k'));
    }
    s.on('data', () => {});
});
await new Promise((r) => sink.listen(Number(sinkPort), '127.0.0.1', r));
const chunk = Buffer.alloc(1 << 20, 7);

async function stream(bytes) {
    const s = net.connect(Number(port), '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    let left = bytes;
    await new Promise((resolve) => {
        const more = () => {
            while (left > 0) {
                left -= chunk.length;
                if (!s.write(chunk)) {
                    s.once('drain', more);
                    return;
                }
            }
            s.end();
            s.on('close', resolve);
            s.resume();
        };
        more();
    });
}

async function cycle() {
    const s = net.connect(Number(port), '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.write('x');
    await new Promise((r) => { s.once('data', r); s.once('close', r); });
    s.destroy();
}

const t0 = process.hrtime.bigint();
if (mode === 'throughput') {
    await Promise.all([0, 1, 2, 3].map(() => stream(256 << 20)));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log((4 * 256 / s).toFixed(0));
} else {
    let next = 0;
    const worker = async () => {
        while (next++ < 4000) {
            await cycle();
        }
    };
    await Promise.all(Array.from({ length: 64 }, worker));
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log((4000 / s).toFixed(0));
}
sink.close();
process.exit(0);

// Servers the transport tests (tests/relay, tests/egress) put behind their
// paths, each checking what crossed.
import crypto from 'node:crypto';
import net from 'node:net';

// sends back what it gets, ends when the client ends
export function echoServer() {
    return net.createServer((s) => {
        s.on('error', () => {});
        s.pipe(s);
    });
}

// reads to the client's end, then answers with the sha256 of it
export function sumServer() {
    return net.createServer((s) => {
        const h = crypto.createHash('sha256');
        s.on('error', () => {});
        s.on('data', (d) => h.update(d));
        s.on('end', () => s.end(h.digest('hex')));
    });
}

// sends N random bytes (N in the first line), then "\n" and their sha256
export function bigServer() {
    return net.createServer((s) => {
        s.on('error', () => {});
        s.once('data', (d) => {
            let left = Number(d.toString().split('\n')[0]);
            const h = crypto.createHash('sha256');
            const more = () => {
                while (left > 0) {
                    const chunk = crypto.randomBytes(Math.min(left, 1 << 20));
                    left -= chunk.length;
                    h.update(chunk);
                    if (!s.write(chunk)) {
                        s.once('drain', more);
                        return;
                    }
                }
                s.end('\n' + h.digest('hex'));
            };
            more();
        });
    });
}

// A stand-in for nginx's side of TLS-ALPN-01 (RFC 8737), until nginx
// serves it: answers ClientHellos that offer only `acme-tls/1` with the
// challenge certificate provend publishes (LIVE/challenge/NAME.pem, key
// then certificate), and refuses the rest.  It prints "listening" once up.
//   node responder.mjs PORT LIVE_DIR

import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';

const [port, live] = process.argv.slice(2);

const server = tls.createServer({
    ALPNProtocols: ['acme-tls/1'],
    minVersion: 'TLSv1.2',
    SNICallback: (name, cb) => {
        try {
            const pem = fs.readFileSync(path.join(live, 'challenge', `${name}.pem`), 'utf8');
            cb(null, tls.createSecureContext({ key: pem, cert: pem }));
        } catch (e) {
            console.log(`no challenge for ${name}`);
            cb(e);
        }
    },
}, (s) => {
    console.log(`answered a challenge for ${s.servername} (${s.alpnProtocol})`);
    s.end();
});
server.on('tlsClientError', () => {});
server.listen(Number(port), '127.0.0.1', () => console.log('listening'));

// An endpoint that lies, as the host could: forwards JSON-RPC to ganache
// and changes the answers as the file MODE says (read at each request):
//   none      passes them on
//   header    eth_getBlockByHash's stateRoot changed
//   proof     a byte of eth_getProof's last account node changed
//   storage   a byte of the first storage proof's last node changed
//   fields    eth_getProof's own fields changed (what a careless client
//             would read): balance, nonce, storageHash, each storage
//             proof's key and value
//   value=HEX each storage proof's own value field HEX (the proof kept)
//   hang      eth_getProof never answered
//   huge      eth_getProof answered with 300 KiB of padding
//   status    eth_getProof answered with HTTP 500
//   log-data  a receipt's first log's data changed (eth_getTransactionReceipt)
//   log-drop  a receipt's first log left out
//   log-add   a receipt given a log it does not hold
// With --block-receipts it answers eth_getBlockReceipts itself (ganache
// has none), from the block's eth_getTransactionReceipt answers, the
// log-* changes made there too.
// Each change made is said on stdout ("applied MODE METHOD").
// Usage: node tests/chains/liar.mjs PORT UPSTREAM_PORT MODE_FILE
//        [--block-receipts]
import fs from 'node:fs';
import http from 'node:http';

const [port, upstream, modeFile, option] = process.argv.slice(2);

/* method(params) at ganache, its answer */
function ask(method, params) {
    return new Promise((ok, fail) => {
        const up = http.request({ host: '127.0.0.1', port: Number(upstream),
                                  method: 'POST', path: '/',
                                  headers: { 'content-type':
                                             'application/json' } }, (u) => {
            const got = [];
            u.on('data', (c) => got.push(c));
            u.on('end', () => ok(JSON.parse(Buffer.concat(got))));
        });
        up.on('error', fail);
        up.end(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }));
    });
}

/* a receipt's logs changed as a log-* mode says */
function lie(mode, r) {
    if (mode === 'log-data') {
        r.logs[0].data = '0x0bad';
    } else if (mode === 'log-drop') {
        r.logs.shift();
    } else {
        r.logs.push({ address: r.to, data: '0x0bad',
                      topics: ['0x' + '00'.repeat(31) + '01'] });
    }
}

async function blockReceipts(hash, mode) {
    const block = (await ask('eth_getBlockByHash', [hash, false])).result;
    if (!block) {
        return { jsonrpc: '2.0', id: 1, result: null };
    }
    const receipts = [];
    for (const t of block.transactions) {
        receipts.push((await ask('eth_getTransactionReceipt', [t])).result);
    }
    const first = receipts.find((r) => r.logs.length > 0);
    if (mode.startsWith('log-') && first) {
        console.log(`applied ${mode} eth_getBlockReceipts`);
        lie(mode, first);
    }
    return { jsonrpc: '2.0', id: 1, result: receipts };
}

function flip(hex) {
    /* the byte 3 from the end */
    const i = hex.length - 6;
    const b = (parseInt(hex.slice(i, i + 2), 16) ^ 1).toString(16)
        .padStart(2, '0');
    return hex.slice(0, i) + b + hex.slice(i + 2);
}

http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
        const body = Buffer.concat(chunks);
        const asked = JSON.parse(body);
        if (asked.method === 'eth_getBlockReceipts'
            && option === '--block-receipts') {
            let mode = 'none';
            try { mode = fs.readFileSync(modeFile, 'utf8').trim(); }
            catch { /* none */ }
            blockReceipts(asked.params[0], mode).then((ans) => {
                ans.id = asked.id;
                res.writeHead(200, { 'content-type': 'application/json' });
                res.end(JSON.stringify(ans));
            }, () => { res.writeHead(502); res.end(); });
            return;
        }
        const up = http.request({ host: '127.0.0.1', port: Number(upstream),
                                  method: 'POST', path: '/',
                                  headers: { 'content-type':
                                             'application/json' } }, (u) => {
            const got = [];
            u.on('data', (c) => got.push(c));
            u.on('end', () => {
                let mode = 'none';
                try { mode = fs.readFileSync(modeFile, 'utf8').trim(); }
                catch { /* none */ }
                const method = JSON.parse(body).method;
                const ans = JSON.parse(Buffer.concat(got));
                const r = ans.result;
                if (mode === 'hang' && method === 'eth_getProof') {
                    console.log(`applied ${mode} ${method}`);
                    return;                 /* never answered */
                }
                if (mode === 'status' && method === 'eth_getProof') {
                    console.log(`applied ${mode} ${method}`);
                    res.writeHead(500, { 'content-type': 'application/json' });
                    res.end(JSON.stringify(ans));
                    return;
                }
                if (mode === 'huge' && method === 'eth_getProof') {
                    ans.padding = 'x'.repeat(300 * 1024);
                }
                if (mode !== 'none') {
                    console.log(`applied ${mode} ${method}`);
                }
                if (mode === 'header' && method === 'eth_getBlockByHash' && r) {
                    r.stateRoot = '0x' + '11'.repeat(32);
                } else if (mode === 'proof' && method === 'eth_getProof') {
                    r.accountProof[r.accountProof.length - 1] =
                        flip(r.accountProof.at(-1));
                } else if (mode === 'storage' && method === 'eth_getProof'
                           && r.storageProof.length > 0) {
                    const p = r.storageProof[0].proof;
                    p[p.length - 1] = flip(p.at(-1));
                } else if (mode.startsWith('log-') && r
                           && method === 'eth_getTransactionReceipt'
                           && (r.logs.length > 0 || mode === 'log-add')) {
                    lie(mode, r);
                } else if (mode.startsWith('value=')
                           && method === 'eth_getProof') {
                    for (const sp of r.storageProof) {
                        sp.value = mode.slice(6);
                    }
                } else if (mode === 'fields' && method === 'eth_getProof') {
                    r.balance = '0xdeadbeef';
                    r.nonce = '0x99';
                    r.storageHash = '0x' + '22'.repeat(32);
                    for (const sp of r.storageProof) {
                        sp.value = '0x77';
                        sp.key = '0x5';
                    }
                }
                res.writeHead(200, { 'content-type': 'application/json' });
                res.end(JSON.stringify(ans));
            });
        });
        up.on('error', () => { res.writeHead(502); res.end(); });
        up.end(body);
    });
}).listen(Number(port), '127.0.0.1');

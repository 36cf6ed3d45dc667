// JSON-RPC to the ganache of tests/chains/ganache.mjs on 127.0.0.1:PORT,
// for the scripts that drive it (drive.mjs, tokens.mjs).
let id = 0;

export function rpcAt(port) {
    return async (method, params = []) => {
        const res = await fetch(`http://127.0.0.1:${port}/`, {
            method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method,
                                   params }),
        });
        const ans = await res.json();
        if (ans.error) {
            throw new Error(`${method}: ${ans.error.message}`);
        }
        return ans.result;
    };
}

// A chain for tests/chains.sh and tests/events.sh: ganache on
// 127.0.0.1:PORT (deterministic wallet), with a contract whose storage
// holds slot 0 = 1 and slot 1 = 42, a transfer, and an emitter (a
// contract whose every call logs its call data under topic 1); once
// mined, writes OUT (JSON: the head's hash, the contract, the emitter,
// the sender, its balance there) and serves until killed.
// Usage: node tests/chains/ganache.mjs PORT OUT
import fs from 'node:fs';
import ganache from 'ganache';

const [port, out] = process.argv.slice(2);
const server = ganache.server({ wallet: { deterministic: true },
                                logging: { quiet: true },
                                chain: { hardfork: 'shanghai' } });
await new Promise((ok, fail) => server.listen(Number(port), '127.0.0.1',
                                              (e) => (e ? fail(e) : ok())));
const rpc = (method, params = []) => server.provider.request({ method,
                                                               params });
const [from, to] = await rpc('eth_accounts');
/* init code: storage[0] = 1, storage[1] = 42 */
const tx = await rpc('eth_sendTransaction', [{
    from, data: '0x6001600055602a60015500', gas: '0x30000' }]);
const { contractAddress } = await rpc('eth_getTransactionReceipt', [tx]);
await rpc('eth_sendTransaction', [{ from, to, value: '0x1234' }]);
/* the emitter: runtime LOG1(topic 1, call data); init copies it out */
const runtime = '3660006000376001366000a100';
const size = (runtime.length / 2).toString(16).padStart(2, '0');
const made = await rpc('eth_sendTransaction', [{ from, gas: '0x30000',
    data: `0x60${size}600c60003960${size}6000f3${runtime}` }]);
const emitter = (await rpc('eth_getTransactionReceipt', [made]))
    .contractAddress;
await rpc('evm_mine', []);
const head = await rpc('eth_getBlockByNumber', ['latest', false]);
fs.writeFileSync(out + '.tmp', JSON.stringify({
    checkpoint: head.hash, number: head.number, contract: contractAddress,
    emitter, sender: from,
    balance: await rpc('eth_getBalance', [from, head.number]),
    nonce: await rpc('eth_getTransactionCount', [from, head.number]),
}));
fs.renameSync(out + '.tmp', out);

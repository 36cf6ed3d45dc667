// An ERC-721 on the ganache of tests/chains/ganache.mjs, for tests/nft.sh
// (contracts/TestTokens.sol, compiled here with solc from npm):
//   deploy INFO              deploys it; INFO (JSON): its address, methods
//   mint INFO TO ID          the deployer mints token ID to TO
//   transfer INFO FROM TO ID FROM (a ganache account) gives it to TO
//   approve INFO FROM TO ID  FROM (the owner) approves TO for token ID
//   owner INFO ID            prints ownerOf(ID), as the endpoint says
//   accounts                 prints ganache's accounts, one a line
//   sign ADDRESS TEXT        prints ADDRESS's personal_sign of TEXT
//   head                     prints the head's number
//   mine N                   N empty blocks
// Usage: node tests/chains/tokens.mjs PORT COMMAND ARGS...
import fs from 'node:fs';

import { rpcAt } from './rpc.mjs';
import { compile } from './solc.mjs';

const [port, command, ...args] = process.argv.slice(2);

const rpc = rpcAt(port);

const word = (v) => BigInt(v).toString(16).padStart(64, '0');
const info = () => JSON.parse(fs.readFileSync(args[0], 'utf8'));
function data(method, ...values) {
    const selector = info().methods[method];
    if (!selector) {
        throw new Error(`no method ${method}`);
    }
    return '0x' + selector + values.map(word).join('');
}
async function mined(tx) {
    const r = await rpc('eth_getTransactionReceipt', [tx]);
    if (r.status !== '0x1') {
        throw new Error(`the transaction failed: ${JSON.stringify(r)}`);
    }
    return r;
}

const accounts = await rpc('eth_accounts');
if (command === 'deploy') {
    const { bytecode, methods } = compile('TestTokens');
    const tx = await rpc('eth_sendTransaction', [{
        from: accounts[0], data: '0x' + bytecode, gas: '0x300000' }]);
    const { contractAddress } = await mined(tx);
    fs.writeFileSync(args[0], JSON.stringify({ address: contractAddress,
                                               methods }));
    console.log(contractAddress);
} else if (command === 'mint') {
    await mined(await rpc('eth_sendTransaction', [{
        from: accounts[0], to: info().address, gas: '0x100000',
        data: data('mint(address,uint256)', args[1], args[2]) }]));
} else if (command === 'transfer') {
    await mined(await rpc('eth_sendTransaction', [{
        from: args[1], to: info().address, gas: '0x100000',
        data: data('transferFrom(address,address,uint256)', args[1], args[2],
                   args[3]) }]));
} else if (command === 'approve') {
    await mined(await rpc('eth_sendTransaction', [{
        from: args[1], to: info().address, gas: '0x100000',
        data: data('approve(address,uint256)', args[2], args[3]) }]));
} else if (command === 'owner') {
    const r = await rpc('eth_call', [{ to: info().address,
                                       data: data('ownerOf(uint256)',
                                                  args[1]) }, 'latest']);
    console.log('0x' + r.slice(-40));
} else if (command === 'accounts') {
    console.log(accounts.join('\n'));
} else if (command === 'sign') {
    const text = '0x' + Buffer.from(args[1]).toString('hex');
    /* ganache's eth_sign signs as personal_sign does (EIP-191) */
    console.log(await rpc('eth_sign', [args[0], text]));
} else if (command === 'head') {
    console.log(parseInt(await rpc('eth_blockNumber'), 16));
} else if (command === 'mine') {
    for (let i = 0; i < Number(args[0]); i++) {
        await rpc('evm_mine');
    }
} else {
    console.error(`unknown command ${command}`);
    process.exit(2);
}

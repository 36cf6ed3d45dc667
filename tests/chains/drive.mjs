// Drives the ganache of tests/chains/ganache.mjs for tests/events.sh:
//   emit EMITTER HEX...       one transaction (and block) per HEX, logging it
//   emit-block EMITTER HEX... all of them in one block
//   mine N                    N empty blocks
//   snapshot                  prints an id for revert
//   revert ID                 the chain back to the snapshot
//   head                      prints the head's number
//   nonce ADDRESS             prints its nonce at the head (0x hex)
// Usage: node tests/chains/drive.mjs PORT COMMAND ARGS...
import { rpcAt } from './rpc.mjs';

const [port, command, ...args] = process.argv.slice(2);

const rpc = rpcAt(port);

const [from] = await rpc('eth_accounts');
const send = (to, data) => rpc('eth_sendTransaction', [{ from, to, data,
                                                         gas: '0x30000' }]);
if (command === 'emit') {
    for (const data of args.slice(1)) {
        await send(args[0], data);
    }
} else if (command === 'emit-block') {
    await rpc('miner_stop');
    for (const data of args.slice(1)) {
        await send(args[0], data);
    }
    await rpc('evm_mine');
    await rpc('miner_start');
} else if (command === 'mine') {
    for (let i = 0; i < Number(args[0]); i++) {
        await rpc('evm_mine');
    }
} else if (command === 'snapshot') {
    console.log(await rpc('evm_snapshot'));
} else if (command === 'revert') {
    await rpc('evm_revert', [args[0]]);
} else if (command === 'nonce') {
    console.log(await rpc('eth_getTransactionCount', [args[0], 'latest']));
} else if (command === 'head') {
    console.log(parseInt(await rpc('eth_blockNumber'), 16));
} else {
    console.error(`unknown command ${command}`);
    process.exit(2);
}

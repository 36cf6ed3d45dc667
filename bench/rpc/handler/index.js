// bench/rpc: the trivial handler, callable over RPC (Execute
// "index.js#ping") and over HTTP (GET /ping), the same function.
import { run, runOnHttp } from '@proven-network/handler';

const ping = (n) => ({ pong: n ?? 0 });

export const rpcPing = run(ping);
export const httpPing = runOnHttp({ path: '/ping' }, () => ping(0));

// The app bench/app deploys: the shared function as a runOnHttp handler.
import { runOnHttp } from '@proven-network/handler';
import { hello } from './handler.js';

export const hi = runOnHttp({ path: '/hi' }, (req) => hello(req.path));

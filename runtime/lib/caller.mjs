// Who a call runs for: the identity an RPC session proved, and provend's
// grant for that call, carried through the call's async work so that a
// storage request made anywhere in it is scoped to that identity.

import { AsyncLocalStorage } from 'node:async_hooks';

export const caller = new AsyncLocalStorage();

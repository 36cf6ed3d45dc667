// HTTP routes of a package: "/items/:id" patterns matched segment by
// segment, on the path as nginx decoded it (no second decoding here).  When several patterns match, the one with more literal
// segments (counted from the left) wins, so "/items/new" beats
// "/items/:id" whatever their order in the code.

export class CallInputError extends Error {}

function compile(pattern) {
    const parts = pattern.split('/').slice(1);
    if (parts.length > 1 && parts[parts.length - 1] === '') {
        parts.pop();                       /* "/a/" is "/a" */
    }
    return parts.map((p) => (p.startsWith(':')
        ? { param: p.slice(1) } : { literal: p }));
}

export class Routes {
    // handlers: the manifest's list; only kind "http" entries route.
    constructor(handlers) {
        this.routes = [];
        handlers.forEach((h, index) => {
            if (h.kind === 'http') {
                this.routes.push({ index, method: h.method,
                                   segments: compile(h.path), handler: h });
            }
        });
    }

    // { index, handler, params } or { status: 404 | 405, allow }
    match(method, path) {
        const parts = path.split('/').slice(1);
        if (parts.length > 1 && parts[parts.length - 1] === '') {
            parts.pop();
        }

        let best = null, bestScore = null;
        const allow = new Set();

        for (const route of this.routes) {
            if (route.segments.length !== parts.length) {
                continue;
            }
            const params = {};
            const score = [];
            let ok = true;
            for (let i = 0; i < parts.length && ok; i++) {
                const s = route.segments[i];
                if (s.literal !== undefined) {
                    ok = s.literal === parts[i];
                    score.push(1);
                } else {
                    ok = parts[i] !== '';
                    if (ok) {
                        params[s.param] = parts[i];
                    }
                    score.push(0);
                }
            }
            if (!ok) {
                continue;
            }
            const methodOk = route.method === method
                || (method === 'HEAD' && route.method === 'GET');
            if (!methodOk) {
                allow.add(route.method);
                continue;
            }
            if (bestScore === null || compareScore(score, bestScore) > 0
                || (compareScore(score, bestScore) === 0
                    && route.method === method && best.method !== method))
            {
                best = { index: route.index, handler: route.handler, params,
                         method: route.method };
                bestScore = score;
            }
        }

        if (best !== null) {
            return best;
        }
        return allow.size ? { status: 405, allow: [...allow].sort() }
                          : { status: 404 };
    }
}

function compareScore(a, b) {
    for (let i = 0; i < a.length; i++) {
        if (a[i] !== b[i]) {
            return a[i] - b[i];
        }
    }
    return 0;
}

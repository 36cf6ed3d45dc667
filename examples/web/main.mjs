// examples/web: the client package in a browser, against `make run` with
// examples/hello deployed (proven app deploy examples/hello --app hello).
// Open http://127.0.0.1:8080/web/ (?app=NAME for another app).
//
// The root and the PCRs are pinned: a page for a real enclave embeds the
// AWS Nitro root and the PCRs of the build it trusts.  A local node's
// documents chain to its dev root and measure its local files, which
// local.conf serves at /web/root.pem and /web/pcrs.json for this example.

import { newIdentityKey, Session } from '/sdk/proven.mjs';

const app = new URLSearchParams(location.search).get('app') || 'hello';
const log = document.getElementById('log');
document.getElementById('app').textContent = app;

function say(line) {
    log.textContent += line + '\n';
}

async function main() {
    const root = await (await fetch('/web/root.pem')).text();
    const pcrs = await (await fetch('/web/pcrs.json')).json();

    const session = await Session.open(location.origin, { app, root, pcrs });
    say(`session ${session.text}: the document checks out`);

    const who = await session.whoAmI();
    say(`WhoAmI: ${who.result} from ${who.data.origin}`);

    const sum = await session.execute('index.js#sum', 40, 2);
    say(`sum over HTTP: ${sum.data.output}`);

    await session.connect();
    const again = await session.execute('index.js#sum', 1, 2);
    say(`sum over WebSocket: ${again.data.output}`);

    await session.identify(newIdentityKey());
    say(`identified: ${(await session.whoAmI()).result}`);
    await session.execute('index.js#saveNote', 'from the browser');
    const note = await session.execute('index.js#readNote');
    say(`note: ${note.data.output}`);
    session.close();

    document.body.dataset.state = 'done';
}

main().catch((e) => {
    say(`error: ${e.message}`);
    log.className = 'error';
    document.body.dataset.state = 'error';
});

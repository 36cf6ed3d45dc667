// examples/web/passkey.html: sign in with a passkey.  The first visit
// registers one (the identity its PRF output derives); later visits, or
// ?login=1 in a browser that holds the passkey but not this page's note
// of it, sign in with it and show the same identity.

import { hex, Session } from '/sdk/proven.mjs';

const app = new URLSearchParams(location.search).get('app') || 'hello';
const forceLogin = new URLSearchParams(location.search).has('login');
const log = document.getElementById('log');
const NOTE = 'proven-passkey-registered';

function say(line) {
    log.textContent += line + '\n';
}

document.getElementById('forget').onclick = () => {
    localStorage.removeItem(NOTE);
    location.reload();
};

async function main() {
    const root = await (await fetch('/web/root.pem')).text();
    const pcrs = await (await fetch('/web/pcrs.json')).json();
    const session = await Session.open(location.origin, { app, root, pcrs });
    say(`session ${session.text}: the document checks out`);

    let r;
    if (localStorage.getItem(NOTE) === null && !forceLogin) {
        r = await session.registerPasskey({ name: 'Proven example' });
        if (r.result !== 'success') {
            throw new Error(`registration refused: ${r.data}`);
        }
        localStorage.setItem(NOTE, hex(r.data.credential_id));
        say('registered a passkey');
    } else {
        r = await session.loginPasskey();
        if (r.result !== 'success') {
            throw new Error(`sign-in refused: ${r.data}`);
        }
        say(`signed in with a passkey; its PRF key: ${
            r.identityKey ? 'this identity\'s' : 'not given here'}`);
    }
    const who = await session.whoAmI();
    say(`identity: ${hex(who.data.identity)}`);
    document.body.dataset.state = 'done';
}

main().catch((e) => {
    say(`error: ${e.message}`);
    log.className = 'error';
    document.body.dataset.state = 'error';
});

// Bundles the client for browsers: dist/proven.mjs, one ES module with its
// dependencies (cborg, @noble/curves, @peculiar/x509).
import { build } from 'esbuild';

await build({
    entryPoints: [new URL('src/index.mjs', import.meta.url).pathname],
    outfile: new URL('dist/proven.mjs', import.meta.url).pathname,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    external: ['node:crypto', 'node:https'],   /* Node only: never loaded in a browser */
    minify: true,
    legalComments: 'eof',
    logLevel: 'warning',
});

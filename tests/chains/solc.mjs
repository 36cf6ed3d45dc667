// Compiles a contract of tests/chains/contracts with solc from npm, for
// ganache 7 (Shanghai: no Cancun opcodes): {bytecode, methods}.
import fs from 'node:fs';
import { createRequire } from 'node:module';

export function compile(name) {
    const solc = createRequire(import.meta.url)('solc');
    const file = `${name}.sol`;
    const source = fs.readFileSync(new URL(`contracts/${file}`,
                                           import.meta.url), 'utf8');
    const out = JSON.parse(solc.compile(JSON.stringify({
        language: 'Solidity',
        sources: { [file]: { content: source } },
        settings: { evmVersion: 'shanghai', optimizer: { enabled: true },
                    outputSelection: { '*': { '*': [
                        'evm.bytecode.object', 'evm.methodIdentifiers'] } } },
    })));
    const errors = (out.errors || []).filter((e) => e.severity === 'error');
    if (errors.length > 0) {
        throw new Error(errors.map((e) => e.formattedMessage).join('\n'));
    }
    const evm = out.contracts[file][name].evm;
    return { bytecode: evm.bytecode.object, methods: evm.methodIdentifiers };
}

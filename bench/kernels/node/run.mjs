// Runs a WASI preview-1 module ITERATIONS times under Node.js's WASI (V8),
// for the kernels benchmark:
//
//   node run.mjs MODULE.wasm ITERATIONS STDOUT_FILE INPUT_DIR|- ARG...
//
// The module is compiled once (as the isolate's compilation cache does);
// every iteration is a fresh instance and a fresh WASI, started to exit.
// The guest's stdout goes to STDOUT_FILE (appended), INPUT_DIR is preopened
// as /input. Prints the wall-clock and the CPU nanoseconds (user + system,
// all of node's threads) the iterations took, in total, on stdout; exits 1
// if any iteration exits non-zero. Run with --expose-gc (see below).
import { readFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { WASI } from 'node:wasi';

const [modPath, iterArg, outPath, inputDir, ...args] = process.argv.slice(2);
const iterations = Number(iterArg);
const mod = await WebAssembly.compile(await readFile(modPath));
const out = openSync(outPath, 'a');
const preopens = inputDir === '-' ? {} : { '/input': inputDir };
let wall = 0n, cpu = 0;
for (let i = 0; i < iterations; i++) {
  const start = process.hrtime.bigint(), startCPU = process.cpuUsage();
  const wasi = new WASI({ version: 'preview1', args: ['guest', ...args], env: {}, preopens, stdout: out, returnOnExit: true });
  const inst = await WebAssembly.instantiate(mod, wasi.getImportObject());
  const code = wasi.start(inst);
  const used = process.cpuUsage(startCPU);
  wall += process.hrtime.bigint() - start;
  cpu += (used.user + used.system) * 1000;
  // Free the finished instance's memory before the next one: V8 keeps
  // large reservations per Wasm memory, and several dead Go instances
  // waiting for a collection crash node v20 (SIGSEGV).
  if (globalThis.gc) globalThis.gc();
  if (code !== 0) {
    console.error(`iteration ${i}: exit status ${code}`);
    process.exit(1);
  }
}
closeSync(out);
console.log(`${wall} ${cpu}`);

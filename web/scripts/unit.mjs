// Unit tests of the app's state logic with node's own test runner. Node runs JavaScript, the
// tests and the code they test are TypeScript: Vite (already the app's build tool) compiles
// them for Node into node_modules/.cache/unit, then `node --test` runs the result.
//
//   npm run test:unit

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';

// The API types the code under test imports.
spawnSync(process.execPath, [fileURLToPath(new URL('./api-types.mjs', import.meta.url))], { stdio: 'inherit' });

const web = fileURLToPath(new URL('..', import.meta.url));
const outDir = join(web, 'node_modules/.cache/unit');
const tests = readdirSync(join(web, 'test')).filter((f) => f.endsWith('.test.ts'));
const input = Object.fromEntries(tests.map((f) => [f.replace(/\.ts$/, ''), join(web, 'test', f)]));

await build({
  root: web,
  configFile: false,
  logLevel: 'warn',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    ssr: true,
    outDir,
    emptyOutDir: true,
    minify: false,
    rollupOptions: { input, output: { entryFileNames: '[name].mjs', format: 'es' } },
  },
});

const files = tests.map((f) => join(outDir, f.replace(/\.ts$/, '.mjs')));
const run = spawnSync(process.execPath, ['--test', ...files], { stdio: 'inherit' });
process.exit(run.status ?? 1);

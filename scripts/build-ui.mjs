#!/usr/bin/env node
// Builds the dashboard's static files into dist/ui: one bundle (esbuild; Preact, htm and uPlot
// inside, nothing fetched at run time), one stylesheet, the page. The API server serves them.
// Type-checking is `tsc -p src/ui` (run by `npm run build` before this).
import { build } from 'esbuild';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'ui');
const require = createRequire(import.meta.url);

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(root, 'src', 'ui', 'main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2022'],
  legalComments: 'linked',
  logLevel: 'warning',
});
const css = await Promise.all([
  readFile(require.resolve('uplot/dist/uPlot.min.css'), 'utf8'),
  readFile(join(root, 'src', 'ui', 'style.css'), 'utf8'),
]);
await writeFile(join(out, 'app.css'), css.join('\n'));
await copyFile(join(root, 'src', 'ui', 'index.html'), join(out, 'index.html'));

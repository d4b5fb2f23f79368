#!/usr/bin/env node
// Runs the compiled test files with node's built-in test runner.
// Usage: node scripts/run-tests.mjs [substring filter ...]
// Test files live in dist/test/**/NAME.test.js after `npm run build`.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function findTests(dir) {
  const found = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (entry.endsWith('.test.js')) found.push(path);
  }
  return found;
}

const filters = process.argv.slice(2);
// A compiled test whose source was deleted is stale output, not a test: skip it.
const files = findTests('dist/test')
  .filter((f) => existsSync(f.replace(/^dist\//, '').replace(/\.js$/, '.ts')))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const concurrency = process.env.TIDEMARK_TEST_CONCURRENCY ?? '2';
// Poisoned payloads: every NBD write buffer given back for reuse is overwritten, so a part of the
// array that kept a host write's bytes past the write's completion fails the data checks
// (src/adapters/nbd-server/payload-pool.ts).
const env = { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8', TIDEMARK_POISON_RELEASED_PAYLOADS: '1' };
const result = spawnSync(process.execPath,
  ['--enable-source-maps', '--test', `--test-concurrency=${concurrency}`, ...files],
  { stdio: 'inherit', env });
process.exit(result.status ?? 1);

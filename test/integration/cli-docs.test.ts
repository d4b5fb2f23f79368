// docs/cli.md is generated from the CLI's --help texts; this fails when they drift apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoRoot } from '../helpers/daemon.js';

test('docs/cli.md matches the CLI help (regenerate: node scripts/write-cli-docs.mjs)', async () => {
  const script = join(repoRoot, 'scripts', 'write-cli-docs.mjs');
  const { renderCliDocs } = (await import(script)) as { renderCliDocs: () => string };
  assert.equal(await readFile(join(repoRoot, 'docs', 'cli.md'), 'utf8'), renderCliDocs());
});

// The test-prerequisite helper: skips with the reason on a developer's machine, fails with the
// reason under CI=true — checked on the helper and on a real `node --test` run of a test using it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { missingTools, requirement, underCi } from '../helpers/requirement.js';

test('requirement: without CI a missing prerequisite is the skip reason; present is no skip', () => {
  assert.equal(requirement('needs root', {}), 'needs root');
  assert.equal(requirement('needs root', { CI: 'false' }), 'needs root');
  assert.equal(requirement(false, {}), false);
});

test('requirement: under CI=true a missing prerequisite throws with the reason; present is no skip', () => {
  assert.throws(() => requirement('needs root', { CI: 'true' }), /CI=true and a test prerequisite is missing: needs root/);
  assert.throws(() => requirement('netns', { CI: '1' }), /missing: netns/);
  assert.equal(requirement(false, { CI: 'true' }), false);
  assert.equal(underCi({ CI: 'true' }), true);
  assert.equal(underCi({ CI: '' }), false);
});

test('missingTools names exactly the tools not on PATH', () => {
  const nodeDir = dirname(process.execPath);
  assert.equal(missingTools([process.execPath.split('/').pop()!], { PATH: nodeDir }), false);
  assert.equal(missingTools(['node', 'tm-no-such-tool', 'tm-nor-this'], { PATH: nodeDir }),
    'not installed (not on PATH): tm-no-such-tool, tm-nor-this');
  assert.equal(missingTools(['node'], { PATH: '' }), 'not installed (not on PATH): node');
});

test('a node:test file using it skips without CI and fails with the reason under CI=true', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tm-requirement-'));
  try {
    const helper = pathToFileURL(join(dirname(fileURLToPath(import.meta.url)), '../helpers/requirement.js')).href;
    const file = join(dir, 'needs-tool.test.mjs');
    await writeFile(file, `import { test } from 'node:test';
import { missingTools, requirement } from ${JSON.stringify(helper)};
test('uses a tool', { skip: requirement(missingTools(['tm-no-such-tool'])) }, () => { throw new Error('ran'); });
`);
    const run = (ci: string | undefined) => {
      const env = { ...process.env };
      delete env.CI;
      delete env.NODE_TEST_CONTEXT; // run as a top-level node --test, not as a child of this runner
      if (ci !== undefined) env.CI = ci;
      return spawnSync(process.execPath, ['--test', '--test-reporter=tap', file], { encoding: 'utf8', env, timeout: 30_000 });
    };
    const local = run(undefined);
    assert.equal(local.status, 0, local.stdout + local.stderr);
    assert.match(local.stdout, /# SKIP not installed \(not on PATH\): tm-no-such-tool/);
    assert.match(local.stdout, /# skipped 1/);
    const ci = run('true');
    assert.notEqual(ci.status, 0, 'the run fails under CI');
    assert.match(ci.stdout + ci.stderr, /CI=true and a test prerequisite is missing: not installed \(not on PATH\): tm-no-such-tool/);
    assert.doesNotMatch(ci.stdout, /# SKIP/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

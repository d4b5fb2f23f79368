// Profiled bench daemons run with the launcher's own node flags (its #! line), not a bare node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shebangNodeFlags, underCpuProfile } from '../helpers/cpu-profile.js';

const launcher = join(fileURLToPath(import.meta.url), '..', '..', '..', '..', 'bin', 'tidemark');

test('bin/tidemark\'s #! flags are found, and a profiled daemon keeps them', () => {
  const flags = shebangNodeFlags(launcher);
  assert.ok(flags.some((f) => f.startsWith('--initial-old-space-size=')), `flags: ${flags.join(' ')}`);
  const saved = process.env.TIDEMARK_BENCH_PROFILE;
  process.env.TIDEMARK_BENCH_PROFILE = '/tmp/profiles';
  try {
    const [command, args] = underCpuProfile(launcher, ['array', 'start']);
    assert.equal(command, process.execPath);
    assert.deepEqual(args, [...flags, '--cpu-prof', '--cpu-prof-dir=/tmp/profiles', launcher, 'array', 'start']);
  } finally {
    if (saved === undefined) delete process.env.TIDEMARK_BENCH_PROFILE;
    else process.env.TIDEMARK_BENCH_PROFILE = saved;
  }
});

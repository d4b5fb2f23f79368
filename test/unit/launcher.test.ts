// bin/tidemark chooses node's flags: the heap flag for the daemon only, TIDEMARK_NODE_FLAGS passed
// on, libuv's pool sized. Run with a `node` first on PATH that prints what it was given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { profiledEnv } from '../helpers/cpu-profile.js';

const launcher = join(fileURLToPath(import.meta.url), '..', '..', '..', '..', 'bin', 'tidemark');
const HEAP_FLAG = '--initial-old-space-size=256';

interface Seen { readonly pool: string; readonly args: string[] }

async function withEchoNode(body: (run: (launcherPath: string, args: string[], env?: NodeJS.ProcessEnv) => Promise<Seen>, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-launcher-'));
  try {
    await writeFile(join(dir, 'node'), '#!/bin/sh\nprintf "%s\\n" "$UV_THREADPOOL_SIZE" "$@"\n');
    await chmod(join(dir, 'node'), 0o755);
    const run = (launcherPath: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Seen> => new Promise((resolve, reject) => {
      const { UV_THREADPOOL_SIZE: _pool, TIDEMARK_NODE_FLAGS: _flags, ...inherited } = process.env;
      execFile(launcherPath, args, { env: { ...inherited, PATH: `${dir}:${process.env.PATH ?? ''}`, ...env } }, (error, stdout) => {
        if (error) return reject(error);
        const [pool = '', ...rest] = stdout.trimEnd().split('\n');
        resolve({ pool, args: rest });
      });
    });
    await body(run, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('the daemon gets the heap flag; management commands run without V8 flags', async () => {
  await withEchoNode(async (run) => {
    const script = join(launcher, '..', '..', 'dist', 'src', 'bin', 'tidemark.js');
    const daemon = await run(launcher, ['array', 'start', '--data', '/tmp/x']);
    assert.equal(daemon.args[0], HEAP_FLAG);
    assert.equal(join(daemon.args[1]!), script);
    assert.deepEqual(daemon.args.slice(2), ['array', 'start', '--data', '/tmp/x']);
    // Global options may come first.
    assert.equal((await run(launcher, ['--json', 'array', 'start'])).args[0], HEAP_FLAG);
    for (const args of [['volume', 'list'], ['--json', 'array', 'show'], ['clone', 'show', 'array', 'start-here']]) {
      const seen = await run(launcher, args);
      assert.equal(join(seen.args[0]!), script, `${args.join(' ')}: ${seen.args.join(' ')}`);
      assert.deepEqual(seen.args.slice(1), args);
    }
  });
});

test('TIDEMARK_NODE_FLAGS reaches node as words, after the launcher\'s own flags', async () => {
  await withEchoNode(async (run) => {
    const seen = await run(launcher, ['array', 'start'], { TIDEMARK_NODE_FLAGS: '--cpu-prof --cpu-prof-dir=/tmp/p' });
    assert.deepEqual(seen.args.slice(0, 3), [HEAP_FLAG, '--cpu-prof', '--cpu-prof-dir=/tmp/p']);
    // The bench helper sets it for profiled daemons.
    const saved = process.env.TIDEMARK_BENCH_PROFILE;
    process.env.TIDEMARK_BENCH_PROFILE = '/tmp/profiles';
    try {
      assert.equal(profiledEnv().TIDEMARK_NODE_FLAGS, '--cpu-prof --cpu-prof-dir=/tmp/profiles');
      process.env.TIDEMARK_BENCH_PROFILE = '/tmp/with space';
      assert.throws(() => profiledEnv(), /without spaces/);
    } finally {
      if (saved === undefined) delete process.env.TIDEMARK_BENCH_PROFILE;
      else process.env.TIDEMARK_BENCH_PROFILE = saved;
    }
  });
});

test('libuv\'s pool: 4 to 16 threads by default, as given otherwise; a symlinked launcher finds the CLI', async () => {
  await withEchoNode(async (run, dir) => {
    const pool = Number((await run(launcher, ['volume', 'list'])).pool);
    assert.ok(Number.isInteger(pool) && pool >= 4 && pool <= 16, `pool ${pool}`);
    assert.equal((await run(launcher, ['volume', 'list'], { UV_THREADPOOL_SIZE: '7' })).pool, '7');
    // npm installs the launcher as a symlink elsewhere on PATH.
    const link = join(dir, 'tidemark');
    await symlink(launcher, link);
    const seen = await run(link, ['volume', 'list']);
    assert.equal(join(seen.args[0]!), join(launcher, '..', '..', 'dist', 'src', 'bin', 'tidemark.js'));
  });
});

// The volume file's write batcher writes a turn's small requests on the event loop (no thread-pool
// hand-off), sends large ones and everything after them to the pool, and backs off to the pool
// after slow direct writes.
// Real files; the clock is the only thing replaced (to make a write look slow).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIRECT_BACKOFF_MAX_MS, DIRECT_BACKOFF_MIN_MS, DIRECT_MAX_BYTES, IoBatcher } from '../../src/adapters/fs/io-batcher.js';

const filled = (length: number, byte: number): Uint8Array => new Uint8Array(length).fill(byte);

async function withFile(run: (fd: number, path: string) => Promise<void>, flags = 'r+'): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'tidemark-io-batcher-'));
  const path = join(dir, 'file');
  await writeFile(path, new Uint8Array(4 * DIRECT_MAX_BYTES + 1024 * 1024));
  const handle = await open(path, flags);
  try {
    await run(handle.fd, path);
  } finally {
    await handle.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test('small writes of a turn are direct; a large one and those after it go to the pool; all land, later over earlier', async () => {
  await withFile(async (fd, path) => {
    const large = DIRECT_MAX_BYTES + 4096;
    // Where each write lands: apart, except the last two (a small write over a large one's start).
    const at = { one: 0, two: 8192, three: 8192 + large, four: 8192 + large + 4096, five: 8192 + large + 65_536 };
    const later = { twelve: at.five + DIRECT_MAX_BYTES + 65_536, thirteen: at.five + DIRECT_MAX_BYTES + 131_072 };
    const writes = new IoBatcher(fd, 'write', { direct: true });
    await writes.submit(filled(4096, 1), at.one);
    assert.equal(writes.directWrites, 1, 'a lone 4 KiB write is written on the event loop');
    await writes.submit(filled(large, 2), at.two);
    assert.equal(writes.directWrites, 1, 'a write over DIRECT_MAX_BYTES goes to the pool');
    await Promise.all([writes.submit(filled(4096, 3), at.three), writes.submit(filled(4096, 4), at.four)]);
    assert.equal(writes.directWrites, 3, 'two small writes of one turn are both direct');
    await writes.submit(filled(DIRECT_MAX_BYTES, 6), at.five);
    assert.equal(writes.directWrites, 4, 'a write of DIRECT_MAX_BYTES (a large NBD write) is direct');
    // One turn: small, large, then a small one over the large one's range: the last must land last.
    await Promise.all([
      writes.submit(filled(4096, 12), later.twelve),
      writes.submit(filled(large, 13), later.thirteen),
      writes.submit(filled(4096, 14), later.thirteen),
    ]);
    assert.equal(writes.directWrites, 5, 'only the small write ahead of the large one is direct');
    const plain = new IoBatcher(fd, 'write');
    await plain.submit(filled(4096, 5), at.four + 8192);
    assert.equal(plain.directWrites, 0, 'without the option every write goes to the pool');
    const data = await readFile(path);
    assert.deepEqual(data.subarray(at.one, at.one + 4096), Buffer.from(filled(4096, 1)));
    assert.deepEqual(data.subarray(at.two, at.two + large), Buffer.from(filled(large, 2)));
    assert.deepEqual(data.subarray(at.three, at.three + 4096), Buffer.from(filled(4096, 3)));
    assert.deepEqual(data.subarray(at.four, at.four + 4096), Buffer.from(filled(4096, 4)));
    assert.deepEqual(data.subarray(at.four + 8192, at.four + 12_288), Buffer.from(filled(4096, 5)));
    assert.deepEqual(data.subarray(at.five, at.five + DIRECT_MAX_BYTES), Buffer.from(filled(DIRECT_MAX_BYTES, 6)));
    assert.deepEqual(data.subarray(later.twelve, later.twelve + 4096), Buffer.from(filled(4096, 12)));
    assert.deepEqual(data.subarray(later.thirteen, later.thirteen + 4096), Buffer.from(filled(4096, 14)));
    assert.deepEqual(data.subarray(later.thirteen + 4096, later.thirteen + large), Buffer.from(filled(DIRECT_MAX_BYTES, 13)));
  });
});

test('a write while a pool job of the file is in flight goes to the pool too', async () => {
  await withFile(async (fd, path) => {
    const writes = new IoBatcher(fd, 'write', { direct: true });
    // The big write (one item over the batch limit) enters the pool at once; the small one is
    // dispatched in this turn's check phase. The observation counts only if the big one was still
    // in the pool then (its completion is seen before the check phase), so a fast pool retries.
    for (let attempt = 0; ; attempt++) {
      assert.ok(attempt < 20, 'the big write never stayed in flight through a turn');
      const directBefore = writes.directWrites;
      let bigDone = false;
      const big = writes.submit(filled(32 * 1024 * 1024, 6), 0).then(() => { bigDone = true; });
      const small = writes.submit(filled(4096, 7), 40 * 1024 * 1024);
      const bigInFlight = await new Promise<boolean>((resolve) => setImmediate(() => resolve(!bigDone)));
      await Promise.all([big, small]);
      if (!bigInFlight) continue;
      assert.equal(writes.directWrites, directBefore);
      break;
    }
    const data = await readFile(path);
    assert.deepEqual(data.subarray(40 * 1024 * 1024, 40 * 1024 * 1024 + 4096), Buffer.from(filled(4096, 7)));
  });
});

test('a slow direct write sends writes to the pool for the backoff, then direct writes resume', async () => {
  await withFile(async (fd) => {
    let now = 0;
    let step = 0;
    // Each reading of the clock advances it by `step` ms: with step 5 a direct write seems to take 5 ms.
    const writes = new IoBatcher(fd, 'write', { direct: true, nowMs: () => (now += step) });
    step = 5;
    await writes.submit(filled(4096, 8), 0);
    assert.equal(writes.directWrites, 1, 'the slow write itself was direct');
    step = 0;
    await writes.submit(filled(4096, 9), 4096);
    assert.equal(writes.directWrites, 1, 'within the backoff: the pool');
    now += DIRECT_BACKOFF_MIN_MS;
    await writes.submit(filled(4096, 10), 8192);
    assert.equal(writes.directWrites, 2, 'after the backoff: direct again');
  });
});

test('the backoff doubles while the turns after it are slow too, up to its cap, and starts short again after a fast one', async () => {
  await withFile(async (fd) => {
    let now = 0;
    let step = 0;
    // Each reading of the clock advances it by `step` ms: with step 5 a direct write seems to take 5 ms.
    const writes = new IoBatcher(fd, 'write', { direct: true, nowMs: () => (now += step) });
    /** One write in a turn of its own; whether it was written directly. */
    const write = async (slow: boolean): Promise<boolean> => {
      step = slow ? 5 : 0;
      const before = writes.directWrites;
      await writes.submit(filled(4096, 1), 0);
      step = 0;
      return writes.directWrites > before;
    };
    assert.equal(await write(true), true, 'the first slow turn was direct');
    for (const backoff of [50, 100, 200, 400, 800, 1000, 1000].map((ms) => Math.min(ms, DIRECT_BACKOFF_MAX_MS))) {
      const slowEnded = now;
      now = slowEnded + backoff - 1;
      assert.equal(await write(false), false, `backing off for ${backoff} ms`);
      now = slowEnded + backoff;
      assert.equal(await write(true), true, `direct again after ${backoff} ms, and slow again`);
    }
    now += DIRECT_BACKOFF_MAX_MS;
    assert.equal(await write(false), true, 'a fast direct turn');
    assert.equal(await write(true), true, 'then a slow one');
    const slowEnded = now;
    now = slowEnded + DIRECT_BACKOFF_MIN_MS - 1;
    assert.equal(await write(false), false, 'backing off for the minimum again');
    now = slowEnded + DIRECT_BACKOFF_MIN_MS;
    assert.equal(await write(false), true);
  });
});

test('a turn whose direct writes turn slow sends the rest of the turn to the pool', async () => {
  await withFile(async (fd, path) => {
    let now = 0;
    let step = 0;
    const writes = new IoBatcher(fd, 'write', { direct: true, nowMs: () => (now += step) });
    step = 1; // each write seems to take 1 ms: after the third, the turn has taken more than DIRECT_SLOW_MS (2 ms)
    await Promise.all([0, 1, 2, 3, 4].map((i) => writes.submit(filled(4096, 20 + i), i * 4096)));
    assert.equal(writes.directWrites, 3, 'direct until the turn had taken DIRECT_SLOW_MS, the rest in the pool');
    step = 0;
    await writes.submit(filled(4096, 30), 65_536);
    assert.equal(writes.directWrites, 3, 'and the backoff holds');
    const data = await readFile(path);
    for (let i = 0; i < 5; i++) assert.deepEqual(data.subarray(i * 4096, (i + 1) * 4096), Buffer.from(filled(4096, 20 + i)));
  });
});

test('a direct write that fails rejects with the system error', async () => {
  await withFile(async (fd) => {
    const writes = new IoBatcher(fd, 'write', { direct: true });
    await assert.rejects(writes.submit(filled(4096, 11), 0), (error: NodeJS.ErrnoException) => error.code === 'EBADF');
    assert.equal(writes.directWrites, 0);
  }, 'r');
});

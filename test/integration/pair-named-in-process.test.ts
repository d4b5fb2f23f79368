// Named pairs, fan-out and chains between arrays in one process over in-memory links: the naming
// rules, the four-pair limit, the refusals of what several pairs would make ambiguous, and that
// every pair of a volume gets every change (host writes, replica writes, restored tracks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { inProcessLinks } from '../../src/sim/sim-links.js';
import type { PairState } from '../../src/core/replication/pair-rules.js';
import { isTidemarkError } from '../../src/core/errors.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const SECRET = new Uint8Array(32).fill(7);

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const image = async (array: TestArray, volume: string): Promise<string> => sha(await array.service.volume(volume).internalRead(0, SIZE));
const state = (array: TestArray, pair: string): PairState => array.service.pairs.status(pair).state;

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Arrays east, west and north, each a peer of the others, with the given volumes. */
async function threeArrays(volumes: { east: string[]; west: string[]; north: string[] }): Promise<{ a: TestArray; b: TestArray; c: TestArray; all: TestArray[] }> {
  const hub = inProcessLinks();
  const names = ['east', 'west', 'north'] as const;
  const all: TestArray[] = [];
  for (const name of names) all.push(await startTestArray({ name, links: hub.endpoint(name) }));
  for (const [i, array] of all.entries()) {
    for (const peer of names) if (peer !== names[i]) await array.service.addPeer(peer, '127.0.0.1:1', SECRET);
    for (const v of volumes[names[i]!]) await array.service.createVolume(v, SIZE);
  }
  return { a: all[0]!, b: all[1]!, c: all[2]!, all };
}

const closeAll = async (all: TestArray[]): Promise<void> => { for (const x of all) await x.close(); };

test('naming: the first pair is named after its volume, a second needs --name; bad and taken names are refused without change', async () => {
  const { a, b, c, all } = await threeArrays({ east: ['db', 'logs'], west: ['db-r', 'logs-r'], north: ['db-far'] });
  try {
    const first = await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    assert.equal(first.pair, 'db');
    assert.equal(first.volume, 'db');
    // R2 knows the pair by R1's name; its volume's name still stands for it while it has one pair.
    assert.equal(b.service.pairs.status('db').volume, 'db-r');
    assert.equal(b.service.pairs.status('db-r').pair, 'db');

    const refused = async (name: string | undefined, code: string): Promise<void> => {
      await assert.rejects(a.service.pairs.create({
        volume: 'db', ...(name === undefined ? {} : { name }), peer: 'north', remoteVolume: 'db-far', mode: 'async', onLinkFailure: 'continue',
      }), (e) => isTidemarkError(e) && e.code === code);
      assert.deepEqual(a.service.pairs.list().map((p) => p.pair), ['db'], 'nothing created');
      assert.equal(c.service.pairs.list().length, 0, 'no R2 half on north');
      assert.equal(c.service.volume('db-far').state, 'ready');
    };
    await refused(undefined, 'TM_ERR_PAIR_NAME_REQUIRED');
    await refused('db', 'TM_ERR_ALREADY_EXISTS');
    await refused('bad/name', 'TM_ERR_INVALID_ARGUMENT');
    await refused('', 'TM_ERR_INVALID_ARGUMENT');

    // A name taken on the peer is refused there, before R1 keeps anything.
    await b.service.pairs.create({ volume: 'logs-r', name: 'far', peer: 'north', remoteVolume: 'db-far', mode: 'async', onLinkFailure: 'continue' });
    await assert.rejects(a.service.pairs.create({ volume: 'logs', name: 'far', peer: 'west', remoteVolume: 'logs-r', mode: 'sync', onLinkFailure: 'continue' }),
      (e) => isTidemarkError(e, 'TM_ERR_ALREADY_EXISTS') && /west already has a pair named far/.test(e.message));
    assert.ok(!a.service.pairs.list().some((p) => p.pair === 'far'));

    // With two pairs on a volume its name no longer stands for one of them.
    await b.service.pairs.delete('far');
    await a.service.pairs.create({ volume: 'db', name: 'db-north', peer: 'north', remoteVolume: 'db-far', mode: 'async', onLinkFailure: 'continue' });
    assert.deepEqual(a.service.pairs.list().map((p) => [p.pair, p.volume, p.peer, p.mode]), [['db', 'db', 'west', 'sync'], ['db-north', 'db', 'north', 'async']]);
    assert.throws(() => b.service.pairs.runtime('nope'), (e) => isTidemarkError(e, 'TM_ERR_NOT_FOUND'));
    await a.service.pairs.delete('db');
    // The volume's name stands for its one remaining pair again.
    assert.equal(a.service.pairs.status('db').pair, 'db-north');
  } finally {
    await closeAll(all);
  }
});

test('fan-out: one volume sync to west and async to north, each with its own mode, bits and counters; both converge; a fifth pair is refused', async () => {
  const { a, b, c } = await threeArrays({ east: ['db'], west: ['db-r', 'x1', 'x2'], north: ['db-far', 'x3'] });
  try {
    const db = a.service.volume('db');
    await db.write(0, randomBytes(MiB));
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await a.service.pairs.create({ volume: 'db', name: 'db-far', peer: 'north', remoteVolume: 'db-far', mode: 'async', onLinkFailure: 'continue', cycleMs: 100 });
    await until('both synchronized', () => state(a, 'db') === 'synchronized' && state(a, 'db-far') === 'synchronized');
    await until('cycles running', () => a.service.pairs.status('db-far').cycles !== null);
    for (let i = 0; i < 20; i++) await db.write((i % 7) * 256 * 1024 + 4096 * i, randomBytes(8192));
    // Sync: R2 has every write the host was told is done, at once.
    assert.equal(await image(b, 'db-r'), await image(a, 'db'));
    assert.equal(a.service.pairs.status('db').counters.writesForwarded, 20);
    assert.equal(a.service.pairs.status('db-far').counters.writesForwarded, 0, 'async pairs capture, they do not forward');
    await until('north converges', async () => (await image(c, 'db-far')) === (await image(a, 'db')));

    // Up to four R1 pairs per volume.
    await a.service.pairs.create({ volume: 'db', name: 'p3', peer: 'west', remoteVolume: 'x1', mode: 'adaptive', onLinkFailure: 'continue' });
    await a.service.pairs.create({ volume: 'db', name: 'p4', peer: 'north', remoteVolume: 'x3', mode: 'semisync', onLinkFailure: 'continue' });
    await assert.rejects(a.service.pairs.create({ volume: 'db', name: 'p5', peer: 'west', remoteVolume: 'x2', mode: 'sync', onLinkFailure: 'continue' }),
      (e) => isTidemarkError(e, 'TM_ERR_LIMIT_EXCEEDED'));
    assert.equal(b.service.volume('x2').state, 'ready', 'the refused pair left no R2 behind');
    assert.equal(a.service.pairs.list().length, 4);
    await db.write(5 * MiB, randomBytes(64 * 1024));
    await until('all four converge', async () => {
      const want = await image(a, 'db');
      return (await image(b, 'db-r')) === want && (await image(b, 'x1')) === want && (await image(c, 'db-far')) === want && (await image(c, 'x3')) === want;
    });

    // Suspending one pair leaves the others replicating; its bits are its own.
    await a.service.pairs.command('db', 'suspend');
    await db.write(6 * MiB, randomBytes(4096));
    assert.equal(a.service.pairs.status('db').tracksOwed, 1);
    await until('the others converge', async () => (await image(c, 'db-far')) === (await image(a, 'db')) && (await image(b, 'x1')) === (await image(a, 'db')));
    assert.notEqual(await image(b, 'db-r'), await image(a, 'db'));
    await a.service.pairs.command('db', 'resume');
    await until('resumed', () => state(a, 'db') === 'synchronized');
    assert.equal(await image(b, 'db-r'), await image(a, 'db'));

    // After a restart every pair comes back with its own name, mode and bitmaps.
    const dir = a.dir;
    await a.crash();
    const reopened = await startTestArray({ name: 'east', dir });
    try {
      assert.deepEqual(reopened.service.pairs.list().map((p) => [p.pair, p.mode, p.peer, p.remoteVolume]),
        [['db', 'sync', 'west', 'db-r'], ['db-far', 'async', 'north', 'db-far'], ['p3', 'adaptive', 'west', 'x1'], ['p4', 'semisync', 'north', 'x3']]);
    } finally {
      await reopened.close();
    }
  } finally {
    for (const x of [b, c]) await x.close();
  }
});

test('chain east → west (sync) → north (async): west forwards what it receives, north converges to east\'s image', async () => {
  const { a, b, c, all } = await threeArrays({ east: ['db'], west: ['mid'], north: ['far'] });
  try {
    // Built from the far end: west's volume is an R1 first, then becomes east's R2.
    await b.service.pairs.create({ volume: 'mid', peer: 'north', remoteVolume: 'far', mode: 'async', onLinkFailure: 'continue', cycleMs: 100 });
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'mid', mode: 'sync', onLinkFailure: 'continue' });
    assert.equal(b.service.volume('mid').state, 'write-disabled');
    const db = a.service.volume('db');
    await until('east→west synchronized', () => state(a, 'db') === 'synchronized');
    await until('west→north cycling', () => b.service.pairs.status('mid').cycles !== null);
    for (let i = 0; i < 40; i++) await db.write(((i * 37) % 120) * 64 * 1024, randomBytes(4096 * (1 + (i % 4))));
    await db.writeZeroes(0, 64 * 1024, false);
    assert.equal(await image(b, 'mid'), await image(a, 'db'));
    await until('north converges to east', async () => (await image(c, 'far')) === (await image(a, 'db')));

    // A second sync hop: east's acknowledged write is on north at once.
    await b.service.pairs.setMode('mid', 'sync');
    await until('west→north synchronized', () => state(b, 'mid') === 'synchronized');
    const before = b.service.pairs.status('mid').counters.writesForwarded;
    await db.write(3 * MiB, randomBytes(8192));
    assert.equal(await image(c, 'far'), await image(a, 'db'));
    assert.equal(b.service.pairs.status('mid').counters.writesForwarded, before + 1, 'the replica write was forwarded like a host write');

    // Failing over east→west: west's hosts write, and the chain carries it on to north.
    await a.service.pairs.command('db', 'failover');
    assert.equal(b.service.volume('mid').state, 'ready');
    await b.service.volume('mid').write(MiB, randomBytes(4096));
    assert.equal(await image(c, 'far'), await image(b, 'mid'));
    // Failing back: the tracks west changed return to east (and north already has them).
    await a.service.pairs.command('db', 'failback');
    await until('failed back', () => state(a, 'db') === 'synchronized');
    assert.equal(await image(a, 'db'), await image(b, 'mid'));
    assert.equal(await image(c, 'far'), await image(a, 'db'));
  } finally {
    await closeAll(all);
  }
});

test('refusals: a second source into one volume, loops, restore or swap of a pair whose volume is a replica of another', async () => {
  const { a, b, c, all } = await threeArrays({ east: ['db', 'other'], west: ['mid'], north: ['far'] });
  try {
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'mid', mode: 'sync', onLinkFailure: 'continue' });
    await b.service.pairs.create({ volume: 'mid', name: 'onward', peer: 'north', remoteVolume: 'far', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized' && state(b, 'onward') === 'synchronized');
    const code = (c: string) => (e: unknown): boolean => isTidemarkError(e) && e.code === c;

    // A volume receives from one pair only.
    await assert.rejects(c.service.pairs.create({ volume: 'far', name: 'second', peer: 'west', remoteVolume: 'mid', mode: 'sync', onLinkFailure: 'continue' }),
      code('TM_ERR_PAIR_CONFLICT'));
    await assert.rejects(a.service.pairs.create({ volume: 'other', peer: 'west', remoteVolume: 'mid', mode: 'sync', onLinkFailure: 'continue' }),
      code('TM_ERR_PAIR_CONFLICT'));
    // Replicating back into the volume it receives from would loop.
    await assert.rejects(b.service.pairs.create({ volume: 'mid', name: 'back', peer: 'east', remoteVolume: 'db', mode: 'sync', onLinkFailure: 'continue' }),
      code('TM_ERR_PAIR_CONFLICT'));
    assert.deepEqual(b.service.pairs.list().map((p) => p.pair).sort(), ['db', 'onward']);

    // West's volume must stay equal to east's: pulling north's image into it, or making it the
    // R2 of north too, is refused while east→west write-disables it.
    await b.service.pairs.command('onward', 'split');
    await assert.rejects(b.service.pairs.command('onward', 'restore'), code('TM_ERR_PAIR_CONFLICT'));
    await b.service.pairs.command('onward', 'establish');
    await until('re-established', () => state(b, 'onward') === 'synchronized');
    await assert.rejects(b.service.pairs.command('onward', 'swap'), code('TM_ERR_PAIR_CONFLICT'));
    assert.equal(b.service.pairs.status('onward').role, 'R1');
    assert.equal(b.service.volume('mid').state, 'write-disabled');
    // Once east→west is split, west's volume is its own again and the restore is allowed.
    await a.service.pairs.command('db', 'split');
    await b.service.pairs.command('onward', 'split');
    await c.service.volume('far').write(0, new Uint8Array(4096).fill(5));
    await b.service.pairs.command('onward', 'restore');
    await until('restored', () => state(b, 'onward') === 'synchronized');
    assert.equal((await b.service.volume('mid').internalRead(0, 1))[0], 5);

    // Deleting one pair of a volume leaves it as its other pairs want it.
    await a.service.pairs.command('db', 'establish');
    await until('east→west again', () => state(a, 'db') === 'synchronized');
    await b.service.pairs.delete('onward');
    assert.equal(b.service.volume('mid').state, 'write-disabled', 'still the R2 of east→west');
    assert.equal(c.service.volume('far').state, 'ready');
  } finally {
    await closeAll(all);
  }
});

test('restore into a fan-out volume: the tracks it pulls reach the volume\'s other pairs', async () => {
  const { a, b, c, all } = await threeArrays({ east: ['db'], west: ['db-r'], north: ['db-far'] });
  try {
    await a.service.volume('db').write(0, randomBytes(2 * MiB));
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await a.service.pairs.create({ volume: 'db', name: 'far', peer: 'north', remoteVolume: 'db-far', mode: 'adaptive', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized' && state(a, 'far') === 'synchronized');
    await a.service.pairs.command('db', 'failover');
    assert.equal(a.service.volume('db').state, 'write-disabled');
    assert.equal(state(a, 'far'), 'synchronized', 'the other pair keeps replicating');
    await b.service.volume('db-r').write(4 * MiB, randomBytes(128 * 1024));
    await a.service.pairs.command('db', 'failback');
    await until('failed back', () => state(a, 'db') === 'synchronized');
    assert.equal(a.service.volume('db').state, 'ready');
    assert.equal(await image(a, 'db'), await image(b, 'db-r'));
    await until('north gets the restored tracks', async () => state(a, 'far') === 'synchronized' && (await image(c, 'db-far')) === (await image(a, 'db')));
  } finally {
    await closeAll(all);
  }
});

test('a split clone target may be the R1 of a pair', async () => {
  const { a, b, all } = await threeArrays({ east: ['db', 'snap'], west: ['snap-r'], north: [] });
  try {
    await a.service.volume('db').write(0, randomBytes(MiB));
    await a.service.clones.establish('db', 'snap');
    await until('clone synchronized', () => a.service.clones.show('db', 'snap').state === 'synchronized');
    await assert.rejects(a.service.pairs.create({ volume: 'snap', peer: 'west', remoteVolume: 'snap-r', mode: 'sync', onLinkFailure: 'continue' }),
      (e) => isTidemarkError(e, 'TM_ERR_INVALID_STATE'), 'an attached clone is not ready: no pair');
    await a.service.clones.split('db', 'snap', false);
    await a.service.pairs.create({ volume: 'snap', peer: 'west', remoteVolume: 'snap-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'snap') === 'synchronized');
    await a.service.volume('snap').write(2 * MiB, randomBytes(4096));
    assert.equal(await image(b, 'snap-r'), await image(a, 'snap'));
  } finally {
    await closeAll(all);
  }
});

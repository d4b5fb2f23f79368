// Remote pairs between two arrays in one process over in-memory links: every pair command, link
// failure and recovery, checked by comparing the two volumes' bytes and the shipping counters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { inProcessLinks, type SimLinks } from '../../src/sim/sim-links.js';
import type { PairState } from '../../src/core/replication/pair-rules.js';
import { isTidemarkError } from '../../src/core/errors.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const SECRET = new Uint8Array(32).fill(7);

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function twoArrays(): Promise<{ hub: SimLinks; a: TestArray; b: TestArray }> {
  const hub = inProcessLinks();
  const a = await startTestArray({ name: 'east', links: hub.endpoint('east') });
  const b = await startTestArray({ name: 'west', links: hub.endpoint('west') });
  await a.service.addPeer('west', '127.0.0.1:1', SECRET);
  await b.service.addPeer('east', '127.0.0.1:1', SECRET);
  await a.service.createVolume('db', SIZE);
  await b.service.createVolume('db-r', SIZE);
  return { hub, a, b };
}

const state = (array: TestArray, pair: string): PairState => array.service.pairs.status(pair).state;
const image = (array: TestArray, volume: string): Promise<Uint8Array> => array.service.volume(volume).internalRead(0, SIZE);

async function sameImages(a: TestArray, b: TestArray): Promise<void> {
  assert.equal(sha(await image(a, 'db')), sha(await image(b, 'db-r')), 'R1 and R2 hold the same bytes');
}

test('sync pair: full establish, forwarded writes, R2 write-disabled, suspend/resume ships only changed records', async () => {
  const { a, b } = await twoArrays();
  try {
    const db = a.service.volume('db');
    await db.write(0, randomBytes(2 * MiB));
    await db.write(8 * MiB, randomBytes(64 * 1024));
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    await sameImages(a, b);
    const establish = a.service.pairs.status('db').counters;
    // Holes are never shipped: only the written 2 MiB + 64 KiB travel.
    assert.equal(establish.bytesShipped, 2 * MiB + 64 * 1024);

    await db.write(4 * MiB, randomBytes(4096));
    await db.writeZeroes(0, 8192, false);
    assert.equal(a.service.pairs.status('db').counters.writesForwarded, 2);
    await sameImages(a, b);
    await assert.rejects(b.service.volume('db-r').write(0, new Uint8Array(4096)), (e) => isTidemarkError(e) && /write-disabled/.test(e.message));

    await a.service.pairs.command('db', 'suspend');
    assert.equal(state(a, 'db'), 'suspended');
    for (let i = 0; i < 10; i++) await db.write(12 * MiB + 4096, randomBytes(4096)); // ten rewrites of one record
    await db.write(13 * MiB, randomBytes(3 * 4096));
    const before = a.service.pairs.status('db').counters;
    await a.service.pairs.command('db', 'resume');
    await until('resynchronized', () => state(a, 'db') === 'synchronized');
    const after = a.service.pairs.status('db').counters;

    assert.equal(after.recordsShipped - before.recordsShipped, 4, 'one record rewritten ten times ships once, plus three');
    assert.equal(after.bytesShipped - before.bytesShipped, 4 * 4096);
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('link failure: writes continue and are tracked; after the link returns only changed tracks resync', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    const db = a.service.volume('db');
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    hub.partition('east', 'west');
    await until('partitioned', () => state(a, 'db') === 'partitioned');
    const firstWriteAtMs = Date.now();
    await db.write(MiB, randomBytes(8192));
    await db.write(5 * MiB, randomBytes(100 * 1024));
    assert.ok(a.service.pairs.status('db').tracksOwed >= 3);
    await new Promise((r) => setTimeout(r, 200));
    // The lag is the age of the oldest owed change: the first write of the outage, not a later one.
    const lagSeconds = a.service.pairs.status('db').lagSeconds;
    const sinceFirstSeconds = (Date.now() - firstWriteAtMs) / 1000;
    assert.ok(lagSeconds >= 0.2 && lagSeconds <= sinceFirstSeconds, `lag ${lagSeconds} s within [0.2, ${sinceFirstSeconds}] s`);
    hub.heal('east', 'west');
    await until('resynchronized', () => state(a, 'db') === 'synchronized');
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('fail-writes policy: with the link down host writes fail and nothing is half-replicated', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'fail-writes' });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    hub.partition('east', 'west');
    await until('partitioned', () => state(a, 'db') === 'partitioned');
    await assert.rejects(a.service.volume('db').write(0, new Uint8Array(4096).fill(1)), (e) => isTidemarkError(e, 'TM_ERR_LINK_DOWN'));
    assert.equal((await image(a, 'db'))[0], 0, 'the refused write was not applied');
  } finally {
    await a.close();
    await b.close();
  }
});

test('failover, writes on R2, failback: R1 gets R2\'s writes and replication resumes R1 → R2', async () => {
  const { a, b } = await twoArrays();
  try {
    await a.service.volume('db').write(0, randomBytes(MiB));
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    await a.service.pairs.command('db', 'failover');
    assert.equal(a.service.volume('db').state, 'write-disabled');
    assert.equal(b.service.volume('db-r').state, 'ready');
    const written = randomBytes(64 * 1024);
    await b.service.volume('db-r').write(3 * MiB, written);
    assert.equal(b.service.pairs.status('db-r').invalidTracks.local, 1);
    await a.service.pairs.command('db', 'failback');
    await until('failback done', () => state(a, 'db') === 'synchronized');
    assert.equal(a.service.volume('db').state, 'ready');
    assert.equal(b.service.volume('db-r').state, 'write-disabled');
    assert.equal(sha((await image(a, 'db')).subarray(3 * MiB, 3 * MiB + written.length)), sha(written));
    assert.equal(a.service.pairs.status('db').counters.bytesPulled, written.length, 'only the changed track came back');
    await sameImages(a, b);
    await a.service.volume('db').write(0, new Uint8Array(4096).fill(9));
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('swap reverses the direction over the same link; R2-side failover with the link down is detected as divergence', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    await a.service.pairs.command('db', 'swap');
    assert.equal(b.service.pairs.status('db-r').role, 'R1');
    assert.equal(a.service.pairs.status('db').role, 'R2');
    await b.service.volume('db-r').write(MiB, randomBytes(4096));
    await sameImages(a, b);
    await assert.rejects(a.service.volume('db').write(0, new Uint8Array(4096)));
    await b.service.pairs.command('db-r', 'swap');
    assert.equal(a.service.pairs.status('db').role, 'R1');

    hub.partition('east', 'west');
    await until('partitioned', () => state(a, 'db') === 'partitioned');
    await b.service.pairs.command('db-r', 'failover'); // R2 alone, the disaster case
    await b.service.volume('db-r').write(2 * MiB, randomBytes(4096));
    await a.service.volume('db').write(6 * MiB, randomBytes(4096)); // R1 keeps taking writes
    hub.heal('east', 'west');
    await until('diverged', () => state(a, 'db') === 'diverged');
    await assert.rejects(a.service.pairs.command('db', 'failback'), (e) => isTidemarkError(e, 'TM_ERR_PAIR_DIVERGED'));
    await a.service.pairs.command('db', 'restore'); // the explicit choice: keep R2's data
    await until('restored', () => state(a, 'db') === 'synchronized');
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('--protect-with: nothing ships after the link returns until R1 has reconciled with R2 (the clone is split first)', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    await protectedSyncPair(a, b);
    const db = a.service.volume('db');
    await db.write(MiB, randomBytes(64 * 1024));
    const consistent = await image(b, 'db-r');
    hub.partition('east', 'west');
    await until('partitioned', () => state(a, 'db') === 'partitioned');
    await db.write(3 * MiB, randomBytes(128 * 1024)); // owed: a resync will follow
    const r1 = a.service.pairs.runtime('db');
    assert.equal(r1.lifecycle.needsReconcile, true, 'a link loss calls for a reconcile');
    hub.heal('east', 'west');
    // The link is up at once, before R1 has asked R2 anything: a push started now (as the
    // periodic kick could) reached R2 before its clone was split.
    assert.equal(r1.linkUp, true);
    r1.kickPush();
    await db.write(5 * MiB, randomBytes(4096)); // nor is a host write forwarded ahead of the reconcile
    await until('resynchronized', () => state(a, 'db') === 'synchronized');
    assert.equal(b.service.clones.show('db-r', 'db-r-safe').state, 'split');
    assert.equal(sha(await b.service.volume('db-r-safe').internalRead(0, SIZE)), sha(consistent),
      'the protection clone holds R2 as it was before the resync');
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

/** A sync pair db → db-r protected by the clone session db-r → db-r-safe on west, synchronized. */
async function protectedSyncPair(a: TestArray, b: TestArray): Promise<void> {
  await b.service.createVolume('db-r-safe', SIZE);
  await b.service.clones.establish('db-r', 'db-r-safe');
  await until('clone synchronized', () => b.service.clones.show('db-r', 'db-r-safe').state === 'synchronized');
  await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue', protectWith: 'db-r-safe' });
  await until('synchronized', () => state(a, 'db') === 'synchronized');
}

/** An outage during which 14 MiB is written, then a resync that has shipped something but not everything. */
async function resyncUnderWay(hub: SimLinks, a: TestArray): Promise<void> {
  hub.partition('east', 'west');
  await until('partitioned', () => state(a, 'db') === 'partitioned');
  for (let off = MiB; off < 15 * MiB; off += 256 * 1024) await a.service.volume('db').write(off, randomBytes(256 * 1024));
  const shippedBefore = a.service.pairs.status('db').counters.recordsShipped;
  hub.heal('east', 'west');
  await until('resync under way', () => a.service.pairs.status('db').counters.recordsShipped > shippedBefore, 20_000);
}

test('--protect-with: before each resync R2\'s clone is split, holding R2\'s last consistent image', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    await protectedSyncPair(a, b);
    const db = a.service.volume('db');
    const first = randomBytes(64 * 1024);
    await db.write(MiB, first);
    let consistent = await image(b, 'db-r'); // R2 as of before the outage

    for (const round of [1, 2]) {
      hub.partition('east', 'west');
      await until('partitioned', () => state(a, 'db') === 'partitioned');
      await db.write((2 + round) * MiB, randomBytes(128 * 1024)); // owed: R2 will be inconsistent while it resyncs
      hub.heal('east', 'west');
      await until(`resynchronized (round ${round})`, () => state(a, 'db') === 'synchronized');
      assert.equal(b.service.clones.show('db-r', 'db-r-safe').state, 'split');
      assert.equal(sha(await b.service.volume('db-r-safe').internalRead(0, SIZE)), sha(consistent),
        'the protection clone holds R2 as it was before this resync');
      await sameImages(a, b);
      consistent = await image(b, 'db-r');
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test('--protect-with: a resync interrupted by another outage does not refresh the clone from the half-resynced R2', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    await protectedSyncPair(a, b);
    const db = a.service.volume('db');
    await db.write(0, randomBytes(MiB));
    const consistent = await image(b, 'db-r');

    await resyncUnderWay(hub, a);
    // Cut again while it runs.
    hub.partition('east', 'west');
    assert.notEqual(state(a, 'db'), 'synchronized', 'the second outage came mid-resync');
    await until('partitioned again', () => state(a, 'db') === 'partitioned');
    hub.heal('east', 'west');
    await until('resynchronized', () => state(a, 'db') === 'synchronized');
    assert.equal(sha(await b.service.volume('db-r-safe').internalRead(0, SIZE)), sha(consistent),
      'the clone still holds R2 as it was before the first resync');
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('--protect-with: R1 restarting mid-resync does not refresh the clone from the half-resynced R2 either', async () => {
  const { hub, a, b } = await twoArrays();
  let r1 = a;
  try {
    await protectedSyncPair(a, b);
    await a.service.volume('db').write(0, randomBytes(MiB));
    const consistent = await image(b, 'db-r');

    await resyncUnderWay(hub, a);
    await a.crash(); // R1 dies mid-resync and forgets that R2's clone is held
    hub.drop('east');
    r1 = await startTestArray({ name: 'east', links: hub.endpoint('east'), dir: a.dir });
    await until('resynchronized after the restart', () => state(r1, 'db') === 'synchronized', 30_000);
    assert.equal(sha(await b.service.volume('db-r-safe').internalRead(0, SIZE)), sha(consistent),
      'the clone still holds R2 as it was before the first resync');
    await sameImages(r1, b);
  } finally {
    await r1.close();
    await b.close();
  }
});

test('--extents: only those ranges replicate; the rest of R2 stays writable by its hosts', async () => {
  const { a, b } = await twoArrays();
  try {
    const db = a.service.volume('db');
    const inside = randomBytes(64 * 1024);
    await db.write(4 * MiB, inside);
    await db.write(12 * MiB, randomBytes(64 * 1024)); // outside the extents: never shipped
    await assert.rejects(a.service.pairs.create({
      volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue', extents: [{ offset: 1000, length: MiB }],
    }), /track boundary/);
    await a.service.pairs.create({
      volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'sync', onLinkFailure: 'continue',
      extents: [{ offset: 0, length: 2 * MiB }, { offset: 4 * MiB, length: 4 * MiB }],
    });
    await until('synchronized', () => state(a, 'db') === 'synchronized');
    assert.equal(a.service.pairs.status('db').counters.bytesShipped, inside.length);
    const r2 = b.service.volume('db-r');
    assert.equal(r2.state, 'ready', 'R2 stays ready: only its replicated extents refuse writes');
    await assert.rejects(r2.write(5 * MiB, new Uint8Array(4096)), (e) => isTidemarkError(e, 'TM_ERR_VOLUME_WRITE_DISABLED'));
    const local = randomBytes(4096);
    await r2.write(10 * MiB, local); // R2's own hosts use the rest
    // A host write spanning the edge of an extent ships only its part inside.
    const spanning = randomBytes(128 * 1024);
    await db.write(8 * MiB - 64 * 1024, spanning);
    const r1Image = await image(a, 'db');
    const r2Image = await image(b, 'db-r');
    for (const [offset, length] of [[0, 2 * MiB], [4 * MiB, 4 * MiB]] as const) {
      assert.equal(sha(r2Image.subarray(offset, offset + length)), sha(r1Image.subarray(offset, offset + length)), `extent at ${offset} replicated`);
    }
    assert.equal(sha(r2Image.subarray(8 * MiB, 8 * MiB + 64 * 1024)), sha(new Uint8Array(64 * 1024)), 'the part outside stayed home');
    assert.equal(sha(r2Image.subarray(10 * MiB, 10 * MiB + 4096)), sha(local), "R2's own write outside the extents is kept");
    assert.equal(b.service.pairs.status('db-r').invalidTracks.local, 0, "R2's hosts writing outside the extents is not a divergence");
  } finally {
    await a.close();
    await b.close();
  }
});

test('async mode: ordered cycles start once synchronized; R2 follows at cycle boundaries, through a partition, and failover applies what R2 committed', async () => {
  const { hub, a, b } = await twoArrays();
  try {
    const db = a.service.volume('db');
    await db.write(0, randomBytes(MiB));
    await a.service.pairs.create({ volume: 'db', peer: 'west', remoteVolume: 'db-r', mode: 'async', onLinkFailure: 'continue', cycleMs: 100 });
    await until('cycles running', () => a.service.pairs.status('db').cycles !== null);
    await sameImages(a, b); // established by the bitmaps, then the cycles took over at a quiet moment

    const caughtUp = async (): Promise<void> => {
      const last = a.service.pairs.status('db').cycles!.captureCycle!;
      await until(`R2 applied cycle ${last}`, () => (a.service.pairs.status('db').cycles?.appliedCycle ?? 0) >= last &&
        (b.service.pairs.status('db-r').cycles?.appliedCycle ?? 0) >= last);
    };
    for (let i = 0; i < 40; i++) {
      await db.write(((i * 97) % 4000) * 4096, randomBytes(4096 * (1 + (i % 4))));
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 120));
    }
    await caughtUp();
    await sameImages(a, b);
    await until('no lag once R2 holds everything', () => a.service.pairs.status('db').lagSeconds === 0);
    // R2's recoverable point: on R2 now, on R1 as R2 last reported; never behind what R2 applied.
    const r2 = b.service.pairs.status('db-r').cycles!;
    assert.ok(r2.recoverableCycle! >= r2.appliedCycle, `R2 recoverable ${r2.recoverableCycle} ≥ applied ${r2.appliedCycle}`);
    const r1 = (await a.service.pairs.show('db')).cycles!;
    assert.ok(r1.recoverableCycle !== null && r1.recoverableCycle >= r1.remoteAppliedCycle!, 'R1 shows R2\'s recoverable point');
    assert.deepEqual([r1.captureBytes, r1.transmitBytes], [0, 0], 'no cycle bytes held once R2 applied every cycle');

    hub.partition('east', 'west');
    await until('partitioned', () => state(a, 'db') === 'partitioned');
    for (let i = 0; i < 20; i++) await db.write(8 * MiB + i * 8192, randomBytes(4096)); // captured meanwhile
    assert.notEqual(a.service.pairs.status('db').cycles, null, 'the cycles keep capturing while the link is down');
    const held = (await a.service.pairs.show('db')).cycles!;
    assert.ok(held.captureBytes + held.transmitBytes >= 20 * 4096, `the outage's writes are held in cycles: ${JSON.stringify(held)}`);
    assert.ok(a.service.pairs.status('db').lagSeconds > 0, 'the lag shows while R2 cannot get the cycles');
    hub.heal('east', 'west');
    await caughtUp();
    await sameImages(a, b);

    // Failover: R2 applies every committed cycle, then takes writes.
    await db.write(12 * MiB, randomBytes(64 * 1024));
    await caughtUp();
    await a.service.pairs.command('db', 'failover');
    await sameImages(a, b);
    await b.service.volume('db-r').write(MiB, randomBytes(4096));
    await a.service.pairs.command('db', 'failback');
    await until('failback done', () => state(a, 'db') === 'synchronized');
    await sameImages(a, b);

    // Modes switch while running: sync forwards at once; back to async, the cycles start again.
    await a.service.pairs.setMode('db', 'sync');
    assert.equal(a.service.pairs.status('db').cycles, null);
    await db.write(3 * MiB, randomBytes(8192));
    await sameImages(a, b);
    await a.service.pairs.setMode('db', 'async');
    await until('cycles running again', () => a.service.pairs.status('db').cycles !== null);
    await db.write(5 * MiB, randomBytes(8192));
    await caughtUp();
    await sameImages(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test('establishing a sparse volume takes its holes in runs: a few messages for a gigabyte, the same images', async () => {
  const hub = inProcessLinks();
  const a = await startTestArray({ name: 'east', links: hub.endpoint('east') });
  const b = await startTestArray({ name: 'west', links: hub.endpoint('west') });
  const GiB = 1024 * MiB;
  try {
    await a.service.addPeer('west', '127.0.0.1:1', SECRET);
    await b.service.addPeer('east', '127.0.0.1:1', SECRET);
    await a.service.createVolume('big', GiB);
    await b.service.createVolume('big-r', GiB);
    // Data in 16 places; R2 holds some of its own where R1 has a hole, and a copy of R1's data at one place.
    const big = a.service.volume('big');
    const written: Array<[number, Uint8Array]> = [];
    for (let i = 0; i < 16; i++) {
      const data = randomBytes(i % 2 === 0 ? 64 * 1024 : 3 * 4096);
      await big.write(i * 64 * MiB + i * 4096, data);
      written.push([i * 64 * MiB + i * 4096, data]);
    }
    await b.service.volume('big-r').write(200 * MiB, randomBytes(64 * 1024)); // stale data on R2 in a hole of R1
    await b.service.volume('big-r').write(written[3]![0], written[3]![1]);
    const before = hub.messagesDelivered;
    await a.service.pairs.create({ volume: 'big', peer: 'west', remoteVolume: 'big-r', mode: 'sync', onLinkFailure: 'continue' });
    await until('synchronized', () => state(a, 'big') === 'synchronized', 60_000);
    const messages = hub.messagesDelivered - before;
    // 16,384 tracks: batch by batch (16 tracks a round trip) that was over 2,000 messages.
    assert.ok(messages < 400, `${messages} messages to establish 1 GiB holding 16 writes`);
    const sha256 = async (array: TestArray, volume: string): Promise<string> => {
      const hash = createHash('sha256');
      for (let at = 0; at < GiB; at += 64 * MiB) hash.update(await array.service.volume(volume).internalRead(at, 64 * MiB));
      return hash.digest('hex');
    };
    assert.equal(await sha256(a, 'big'), await sha256(b, 'big-r'), 'R1 and R2 hold the same bytes, the stale data on R2 zeroed');
    const counters = a.service.pairs.status('big').counters;
    assert.ok(counters.bytesShipped <= 8 * 64 * 1024 + 8 * 3 * 4096 + 64 * 1024, `shipped ${counters.bytesShipped} bytes: the written ones, not the holes`);
  } finally {
    await a.close();
    await b.close();
  }
});

// Consistency groups between arrays in one process over in-memory links: membership, a member that
// cannot be reached, the coordinator vanishing mid-window, coordinator and member restarts, leaving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { inProcessLinks, type SimLinks } from '../../src/sim/sim-links.js';
import { isTidemarkError } from '../../src/core/errors.js';
import type { PairCreateOptions } from '../../src/app/replication/pair-manager.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const SECRET = new Uint8Array(32).fill(9);
/**
 * Member windows time out after this long. Above twice the coordinator's switch timeout (2.5 s),
 * as in production: with a shorter one, a loaded machine let members time out of windows the
 * coordinator was still legitimately holding open while it waited to evict a late member.
 */
const WINDOW_MS = 6000;
/** Short, so the unreachable-member test sees the stall report. */
const STALL_MS = 1500;

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface Site {
  hub: SimLinks;
  e1: TestArray;
  e2: TestArray;
  w: TestArray;
}

const start = (hub: SimLinks, name: string, dir?: string): Promise<TestArray> =>
  startTestArray({ name, links: hub.endpoint(name), groupWindowTimeoutMs: WINDOW_MS, groupStallAfterMs: STALL_MS, ...(dir ? { dir } : {}) });

const nameOf = (a: TestArray): string => a.service.deps.name;

/** Each two arrays become each other's peers. */
async function peers(...links: Array<[TestArray, TestArray]>): Promise<void> {
  for (const [a, b] of links) {
    await a.service.addPeer(nameOf(b), '127.0.0.1:1', SECRET);
    await b.service.addPeer(nameOf(a), '127.0.0.1:1', SECRET);
  }
}

/** VOLUME on r1 replicated in async mode (100 ms cycles) to VOLUME-r on r2, its cycles running. */
async function asyncPair(r1: TestArray, volume: string, r2: TestArray, options: Partial<PairCreateOptions> = {}): Promise<void> {
  await r1.service.createVolume(volume, SIZE);
  await r2.service.createVolume(`${volume}-r`, SIZE);
  await r1.service.pairs.create({
    volume, peer: nameOf(r2), remoteVolume: `${volume}-r`, mode: 'async', onLinkFailure: 'continue', cycleMs: 100, ...options,
  });
  await until(`async cycles of ${volume} run`, () => r1.service.pairs.status(volume).cycles !== null);
}

/** e1 and e2 each replicate one volume asynchronously to w; e1 coordinates group g with both. */
async function site(): Promise<Site> {
  const hub = inProcessLinks();
  const [e1, e2, w] = await Promise.all([start(hub, 'e1'), start(hub, 'e2'), start(hub, 'w')]);
  await peers([e1, w], [e2, w], [e1, e2]);
  await asyncPair(e1, 'db1', w);
  await asyncPair(e2, 'db2', w);
  await e1.service.groups.create('g', 100);
  await e1.service.groups.add('g', 'db1');
  await e2.service.groups.add('g', 'db2'); // on the member's array: found the coordinator among its peers
  return { hub, e1, e2, w };
}

async function closeAll(...arrays: TestArray[]): Promise<void> {
  for (const a of arrays) await a.close().catch(() => undefined);
}

const switches = async (s: Site): Promise<number> => (await s.e1.service.groups.show('g')).switches;

async function converged(s: Site): Promise<void> {
  await until('R2s equal their R1s', async () =>
    sha(await s.e1.service.volume('db1').internalRead(0, SIZE)) === sha(await s.w.service.volume('db1-r').internalRead(0, SIZE)) &&
    sha(await s.e2.service.volume('db2').internalRead(0, SIZE)) === sha(await s.w.service.volume('db2-r').internalRead(0, SIZE)));
}

test('group: members switch together with the coordinator\'s tags; tables on every R1 and R2; show from any member', async () => {
  const s = await site();
  try {
    const before = await switches(s);
    await until('switching', async () => (await switches(s)) >= before + 3);
    await s.e1.service.volume('db1').write(0, randomBytes(64 * 1024));
    await s.e2.service.volume('db2').write(MiB, randomBytes(64 * 1024));
    await converged(s);
    const view = await s.e2.service.groups.show('g');
    assert.equal(view.coordinator, 'e1');
    assert.deepEqual(view.members.map((m) => m.member).sort(), ['e1/db1', 'e2/db2']);
    // Both members capture under the same tag whenever no switch is under way.
    await until('same tags', async () => {
      const v = await s.e1.service.groups.show('g');
      const tags = v.members.map((m) => m.status?.captureTag);
      return v.phase === 'waiting' && tags[0] === v.tag && tags[1] === v.tag;
    });
    // The membership table is on every R1 and R2 half.
    for (const [array, pair] of [[s.e1, 'db1'], [s.e2, 'db2'], [s.w, 'db1-r'], [s.w, 'db2-r']] as const) {
      const id = array.service.pairs.status(pair).id;
      assert.equal(array.service.groups.member.tableOf(id)?.group, 'g', `${array.service.deps.name}/${pair} keeps the table`);
    }
    assert.equal(s.e2.service.pairs.status('db2').group, 'g', 'pair show names the group');
    await assert.rejects(s.e1.service.groups.add('g', 'db1'), (e) => isTidemarkError(e) && /already/.test(e.message));
    await assert.rejects(s.e1.service.groups.delete('g'), (e) => isTidemarkError(e) && /remove them first/.test(e.message));
    // A member stays an async R1 until it leaves the group.
    await assert.rejects(s.e2.service.pairs.setMode('db2', 'sync'), (e) => isTidemarkError(e) && /consistency group g/.test(e.message));
    await assert.rejects(s.e2.service.pairs.delete('db2'), (e) => isTidemarkError(e) && /consistency group g/.test(e.message));
    await assert.rejects(s.w.service.pairs.delete('db2-r'), (e) => isTidemarkError(e) && /consistency group g/.test(e.message));
    assert.equal(s.e2.service.pairs.status('db2').mode, 'async');
  } finally {
    await closeAll(s.e1, s.e2, s.w);
  }
});

test('group: an unreachable member holds every switch (lag grows, no drift); the group resumes when it returns', async () => {
  const s = await site();
  try {
    s.hub.partition('e1', 'e2');
    await new Promise((r) => setTimeout(r, 300));
    const stalled = await switches(s);
    await new Promise((r) => setTimeout(r, 600));
    assert.ok((await switches(s)) <= stalled + 1, 'no switches while a member cannot answer');
    const view = await s.e1.service.groups.show('g');
    assert.ok(view.waitingFor.includes('e2/db2') || view.evicted.length > 0, `waits for e2/db2: ${JSON.stringify(view.waitingFor)}`);
    // Past the stall bound the group says it is stalled, on whom, and since when.
    await until('reported stalled', async () => (await s.e1.service.groups.show('g')).stalled !== null);
    const stalledView = await s.e1.service.groups.show('g');
    assert.match(stalledView.stalled!.cause, /waiting for .*e2\/db2/, stalledView.stalled!.cause);
    assert.ok(stalledView.lastSwitchAgeSeconds >= STALL_MS / 1000, `last switch ${stalledView.lastSwitchAgeSeconds} s ago`);
    assert.equal(s.e1.service.groups.stats()[0]!.stalled, 1);
    s.hub.heal('e1', 'e2');
    const healed = await switches(s);
    await until('switching again', async () => (await switches(s)) >= healed + 3);
    assert.equal((await s.e1.service.groups.show('g')).stalled, null, 'a switch ends the stall');
  } finally {
    await closeAll(s.e1, s.e2, s.w);
  }
});

test('group: a member whose coordinator vanishes mid-window closes it; after a switch it suspends instead of drifting', async () => {
  const s = await site();
  try {
    await s.e1.crash(); // the coordinator (and member db1) is gone
    s.hub.drop('e1');
    const member = s.e2.service.groups.member;
    const db2 = s.e2.service.volume('db2');
    const tag = (await member.command('db2', { kind: 'query-ready', tag: 0 }, 'g', 'e1')).kind;
    assert.equal(tag, 'ready');

    // A window opened but no switch: closing it on the timeout is harmless; the pair stays in the group.
    await member.command('db2', { kind: 'open-window' }, 'g', 'e1');
    const held = db2.write(0, randomBytes(4096));
    await held; // the write waited for the window's timeout, then completed
    assert.equal(s.e2.service.pairs.status('db2').state, 'synchronized');
    assert.equal(member.tableOf(s.e2.service.pairs.status('db2').id)?.group, 'g');

    // A window in which the member switched: on the timeout it falls back and suspends.
    await until('ready', async () => {
      const a = await member.command('db2', { kind: 'query-ready', tag: 0 }, 'g', 'e1');
      return a.kind === 'ready' && a.ready;
    });
    const captureTag = member.memberStatus('db2').captureTag!;
    await member.command('db2', { kind: 'open-window' }, 'g', 'e1');
    const switched = await member.command('db2', { kind: 'switch', tag: captureTag + 1 }, 'g', 'e1');
    assert.equal(switched.kind, 'switched');
    const t0 = Date.now();
    await db2.write(4096, randomBytes(4096));
    assert.ok(Date.now() - t0 >= WINDOW_MS / 2, 'the write waited for the window');
    await until('suspended', () => s.e2.service.pairs.status('db2').state === 'suspended');
    const st = s.e2.service.pairs.status('db2');
    assert.match(st.lastError ?? '', /did not close the write window/);
    assert.equal(st.cycles, null, 'no cycles run: the writes are owed through the bitmaps');
    assert.ok(st.tracksOwed > 0);
    assert.equal(member.tableOf(st.id), undefined, 'the member left the group');

    // The coordinator comes back: it finds the member gone and goes on without it, rather than stall.
    const e1 = await start(s.hub, 'e1', s.e1.dir);
    try {
      await until('member dropped', async () => {
        const v = await e1.service.groups.show('g');
        return v.members.length === 1 && v.evicted.some((x) => x.member === 'e2/db2');
      });
      const n = (await e1.service.groups.show('g')).switches;
      await until('switching without it', async () => (await e1.service.groups.show('g')).switches >= n + 3, 30_000);
      assert.equal(s.e2.service.pairs.status('db2').state, 'suspended', 'it stays out until the operator resumes and adds it');
    } finally {
      await e1.close();
    }
  } finally {
    await closeAll(s.e2, s.w);
  }
});

test('group: the coordinator restarts and carries on with larger tags; a removed member switches on its own', async () => {
  const s = await site();
  let e1 = s.e1;
  try {
    await until('switching', async () => (await switches(s)) >= 3);
    const tagBefore = (await e1.service.groups.show('g')).tag;
    const dir = e1.dir;
    await e1.crash();
    s.hub.drop('e1');
    e1 = await start(s.hub, 'e1', dir);
    // After the restart R1 db1 resyncs and restarts its cycles with the group's tag; then switching resumes.
    await until('switching after restart', async () => (await e1.service.groups.show('g')).switches >= 3, 30_000);
    const after = await e1.service.groups.show('g');
    // Three switches: the first repeats the recorded tag (it may have reached only some members), then tags grow.
    assert.ok(after.tag >= tagBefore + 2, `tags keep growing across the restart (${tagBefore} → ${after.tag})`);
    await e1.service.volume('db1').write(2 * MiB, randomBytes(8192));
    await s.e2.service.volume('db2').write(3 * MiB, randomBytes(8192));
    await converged({ ...s, e1 });

    const view = await s.e2.service.groups.remove('g', 'db2');
    assert.deepEqual(view.members.map((m) => m.member), ['e1/db1']);
    assert.equal(s.e2.service.groups.member.tableOf(s.e2.service.pairs.status('db2').id), undefined);
    const cycle = s.e2.service.pairs.status('db2').cycles!.captureCycle!;
    await until('db2 switches on its own', () => s.e2.service.pairs.status('db2').cycles!.captureCycle! >= cycle + 3);
    await s.e2.service.volume('db2').write(4 * MiB, randomBytes(8192));
    await converged({ ...s, e1 });
  } finally {
    await closeAll(e1, s.e2, s.w);
  }
});

test('group: a member removed while its array was down finds out when it returns and replicates on its own', async () => {
  const s = await site();
  let e2 = s.e2;
  try {
    const dir = e2.dir;
    await e2.crash();
    s.hub.drop('e2');
    const view = await s.e1.service.groups.remove('g', 'db2', 'e2'); // on the coordinator; the member cannot answer
    assert.deepEqual(view.members.map((m) => m.member), ['e1/db1']);
    e2 = await start(s.hub, 'e2', dir);
    const id = e2.service.pairs.status('db2').id;
    assert.equal(e2.service.groups.member.tableOf(id)?.group, 'g', 'it still holds the table it had');
    await until('left the group', () => e2.service.groups.member.tableOf(id) === undefined, 15_000);
    await until('cycles run standalone', () => (e2.service.pairs.status('db2').cycles?.captureCycle ?? 0) > 3, 15_000);
    await e2.service.volume('db2').write(5 * MiB, randomBytes(8192));
    await converged({ ...s, e2 });
    assert.equal(s.w.service.groups.member.tableOf(id), undefined, 'R2 dropped the table too');
  } finally {
    await closeAll(s.e1, e2, s.w);
  }
});

test('group: losing the coordinator stops switching (writes go on); another array takes over; the old one, back, stands down', async () => {
  const hub = inProcessLinks();
  const [c, e1, e2, w] = await Promise.all([start(hub, 'c'), start(hub, 'e1'), start(hub, 'e2'), start(hub, 'w')]);
  let old: TestArray | undefined;
  try {
    await peers([e1, w], [e2, w], [e1, e2], [c, e1], [c, e2]);
    await asyncPair(e1, 'db1', w);
    await asyncPair(e2, 'db2', w);
    await c.service.groups.create('g', 100);
    await c.service.groups.add('g', 'db1', 'e1');
    await c.service.groups.add('g', 'db2', 'e2');
    await until('switching', async () => (await c.service.groups.show('g')).switches >= 3);

    await c.crash();
    hub.drop('c');
    await new Promise((r) => setTimeout(r, WINDOW_MS * 2)); // any window the crash left open has timed out
    const tags = (): Array<number | null> => [e1.service.groups.member.memberStatus('db1').captureTag, e2.service.groups.member.memberStatus('db2').captureTag];
    const frozen = tags();
    await e1.service.volume('db1').write(0, randomBytes(8192)); // writes still complete
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(tags(), frozen, 'no switches without a coordinator');
    await assert.rejects(e1.service.groups.show('g'), (e) => isTidemarkError(e)); // the coordinator cannot be asked

    const view = await e1.service.groups.takeOver('g', { force: false });
    assert.equal(view.coordinator, 'e1');
    await until('switching under e1', async () => (await e1.service.groups.show('g')).switches >= 3);
    const after = tags();
    assert.ok(after.every((t, i) => t !== null && t > frozen[i]!), `tags grow under the new coordinator: ${JSON.stringify(frozen)} → ${JSON.stringify(after)}`);
    assert.equal((await e2.service.groups.show('g')).coordinator, 'e1', 'members follow the new coordinator');

    old = await start(hub, 'c', c.dir);
    await until('the old coordinator stands down', () => !old!.service.groups.list().some((g) => g.name === 'g'), 15_000);
    const n = (await e1.service.groups.show('g')).switches;
    await until('still switching under e1', async () => (await e1.service.groups.show('g')).switches >= n + 3);
    await e2.service.volume('db2').write(MiB, randomBytes(8192));
    await until('R2s equal their R1s', async () =>
      sha(await e1.service.volume('db1').internalRead(0, SIZE)) === sha(await w.service.volume('db1-r').internalRead(0, SIZE)) &&
      sha(await e2.service.volume('db2').internalRead(0, SIZE)) === sha(await w.service.volume('db2-r').internalRead(0, SIZE)));
  } finally {
    await closeAll(...(old ? [old] : []), e1, e2, w);
  }
});

test('group: a member whose cycles fall back (R2 out of reach past its spill limit) suspends and leaves; the others go on', async () => {
  const hub = inProcessLinks();
  const [e1, e2, w1, w2] = await Promise.all([start(hub, 'e1'), start(hub, 'e2'), start(hub, 'w1'), start(hub, 'w2')]);
  try {
    await peers([e1, w1], [e2, w2], [e1, e2]);
    await asyncPair(e1, 'db1', w1);
    await asyncPair(e2, 'db2', w2, { cycleMemoryBytes: 64 * 1024, spillLimitBytes: 256 * 1024 });
    await e1.service.groups.create('g', 100);
    await e1.service.groups.add('g', 'db1');
    await e2.service.groups.add('g', 'db2');
    await until('switching', async () => (await e1.service.groups.show('g')).switches >= 3);
    const r2Before = await w2.service.volume('db2-r').internalRead(0, SIZE);

    hub.partition('e2', 'w2'); // db2's R2 out of reach: its cycles grow past memory and spill limit
    await until('partitioned', () => e2.service.pairs.status('db2').state === 'partitioned');
    for (let off = 0; off < 2 * MiB; off += 64 * 1024) await e2.service.volume('db2').write(off, randomBytes(64 * 1024));
    await until('db2 suspended', () => e2.service.pairs.status('db2').state === 'suspended');
    assert.match(e2.service.pairs.status('db2').lastError ?? '', /fell back to bitmaps .* left group g/);
    await until('the coordinator lets db2 go', async () => (await e1.service.groups.show('g')).members.length === 1);
    const n = (await e1.service.groups.show('g')).switches;
    await until('db1 switches on', async () => (await e1.service.groups.show('g')).switches >= n + 3);

    hub.heal('e2', 'w2');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(e2.service.pairs.status('db2').state, 'suspended', 'no resync by itself');
    assert.equal(sha(await w2.service.volume('db2-r').internalRead(0, SIZE)), sha(r2Before),
      'R2 kept the group boundary it had: nothing of the fallen-back cycles reached it');
  } finally {
    await closeAll(e1, e2, w1, w2);
  }
});

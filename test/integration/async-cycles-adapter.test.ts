// The async-cycle adapters (src/app/replication/async-cycles.ts) on real volumes over in-process
// links — not yet wired into pairs (`--mode async` comes with that). R1 captures writes into cycles;
// R2 persists, commits and applies them. Oracle: whenever R2 is between applies, its image is R1's
// image at the boundary after R2's applied cycle; a restarted R2 recovers from its metadata and
// carries on; in the end R2 equals R1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startTestArray, type TestArray } from '../helpers/in-process-array.js';
import { inProcessLinks } from '../../src/sim/sim-links.js';
import { PeerRpc } from '../../src/app/replication/peer-rpc.js';
import { R1Async, R2Async, cycleMessageFromWire, type R2AsyncHost } from '../../src/app/replication/async-cycles.js';
import { FileMetaStore } from '../../src/adapters/fs/file-meta-store.js';
import type { AppliedWrite } from '../../src/app/volume/volume.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Rig {
  readonly a: TestArray;
  readonly b: TestArray;
  readonly r1: R1Async;
  readonly r2Host: R2AsyncHost;
  r2: R2Async;
}

async function rig(): Promise<Rig> {
  const links = inProcessLinks();
  const a = await startTestArray({ name: 'east' });
  const b = await startTestArray({ name: 'west' });
  await a.service.createVolume('db', SIZE);
  await b.service.createVolume('db-r', SIZE);
  const la = links.endpoint('east');
  const lb = links.endpoint('west');
  la.addPeer({ name: 'west', address: '-', secret: new Uint8Array(16) });
  lb.addPeer({ name: 'east', address: '-', secret: new Uint8Array(16) });
  const rpcA = new PeerRpc(la, () => undefined);
  const rpcB = new PeerRpc(lb, () => undefined);
  await until('link up', () => la.isUp('west'));
  const r1 = new R1Async({
    volume: a.service.volume('db'), rpc: rpcA, peer: 'west', pairId: 'p', cycleMs: 100, nowMs: () => Date.now(),
    fellBack: () => { throw new Error('unexpected fall-back'); }, committed: () => undefined,
  }, 1);
  const r2Host: R2AsyncHost = {
    volume: b.service.volume('db-r'), meta: await FileMetaStore.open(join(b.dir, 'cycles')), rpc: rpcB, peer: 'east', pairId: 'p',
    ownPosition: 'none', onError: (e) => { throw e; },
  };
  const r: Rig = { a, b, r1, r2Host, r2: await R2Async.start(r2Host, 1) };
  rpcB.handle('pair.cycle', async (_peer, header, segments) => {
    r.r2.handle(cycleMessageFromWire(header.msg, segments));
    return { header: {}, segments: [] };
  });
  rpcA.handle('pair.cycle-r2', async (_peer, header, segments) => {
    r1.receive(cycleMessageFromWire(header.msg, segments));
    return { header: {}, segments: [] };
  });
  return r;
}

/** Stops R1's pump and R2's actions before the arrays (and the directories R2 writes into) go away. */
async function stop(r: Rig, timer: NodeJS.Timeout): Promise<void> {
  clearInterval(timer);
  await r.r2.halt();
  await r.a.close();
  await r.b.close();
}

/** Issues sequential writes through the capture path; returns [cycle, R1 image hash after it] per write. */
async function workload(r: Rig, writes: number, onEach?: (i: number, history: Array<[number, string]>) => Promise<void>):
  Promise<Array<[number, string]>> {
  const history: Array<[number, string]> = [];
  const volume = r.a.service.volume('db');
  for (let i = 0; i < writes; i++) {
    const offset = ((i * 37) % 2040) * 4096 + (i % 2) * 512;
    const data = new Uint8Array(randomBytes(4096 * (1 + (i % 3)) - (i % 2) * 512));
    const token: AppliedWrite = { kind: 'write', source: 'host', offset, length: data.length, data, fua: false, skipPosition: undefined, holds: undefined };
    const cycle = r.r1.begin(token, offset, data.length);
    await volume.write(offset, data);
    assert.equal(r.r1.capture(token, offset, data.length, data), true);
    r.r1.finish(token);
    history.push([cycle, sha(await volume.internalRead(0, SIZE))]);
    await onEach?.(i, history);
    await sleep(3);
  }
  return history;
}

/** R1's image at the boundary after `cycle`: after the last write of a cycle ≤ it. */
function boundaryImage(history: Array<[number, string]>, cycle: number): string {
  let image = sha(new Uint8Array(SIZE));
  for (const [c, hash] of history) if (c <= cycle) image = hash;
  return image;
}

/**
 * Compares R2 with R1's boundary image when R2 is between applies; returns the cycle compared, or
 * undefined if an apply ran. Receiving the next cycle does not touch the volume (it is applied
 * only once committed), so "between applies" is all the oracle needs — waiting for R2 to be wholly
 * idle found it so only before the first cycle, and compared nothing after it.
 */
async function checkAtBoundary(r: Rig, history: Array<[number, string]>): Promise<number | undefined> {
  const betweenApplies = (): boolean => r.r2.cycles.stats().applyingCycle === null;
  if (!betweenApplies()) return undefined;
  const applied = r.r2.appliedCycle;
  const image = sha(await r.b.service.volume('db-r').internalRead(0, SIZE));
  if (!betweenApplies() || r.r2.appliedCycle !== applied) return undefined; // an apply started meanwhile
  assert.equal(image, boundaryImage(history, applied), `R2 equals R1 at the boundary after cycle ${applied}`);
  return applied;
}

test('cycles carry R1 writes to R2, which is always R1 at a cycle boundary and ends equal to R1', async (t) => {
  const r = await rig();
  const timer = setInterval(() => r.r1.pump(), 10);
  try {
    const compared = new Set<number>();
    const history = await workload(r, 60, async (i, sofar) => {
      if (i % 4 !== 0) return;
      const cycle = await checkAtBoundary(r, sofar);
      if (cycle !== undefined) compared.add(cycle);
    });
    const lastCycle = history[history.length - 1]![0];
    await until('R2 applied the last written cycle', () => r.r2.appliedCycle >= lastCycle);
    t.diagnostic(`R2 compared with R1's boundary image after cycles ${[...compared].join(', ')}`);
    // Only a comparison counts, and one after cycle 0 (R2 still empty) is the one that tests the boundary.
    assert.ok([...compared].some((c) => c > 0), `R2 was compared at a boundary after a cycle with writes (compared: ${[...compared].join(',')})`);
    assert.ok(lastCycle >= 3, `the writes spanned several cycles (${lastCycle})`);
    assert.equal(sha(await r.b.service.volume('db-r').internalRead(0, SIZE)), history[history.length - 1]![1]);
  } finally {
    await stop(r, timer);
  }
});

test('R2 stops mid-stream and recovers from its metadata: no cycle is lost, R2 ends equal to R1', async () => {
  const r = await rig();
  const timer = setInterval(() => r.r1.pump(), 10);
  try {
    const history = await workload(r, 50, async (i) => {
      if (i !== 25) return;
      r.r2.stopped = true; // the process dies: actions in progress finish or not, nothing new starts
      await sleep(150);
      r.r2 = (await R2Async.recover(r.r2Host))!;
      assert.ok(r.r2, 'R2 had cycle state to recover');
    });
    const lastCycle = history[history.length - 1]![0];
    await until('R2 applied the last written cycle', () => r.r2.appliedCycle >= lastCycle);
    assert.equal(sha(await r.b.service.volume('db-r').internalRead(0, SIZE)), history[history.length - 1]![1]);
  } finally {
    await stop(r, timer);
  }
});

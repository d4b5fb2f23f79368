// How the volume carries out the write plan (src/core/volume/write-plan.ts): the orderings the
// planner cannot give on its own, because they come from the volume's write order — overlapping
// writes reach a mirror in order (a host write held in admission included), replica writes pass
// admission in arrival order, and every position learns of a write that reached the store even
// when another failed it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PairR1Position, PlanPosition, PlanStep } from '../../src/core/volume/write-plan.js';
import type { AppliedWrite, Volume } from '../../src/app/volume/volume.js';
import { startTestArray } from '../helpers/in-process-array.js';

const KiB = 1024;

const r1 = (id: string, over: Partial<PairR1Position> = {}): PairR1Position => ({
  kind: 'pair-r1', id, peer: 'west', outPosition: `pair:${id}:out`, mode: 'sync', replicating: true, failWrites: false,
  linkUp: true, canShip: true, capturing: false, scope: undefined, live: true, ...over,
});

/** A mirror position whose steps are recorded, and whose work finishes when the test says. */
function mirror(volume: Volume, positions: PlanPosition[]) {
  const log: string[] = [];
  const pending = new Map<string, () => void>();
  /** Steps to hold, by name: the next occurrence of each. */
  const holds = new Set<string>();
  const name = (step: PlanStep, write: AppliedWrite | undefined): string =>
    `${step.kind}${step.kind === 'apply-local' ? '' : `:${step.position}`}${write ? `@${write.offset / (4 * KiB)}` : ''}`;
  volume.participants.push({
    positions: (into) => { into.push(...positions); },
    execute: (step, _position, write) => {
      const what = name(step, write);
      log.push(what);
      if (step.kind === 'fail') return Promise.reject(step.error);
      if (!holds.delete(what)) return undefined;
      return new Promise<void>((resolve) => pending.set(what, () => { log.push(`done ${what}`); resolve(); }));
    },
  });
  return {
    log,
    /** The next step named so (e.g. 'ship:a@0') waits until released. */
    hold: (what: string) => holds.add(what),
    release: (what: string) => {
      const r = pending.get(what);
      assert.ok(r, `${what} is not waiting`);
      r();
    },
  };
}

const turn = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

/**
 * A volume with a capturing async pair whose admission step holds the next write to record 0; the
 * records each write reached the store at, in order.
 */
async function heldAdmission(array: Awaited<ReturnType<typeof startTestArray>>) {
  await array.service.createVolume('v', 1024 * KiB);
  const volume = array.service.volume('v');
  const m = mirror(volume, [r1('a', { mode: 'async', capturing: true })]);
  const applied: number[] = [];
  volume.observers.push({ applied: (w) => { applied.push(w.offset / (4 * KiB)); } });
  m.hold('wait-admission:a@0');
  return { volume, m, applied };
}

test('overlapping writes reach a sync mirror in order; others do not wait', async () => {
  const array = await startTestArray();
  try {
    await array.service.createVolume('v', 1024 * KiB);
    const volume = array.service.volume('v');
    const m = mirror(volume, [r1('a')]);
    m.hold('ship:a@0');
    const first = volume.write(0, new Uint8Array(8 * KiB).fill(1)); // records 0-1
    await turn();
    const second = volume.write(4 * KiB, new Uint8Array(4 * KiB).fill(2)); // overlaps record 1
    const apart = volume.write(64 * KiB, new Uint8Array(4 * KiB).fill(3)); // track 1: no overlap
    await apart;
    await turn();
    assert.deepEqual(m.log, ['ship:a@0', 'ship:a@16'], 'the overlapping write has not started shipping; the other one is done');
    m.release('ship:a@0');
    await first;
    await second;
    assert.deepEqual(m.log, ['ship:a@0', 'ship:a@16', 'done ship:a@0', 'ship:a@1']);
    assert.equal((await volume.internalRead(4 * KiB, 1))[0], 2, 'the store holds the later write');
  } finally {
    await array.close();
  }
});

test('replica writes pass admission one at a time, in arrival order', async () => {
  const array = await startTestArray();
  try {
    const { volume, m, applied } = await heldAdmission(array);
    const first = volume.internalWrite(0, new Uint8Array(4 * KiB).fill(1), { source: 'replica' });
    await turn();
    const second = volume.internalWrite(64 * KiB, new Uint8Array(4 * KiB).fill(2), { source: 'replica' });
    await turn();
    assert.deepEqual(applied, [], 'the second replica write waits behind the first, though they do not overlap');
    m.release('wait-admission:a@0');
    await Promise.all([first, second]);
    assert.deepEqual(applied, [0, 16]);
  } finally {
    await array.close();
  }
});

test('a host write waiting in admission is not overtaken by a later overlapping one; others pass it (pair seed 1220047752)', async () => {
  const array = await startTestArray();
  try {
    const { volume, m, applied } = await heldAdmission(array);
    const first = volume.write(0, new Uint8Array(8 * KiB).fill(1)); // records 0-1, held in admission
    await turn();
    const second = volume.write(4 * KiB, new Uint8Array(8 * KiB).fill(2)); // records 1-2: overlaps the first
    const third = volume.write(8 * KiB, new Uint8Array(4 * KiB).fill(3)); // record 2: overlaps only the second
    const apart = volume.write(64 * KiB, new Uint8Array(4 * KiB).fill(4)); // no overlap
    await apart;
    await turn();
    assert.deepEqual(applied, [16], 'each overlapping write waits for the one ahead of it; the other one is done');
    m.release('wait-admission:a@0');
    await Promise.all([first, second, third]);
    assert.deepEqual(applied, [16, 0, 1, 2], 'the overlapping writes applied in the order they were issued');
    assert.equal((await volume.internalRead(4 * KiB, 1))[0], 2, 'record 1 holds the second write');
    assert.equal((await volume.internalRead(8 * KiB, 1))[0], 3, 'record 2 holds the third write');
  } finally {
    await array.close();
  }
});

test('a write one pair fails still reaches the store and every other position (pair seed 53)', async () => {
  const array = await startTestArray();
  try {
    await array.service.createVolume('v', 1024 * KiB);
    const volume = array.service.volume('v');
    const m = mirror(volume, [r1('a', { canShip: false, failWrites: true }), r1('b', { mode: 'adaptive' })]);
    await assert.rejects(volume.write(0, new Uint8Array(4 * KiB).fill(9)), { code: 'TM_ERR_LINK_DOWN' });
    assert.deepEqual(m.log, ['owe:a@0', 'fail:a@0', 'owe:b@0']);
    assert.equal((await volume.internalRead(0, 1))[0], 9);
  } finally {
    await array.close();
  }
});

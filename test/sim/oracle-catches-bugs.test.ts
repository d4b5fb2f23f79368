// The oracle can fail: deliberately broken variants of the storage under the real Volume must be
// caught by some early seed, with the right complaint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BlockStore } from '../../src/ports/block-store.js';
import type { MetaStore, SlotJournal } from '../../src/ports/meta-store.js';
import { runVolumeSeed, type VolumePorts } from '../../src/sim/volume/volume-sim.js';
import { runCyclesSeed, type CyclesSimBugs } from '../../src/sim/cycles/cycles-sim.js';

/** A store that forwards everything except the overridden calls. */
function store(base: BlockStore, overrides: Partial<BlockStore>): BlockStore {
  return {
    get sizeBytes() { return base.sizeBytes; },
    get canPunchHoles() { return base.canPunchHoles; },
    readInto: (o, l, t, to) => base.readInto(o, l, t, to),
    write: (o, d) => base.write(o, d),
    writeZeroes: (o, l, a) => base.writeZeroes(o, l, a),
    trim: (o, l) => base.trim(o, l),
    flush: () => base.flush(),
    allocation: (o, l) => base.allocation(o, l),
    close: () => base.close(),
    ...overrides,
  };
}

async function firstCaught(name: string, wrap: (ports: VolumePorts) => VolumePorts, pattern: RegExp, seeds = 60): Promise<void> {
  for (let seed = 1; seed <= seeds; seed++) {
    const result = await runVolumeSeed(seed, { wrapPorts: wrap, maxEvents: 100_000 });
    if (!result.ok) {
      assert.match(result.failure!, pattern, `${name}: seed ${seed} failed for another reason`);
      return;
    }
  }
  assert.fail(`${name}: no seed in 1..${seeds} caught it`);
}

test('a disk whose flush (and so FUA) makes nothing durable is caught: acknowledged data lost at a crash', async () => {
  await firstCaught('lying flush', (p) => ({ ...p, store: store(p.store, { flush: async () => undefined }) }),
    /(after the crash|after a clean shutdown) unit \d+ .*holds/);
});

test('a disk that ignores trims is caught: a read returns data that should be gone', async () => {
  await firstCaught('ignored trim', (p) => ({ ...p, store: store(p.store, { trim: async () => undefined }) }),
    /read|holds/);
});

test('a metadata store that drops bitmap writes is caught: the recovered change tracker misses tracks', async () => {
  const dropBitmaps = (meta: MetaStore): MetaStore => ({
    read: (k) => meta.read(k),
    write: (k, d) => (k.startsWith('bitmaps/') ? Promise.resolve() : meta.write(k, d)),
    delete: (k) => meta.delete(k),
    list: (p) => meta.list(p),
  });
  await firstCaught('dropped bitmaps', (p) => ({ ...p, meta: dropBitmaps(p.meta) }), /change tracker misses/);
});

test('an activity log journal that acknowledges slots without writing them is caught', async () => {
  const forgetful = (journal: SlotJournal): SlotJournal => ({
    get slotCount() { return journal.slotCount; },
    get slotBytes() { return journal.slotBytes; },
    writeSlot: async () => undefined,
    writeSlots: async () => undefined,
    readAll: () => journal.readAll(),
    close: () => journal.close(),
  });
  await firstCaught('forgetful journal', (p) => ({ ...p, journal: forgetful(p.journal) }), /change tracker misses/);
});

// The cycles simulation: a broken member or coordinator rule is caught by a known seed (found by
// running seeds 1.. with the bug), and the same seed passes without it.
async function cyclesCaught(bugs: CyclesSimBugs, seed: number, pattern: RegExp): Promise<void> {
  const broken = await runCyclesSeed(seed, {}, { bugs });
  assert.ok(!broken.ok, `seed ${seed} no longer catches ${JSON.stringify(bugs)}; find another with runCyclesSeed`);
  assert.match(broken.failure!, pattern);
  const fixed = await runCyclesSeed(seed);
  assert.ok(fixed.ok, fixed.failure);
}

test('cycles: a member that closes its timed-out window after switching and keeps capturing is caught (dependent write in an older cycle)', async () => {
  await cyclesCaught({ keepCapturingAfterSwitch: true }, 410, /no prefix of the \d+ issued writes matches the R2 volumes of the group/);
});

test('cycles: a restarted coordinator that moves to a larger tag without redoing the interrupted switch is caught', async () => {
  await cyclesCaught({ restartWithLargerTag: true }, 748, /group recovery: member \w+ ends at tag \d+/);
});

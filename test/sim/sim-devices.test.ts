// The simulator's own parts: scheduler order, the disk's volatile cache and crash faults, atomic
// metadata records and tearable journal slots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeSlot, encodeSlot } from '../../src/core/bitmap/activity-log.js';
import { Prng } from '../../src/core/lib/prng.js';
import { Scheduler, SimClock } from '../../src/sim/scheduler.js';
import { SECTOR_BYTES, SimDisk } from '../../src/sim/sim-disk.js';
import { SimMetaStore, SimSlotJournal } from '../../src/sim/sim-meta-store.js';
import { fenced } from '../../src/sim/fenced-ports.js';

test('scheduler fires events by time, then in the order they were scheduled', async () => {
  const s = new Scheduler();
  const clock = new SimClock(s);
  const seen: string[] = [];
  s.at(5, () => seen.push('b@5'));
  s.at(1, () => seen.push('a@1'));
  s.at(5, () => seen.push('c@5'));
  const slept = clock.sleep(3).then(() => seen.push(`slept@${clock.nowMs()}`));
  await s.until(slept, 'sleep');
  await s.run();
  assert.deepEqual(seen, ['a@1', 'slept@3', 'b@5', 'c@5']);
  assert.equal(clock.nowMs(), 5);
  await assert.rejects(s.until(new Promise(() => undefined), 'a promise nobody resolves'), /never completed/);
});

async function diskAfterCrash(seed: number): Promise<Uint8Array> {
  const s = new Scheduler();
  const disk = new SimDisk(64 * 1024, s, new Prng(seed));
  await s.until(disk.write(0, new Uint8Array(4 * SECTOR_BYTES).fill(0x55)), 'old write');
  await s.until(disk.flush(), 'flush');
  await s.until(disk.write(0, new Uint8Array(4 * SECTOR_BYTES).fill(0xaa)), 'new write');
  const visible = new Uint8Array(4 * SECTOR_BYTES);
  await s.until(disk.readInto(0, visible.length, visible), 'read');
  assert.ok(visible.every((b) => b === 0xaa), 'a completed write is visible before any flush');
  disk.crash();
  const after = new Uint8Array(4 * SECTOR_BYTES);
  await s.until(disk.readInto(0, after.length, after), 'read after crash');
  return after;
}

test('SimDisk: an unflushed write is lost, kept or torn per 4 KiB sector at a crash, never mixed inside a sector', async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 40; seed++) {
    const after = await diskAfterCrash(seed);
    let pattern = '';
    for (let sector = 0; sector < 4; sector++) {
      const bytes = after.subarray(sector * SECTOR_BYTES, (sector + 1) * SECTOR_BYTES);
      const first = bytes[0]!;
      assert.ok(first === 0x55 || first === 0xaa, 'each sector holds the old or the new data');
      assert.ok(bytes.every((b) => b === first), 'a sector never tears inside');
      pattern += first === 0xaa ? 'N' : 'o';
    }
    outcomes.add(pattern);
  }
  assert.ok(outcomes.has('oooo') && outcomes.has('NNNN'), `lost and kept both happen: ${[...outcomes].join(' ')}`);
  assert.ok([...outcomes].some((p) => p.includes('N') && p.includes('o')), 'torn writes happen');
});

test('SimDisk: flush makes durable what completed before it was issued', async () => {
  for (let seed = 1; seed <= 20; seed++) {
    const s = new Scheduler();
    const disk = new SimDisk(16 * 1024, s, new Prng(seed));
    await s.until(disk.write(0, new Uint8Array(512).fill(1)), 'write');
    await s.until(disk.flush(), 'flush');
    await s.until(disk.trim(4096, 4096), 'trim');
    await s.until(disk.flush(), 'flush');
    disk.crash();
    assert.ok(disk.durableBytes(0, 512).every((b) => b === 1), `seed ${seed}: flushed data survives`);
  }
});

test('SimMetaStore: a record write in flight at a crash leaves the old record or the new one', async () => {
  const outcomes = new Set<number>();
  for (let seed = 1; seed <= 20; seed++) {
    const s = new Scheduler();
    const meta = new SimMetaStore(s, new Prng(seed));
    await s.until(meta.write('k', new Uint8Array(100).fill(1)), 'write');
    void meta.write('k', new Uint8Array(200).fill(2));
    meta.crash();
    const after = (await s.until(meta.read('k'), 'read'))!;
    assert.ok(after.every((b) => b === after[0]), 'never a mix');
    assert.equal(after.length, after[0] === 1 ? 100 : 200);
    outcomes.add(after[0]!);
  }
  assert.deepEqual([...outcomes].sort(), [1, 2]);
});

test('SimSlotJournal: a slot write in flight at a crash may tear, and the slot checksum catches it', async () => {
  let torn = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const s = new Scheduler();
    const journal = new SimSlotJournal(2, 4096, s, new Prng(seed));
    await s.until(journal.writeSlot(0, encodeSlot(1, 4, [1, 2, 3], 4096)), 'write');
    void journal.writeSlot(0, encodeSlot(3, 4, Array.from({ length: 900 }, (_, i) => i), 4096));
    torn += journal.crash().torn;
    const [slot] = await s.until(journal.readAll(), 'read');
    const decoded = decodeSlot(slot!);
    if (decoded) assert.ok(decoded.seq === 1 || decoded.seq === 3, 'a slot that decodes is a whole old or new slot');
  }
  assert.ok(torn > 0, 'some seed tears a slot');
});

test('fenced ports: after a crash the old incarnation\'s calls have no effect and never complete', async () => {
  const s = new Scheduler();
  const prng = new Prng(9);
  const disk = new SimDisk(16 * 1024, s, prng.fork());
  const meta = new SimMetaStore(s, prng.fork());
  const journal = new SimSlotJournal(2, 512, s, prng.fork());
  let alive = true;
  const ports = fenced({ store: disk, meta, journal }, () => alive);
  await s.until(ports.meta.write('k', new Uint8Array([1])), 'write while alive');
  alive = false;
  let settled = false;
  void ports.meta.write('k', new Uint8Array([2])).finally(() => { settled = true; });
  void ports.store.write(0, new Uint8Array(512).fill(7)).finally(() => { settled = true; });
  await s.run();
  assert.equal(settled, false);
  assert.deepEqual([...(await s.until(meta.read('k'), 'read'))!], [1]);
  assert.ok(disk.durableBytes(0, 512).every((b) => b === 0));
});

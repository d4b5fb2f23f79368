import { test } from 'node:test';
import assert from 'node:assert/strict';
import { R1Cycles, type R1CyclesConfig } from '../../src/core/replication/cycles/r1-cycles.js';
import type { CycleRecord, R1Message } from '../../src/core/replication/cycles/cycle-messages.js';
import { isTidemarkError, ErrorCode } from '../../src/core/errors.js';

const RB = 4096;
const config = (over: Partial<R1CyclesConfig> = {}): R1CyclesConfig => ({
  volumeBytes: 64 * RB, trackBytes: 4 * RB, cycleMs: 100, mode: 'standalone',
  memoryBudgetBytes: 1 << 20, captureLimitBytes: 4 << 20, maxBatchRecords: 4, maxInflightRecords: 16, ...over,
});
const bytes = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

function write(r1: R1Cycles, offset: number, data: Uint8Array): void {
  const t = r1.writeBegun();
  r1.write(t, offset, data.length, data);
  r1.writeDone(t);
}

const records = (msgs: R1Message[]): CycleRecord[] => msgs.flatMap((m) => (m.kind === 'records' ? [...m.records] : []));

/** Acknowledge everything sent, like a perfect R2. */
function ackAll(r1: R1Cycles, msgs: R1Message[]): void {
  for (const m of msgs) {
    if (m.kind === 'records') r1.receive({ kind: 'records-ack', cycle: m.cycle, records: m.records.map((r) => ({ record: r.record, version: r.version })) });
    if (m.kind === 'seal') r1.receive({ kind: 'seal-ack', cycle: m.cycle });
    if (m.kind === 'commit') r1.receive({ kind: 'commit-ack', cycle: m.cycle });
  }
}

test('within a cycle only the last bytes per record are kept; sub-record writes keep only their ranges', () => {
  const r1 = new R1Cycles(config(), { cycle: 1, nowMs: 0 });
  write(r1, 0, bytes(RB, 1));
  write(r1, 100, bytes(50, 2));          // overwrites 100..150 of record 0
  write(r1, RB + 10, bytes(20, 3));      // record 1: only 10..30
  write(r1, RB + 25, bytes(10, 4));      // record 1: 25..35 merges with 10..30
  assert.deepEqual(r1.stats().capture, { cycle: 1, tag: 1, records: 2, bytes: RB + 25, openWrites: 0 });
  r1.switchCycle(100);
  const { messages } = r1.nextToSend(100);
  const recs = records(messages);
  assert.equal(recs.length, 2);
  const [r0, r1rec] = recs;
  assert.equal(r0!.record, 0);
  assert.equal(r0!.version, 2);
  assert.deepEqual(r0!.ranges, [{ start: 0, end: RB }]);
  assert.equal(r0!.data[99], 1); assert.equal(r0!.data[100], 2); assert.equal(r0!.data[149], 2); assert.equal(r0!.data[150], 1);
  assert.deepEqual(r1rec!.ranges, [{ start: 10, end: 35 }]);
  assert.equal(r1rec!.data[24], 3); assert.equal(r1rec!.data[25], 4); assert.equal(r1rec!.data[34], 4);
});

test('a write in the next cycle never alters what the transmitting cycle sends', () => {
  const r1 = new R1Cycles(config(), { cycle: 1, nowMs: 0 });
  write(r1, 0, bytes(RB, 7));
  r1.switchCycle(100);
  write(r1, 0, bytes(RB, 8)); // cycle 2, same record
  const sent = records(r1.nextToSend(100).messages);
  assert.equal(sent.length, 1);
  assert.ok(sent[0]!.data.every((b) => b === 7));
  assert.equal(r1.stats().capture.records, 1);
});

test('a write begun before the switch lands in its own (now transmitting) cycle and holds up the seal', () => {
  const r1 = new R1Cycles(config(), { cycle: 1, nowMs: 0 });
  const slow = r1.writeBegun();
  r1.switchCycle(100); // no transmit cycle yet: nothing to wait for
  assert.equal(slow.cycle, 1);
  let out = r1.nextToSend(100);
  assert.deepEqual(out.messages, []); // cycle 1 has an open write: no seal yet
  r1.write(slow, 2 * RB, RB, bytes(RB, 5));
  out = r1.nextToSend(101);
  assert.equal(records(out.messages).length, 1);
  ackAll(r1, out.messages);
  assert.equal(r1.nextToSend(102).messages.length, 0, 'no seal while the write is open');
  assert.deepEqual(r1.switchBlockers(1000), ['writes-open', 'seal-unacked']);
  r1.writeDone(slow);
  const seal = r1.nextToSend(103).messages;
  assert.equal(seal.length, 1);
  assert.equal(seal[0]!.kind, 'seal');
  assert.deepEqual(r1.switchBlockers(1000), ['seal-unacked']);
  ackAll(r1, seal);
  assert.ok(r1.canSwitch(1000));
});

test('switch conditions: cycle time, transmit acknowledged and sealed, previous commit acknowledged', () => {
  const r1 = new R1Cycles(config(), { cycle: 5, nowMs: 0 });
  assert.deepEqual(r1.switchBlockers(50), ['cycle-time']);
  assert.throws(() => r1.switchCycle(50), (e) => isTidemarkError(e, ErrorCode.InvalidState));
  write(r1, 0, bytes(RB, 1));
  assert.deepEqual(r1.switchCycle(100), { committing: null, transmitCycle: 5, captureCycle: 6, captureTag: 6 });
  const first = r1.nextToSend(100).messages;
  assert.deepEqual(r1.switchBlockers(300), ['transmit-unacked', 'seal-unacked']);
  ackAll(r1, first);
  ackAll(r1, r1.nextToSend(101).messages); // seal
  assert.deepEqual(r1.switchBlockers(150), ['cycle-time']);
  const sw = r1.switchCycle(200);
  assert.deepEqual(sw.committing, { cycle: 5, tag: 5 });
  write(r1, RB, bytes(RB, 2)); // capture 7
  // commit(5) goes first; cycle 6 (empty) is not sent until the commit is acknowledged
  const c = r1.nextToSend(200).messages;
  assert.deepEqual(c, [{ kind: 'commit', cycle: 5, tag: 5 }]);
  assert.deepEqual(r1.nextToSend(201).messages, []);
  assert.ok(r1.switchBlockers(1000).includes('commit-unacked'));
  r1.retransmit(300, 50);
  assert.deepEqual(r1.nextToSend(300).messages, [{ kind: 'commit', cycle: 5, tag: 5 }]);
  r1.receive({ kind: 'commit-ack', cycle: 5 });
  const seal6 = r1.nextToSend(301).messages;
  assert.deepEqual(seal6, [{ kind: 'seal', cycle: 6, tag: 6, recordCount: 0, versionSum: 0 }]);
});

test('acks for an older version are ignored; a seal-nack resends everything; batches are bounded', () => {
  const r1 = new R1Cycles(config({ maxBatchRecords: 3, maxInflightRecords: 5 }), { cycle: 1, nowMs: 0 });
  const slow = r1.writeBegun();
  for (let i = 0; i < 8; i++) write(r1, i * RB, bytes(RB, i + 1));
  r1.switchCycle(100);
  const out = r1.nextToSend(100).messages;
  assert.deepEqual(out.map((m) => (m.kind === 'records' ? m.records.length : -1)), [3, 2]);
  r1.write(slow, 0, 10, bytes(10, 99)); // a late write of cycle 1 to record 0 (in flight at version 1)
  r1.writeDone(slow);
  ackAll(r1, out); // acks record 0 at version 1: stale
  assert.equal(r1.stats().transmit!.acked, 4);
  let rest = r1.nextToSend(101).messages;
  const recs = records(rest);
  assert.deepEqual(recs.map((r) => r.record).sort((a, b) => a - b), [0, 5, 6, 7]);
  assert.equal(recs.find((r) => r.record === 0)!.version, 2);
  ackAll(r1, rest);
  rest = r1.nextToSend(102).messages;
  assert.equal(rest[0]!.kind, 'seal');
  assert.equal(rest.length, 1);
  r1.receive({ kind: 'seal-nack', cycle: 1, recordCount: 0 });
  assert.equal(r1.stats().transmit!.acked, 0);
  assert.equal(records(r1.nextToSend(103).messages).length, 5);
});

test('spill: over budget, records leave memory and come back merged with later bytes before sending', () => {
  const r1 = new R1Cycles(config({ memoryBudgetBytes: 2 * RB }), { cycle: 1, nowMs: 0 });
  const slot = new Map<string, Uint8Array>();
  for (let i = 0; i < 4; i++) write(r1, i * RB, bytes(RB, 10 + i));
  assert.ok(r1.overBudget);
  for (const w of r1.takeSpill(3 * RB)) {
    const key = `${w.cycle}:${w.record}`;
    const s = slot.get(key) ?? new Uint8Array(RB);
    for (const r of w.ranges) s.set(w.data.subarray(r.start, r.end), r.start);
    slot.set(key, s);
  }
  assert.equal(r1.memoryBytes, RB);
  assert.equal(r1.stats().spilledRecords, 3);
  const late = r1.writeBegun();
  r1.switchCycle(100);
  r1.write(late, 8, 8, bytes(8, 77)); // lands on spilled record 0 of cycle 1, in memory
  r1.writeDone(late);
  let out = r1.nextToSend(100);
  assert.equal(out.spillReads.length, 3);
  assert.equal(records(out.messages).length, 1);
  const firstSent = out.messages;
  const stale = out.spillReads[0]!;
  for (const read of out.spillReads) r1.spillRestored(read, slot.get(`${read.cycle}:${read.record}`)!);
  r1.spillRestored(stale, new Uint8Array(RB)); // a duplicate completion is ignored
  out = r1.nextToSend(101);
  const recs = records(out.messages);
  assert.equal(recs.length, 3);
  const r0 = recs.find((r) => r.record === 0)!;
  assert.deepEqual(r0.ranges, [{ start: 0, end: RB }]);
  assert.equal(r0.data[7], 10); assert.equal(r0.data[8], 77); assert.equal(r0.data[15], 77); assert.equal(r0.data[16], 10);
  assert.ok(recs.find((r) => r.record === 2)!.data.every((b) => b === 12));
  ackAll(r1, firstSent);
  ackAll(r1, out.messages);
  ackAll(r1, r1.nextToSend(103).messages);
  r1.switchCycle(300);
  ackAll(r1, r1.nextToSend(300).messages); // commit(1) acknowledged: its spill can go
  assert.deepEqual(r1.takeReleasedSpill(), [1]);
});

test('spill: a spilled cycle is read back a window at a time (reads count against maxInflightRecords)', () => {
  const r1 = new R1Cycles(config({ memoryBudgetBytes: 2 * RB, maxInflightRecords: 4 }), { cycle: 1, nowMs: 0 });
  const slot = new Map<number, Uint8Array>();
  for (let i = 0; i < 12; i++) write(r1, i * RB, bytes(RB, 20 + i));
  for (const w of r1.takeSpill(12 * RB)) slot.set(w.record, w.data.slice());
  assert.equal(r1.stats().spilledRecords, 12);
  r1.switchCycle(100);
  let out = r1.nextToSend(100);
  assert.equal(out.spillReads.length, 4, 'no more reads than the in-flight window');
  assert.equal(r1.nextToSend(100).spillReads.length, 0, 'nothing more until those come back');
  const got = new Map<number, number>();
  let reads = out.spillReads;
  for (let round = 0; round < 10 && got.size < 12; round++) {
    for (const read of reads) r1.spillRestored(read, slot.get(read.record)!);
    out = r1.nextToSend(101 + round);
    assert.equal(records(out.messages).length, reads.length, 'what was read back goes out first');
    assert.ok(r1.stats().transmit!.inflight <= 4, 'restored records in flight stay within the window');
    for (const rec of records(out.messages)) got.set(rec.record, rec.data[0]!);
    ackAll(r1, out.messages);
    out = r1.nextToSend(101 + round);
    assert.equal(records(out.messages).length, 0);
    assert.ok(out.spillReads.length <= 4);
    reads = out.spillReads;
  }
  assert.equal(got.size, 12);
  assert.equal(r1.stats().spilledRecords, 0);
  for (const [rec, first] of got) assert.equal(first, 20 + rec);
});

test('fallBackToBitmaps returns every track any cycle held, and is sticky', () => {
  const r1 = new R1Cycles(config(), { cycle: 1, nowMs: 0 });
  write(r1, 0, bytes(10, 1));            // track 0
  write(r1, 5 * RB, bytes(RB, 1));       // track 1
  r1.switchCycle(100);
  write(r1, 13 * RB, bytes(2 * RB, 1));  // tracks 3 (records 13..14)
  write(r1, 16 * RB, bytes(1, 1));       // track 4
  const { tracks } = r1.fallBackToBitmaps();
  assert.deepEqual(tracks, [0, 1, 3, 4]);
  assert.deepEqual(r1.switchBlockers(1e9), ['fallen-back']);
  assert.throws(() => r1.writeBegun(), (e) => isTidemarkError(e, ErrorCode.InvalidState));
  assert.equal(r1.memoryBytes, 0);
});

test('group mode: the coordinator supplies growing tags and the timer is its business', () => {
  const r1 = new R1Cycles(config({ mode: 'group' }), { cycle: 1, tag: 40, nowMs: 0 });
  assert.ok(r1.isReady());
  assert.throws(() => r1.switchCycle(0), (e) => isTidemarkError(e, ErrorCode.InvalidArgument));
  assert.throws(() => r1.switchCycle(0, 40), (e) => isTidemarkError(e, ErrorCode.InvalidArgument));
  assert.equal(r1.switchCycle(0, 41).captureTag, 41);
  assert.ok(!r1.isReady()); // cycle 1 (tag 40) must be sealed first
  ackAll(r1, r1.nextToSend(0).messages);
  assert.ok(r1.isReady());
  assert.equal(r1.switchCycle(1, 42).committing!.tag, 40);
});

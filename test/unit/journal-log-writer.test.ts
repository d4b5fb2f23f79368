// The journal log's files (FileJournalLogStore under a temporary directory) through the writer:
// segments rotate at requests, whole segments go once every number in them is acknowledged, each
// requester's newest sequencer record outlives its segment, a reopened log holds what was kept (a
// torn tail is dropped), and the new process writes into a fresh segment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileJournalLogStore } from '../../src/adapters/fs/file-journal-log-store.js';
import { PrimaryLogWriter } from '../../src/app/journal/primary-log-writer.js';
import { replayPrimaryLog, type IssuedRecord } from '../../src/core/journal/primary-log.js';

const spec = (offset: number) => ({ pair: 'p', volume: 'v', offset, length: 1024, secondary: 's0' });

test('primary log: rotation, trimming below the floor, reopening (torn tail dropped) and a fresh segment per process', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tm-jlog-'));
  try {
    const store = await FileJournalLogStore.open(dir);
    const { writer, records } = await PrimaryLogWriter.open(store, 'j', 4096);
    assert.deepEqual(records, []);
    // 12 requests of one 1 KiB piece each, numbers 1..12: a segment holds about four.
    for (let i = 1; i <= 12; i++) {
      writer.append({ kind: 'request', incarnation: 1, requestId: i, pieces: [{ spec: spec(i * 1024), data: new Uint8Array(1024).fill(i) }] });
      writer.append({ kind: 'grant', incarnation: 1, requestId: i, first: i, timeMs: i });
    }
    const before = writer.size.segments;
    assert.ok(before >= 3, `${before} segments`);
    writer.maintain(7);
    await writer.settled();
    assert.ok(writer.size.segments < before, 'segments below the floor went');
    await writer.sync();
    // A torn record at the end (the process died mid-append) is dropped at the next open.
    const files = (await readdir(join(dir, 'j'))).map(Number).sort((a, b) => a - b);
    await appendFile(join(dir, 'j', String(files[files.length - 1])), Buffer.from([0x54, 0x4d, 0x4a, 0x4c, 0, 0, 9, 9]));
    await store.close();

    const store2 = await FileJournalLogStore.open(dir);
    const reopened = await PrimaryLogWriter.open(store2, 'j', 4096);
    const replay = replayPrimaryLog(reopened.records);
    const numbers = replay.entries.map((e) => e.token.sequence);
    assert.ok(numbers.includes(7) && numbers.includes(12), `kept ${numbers.join(',')}`);
    assert.ok(!numbers.includes(1), 'the first segment went');
    assert.equal(replay.entries.find((e) => e.token.sequence === 12)!.data![0], 12);
    assert.equal(replay.pending, undefined);
    // The old files are gone; the new process wrote the records it kept into fresh segments.
    const after = (await readdir(join(dir, 'j'))).map(Number);
    assert.ok(after.length >= 1 && after.every((n) => n > files[files.length - 1]!), `${files.join(',')} then ${after.join(',')}`);
    await store2.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('sequencer log: a requester\'s newest grant outlives the segment it was in, so a repeated request still gets it after a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tm-jlog-'));
  try {
    const store = await FileJournalLogStore.open(dir);
    const { writer } = await PrimaryLogWriter.open(store, 'j@sequencer', 1024);
    const issued = (from: string, requestId: number, first: number): IssuedRecord => ({
      kind: 'issued', from, incarnation: 1, requestId, first, timeMs: first, specs: Array.from({ length: 4 }, (_, i) => spec(i * 1024)),
    });
    writer.append(issued('quiet', 1, 1));
    for (let i = 1; i <= 20; i++) writer.append(issued('busy', i, 1 + 4 * i));
    writer.maintain(1 + 4 * 20);
    await writer.settled();
    await store.close();
    const store2 = await FileJournalLogStore.open(dir);
    const { records } = await PrimaryLogWriter.open(store2, 'j@sequencer', 1024);
    const quiet = records.filter((r) => r.kind === 'issued' && r.from === 'quiet');
    assert.equal(quiet.length, 1, 'the quiet requester\'s only grant is still there');
    assert.ok(records.some((r) => r.kind === 'issued' && r.from === 'busy' && r.requestId === 20), 'and the busy one\'s newest');
    assert.ok(!records.some((r) => r.kind === 'issued' && r.from === 'busy' && r.requestId === 1), 'old grants went');
    await store2.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a clean stop marks the log whole; a log that ends otherwise (killed, or appended to after) is not', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tm-jlog-'));
  try {
    const store = await FileJournalLogStore.open(dir);
    const issued: IssuedRecord = { kind: 'issued', from: 'p', incarnation: 1, requestId: 1, first: 1, timeMs: 1, specs: [spec(0)] };
    const first = await PrimaryLogWriter.open(store, 'j@sequencer');
    first.writer.append(issued);
    first.writer.closeCleanly();
    const second = await PrimaryLogWriter.open(store, 'j@sequencer');
    assert.equal(second.closedCleanly, true);
    assert.deepEqual(second.records, [issued], 'the marker is not copied');
    second.writer.append({ ...issued, requestId: 2, first: 2 });
    const third = await PrimaryLogWriter.open(store, 'j@sequencer');
    assert.equal(third.closedCleanly, false, 'killed without a clean stop');
    assert.equal(third.records.length, 2);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

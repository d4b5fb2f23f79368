// Journal replication between real array daemons (separate processes, authenticated TCP links):
// qemu-io as the hosts issuing dependent writes (each after the previous one was acknowledged,
// alternating between primary arrays), `--tokens sync`, every primary array SIGKILLed mid-load,
// then `tidemark journal recover` on a secondary array. The secondary images must be exactly the
// first K writes (K: the reported consistent sequence), and the report must list every
// acknowledged write after K — and nothing that is not a write after K.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DaemonFixture, imageOf, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { QemuIoSession } from '../helpers/nbd-qemu-io-session.js';
import { missingTools, requirement } from '../helpers/requirement.js';
import { Prng } from '../../src/core/lib/prng.js';

const skip = requirement(missingTools(['qemu-io', 'nbdcopy']));
const MiB = 1024 * 1024;
const VOLUME_BYTES = 8 * MiB;
/** Writes land in the first 256 KiB, so they overlap often (a replay in the wrong order shows). */
const SPAN_BLOCKS = 64;
const BLOCK = 4096;

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);

interface Write { readonly index: number; readonly volume: string; readonly offset: number; readonly pattern: number; acked: boolean }
interface Entry { volume: string; offset: number; length: number; sequence: number }
interface Report {
  consistentSequence: number; consistentTime: number | null; lost: Entry[]; stranded: Entry[]; unacknowledged: Entry[]; carriedOut: boolean;
}

interface Scenario {
  readonly primaries: 1 | 2;
  readonly secondaries: 1 | 2;
  /** SIGKILL every primary after this many acknowledged writes (with the next write in flight). */
  readonly killAfter: number;
  readonly seed: number;
  /** The primaries' --interval-ms (default 250). */
  readonly intervalMs?: number;
}

async function runScenario(s: Scenario): Promise<{ report: Report; acked: number; issued: number }> {
  const fixture = await DaemonFixture.create();
  try {
    const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
    const primaryNames = s.primaries === 2 ? ['p0', 'p1'] : ['p0'];
    const secondaryNames = s.secondaries === 2 ? ['s0', 's1'] : ['s0'];
    const arrays = new Map<string, DaemonProcess>();
    for (const n of [...primaryNames, ...secondaryNames]) arrays.set(n, await start(n));
    const a = (n: string): DaemonProcess => arrays.get(n)!;
    // Every primary talks to the sequencer (p0) and to its secondary; the sequencer and the
    // secondaries talk to each other (token fan-out, watermarks, recovery).
    const links = new Set<string>();
    const link = async (x: string, y: string): Promise<void> => {
      const key = [x, y].sort().join('|');
      if (x === y || links.has(key)) return;
      links.add(key);
      await peerUp(fixture, a(x), x, a(y), y);
    };
    for (const p of primaryNames) await link(p, 'p0');
    for (const [i, p] of primaryNames.entries()) await link(p, secondaryNames[i % secondaryNames.length]!);
    for (const x of secondaryNames) { await link('p0', x); for (const y of secondaryNames) await link(x, y); }

    // One volume per primary, each journaled to "its" secondary (volume v1 to s1 when there are two).
    const volumes = primaryNames.map((p, i) => ({ array: p, volume: `v${i}`, secondary: secondaryNames[i % secondaryNames.length]!, remote: `v${i}-r` }));
    for (const v of volumes) {
      await cli(a(v.array), 'volume', 'create', v.volume, '--size', String(VOLUME_BYTES));
      await cli(a(v.secondary), 'volume', 'create', v.remote, '--size', String(VOLUME_BYTES));
    }
    for (const p of primaryNames) {
      await cli(a(p), 'journal', 'create', 'j', '--tokens', 'sync', '--interval-ms', String(s.intervalMs ?? 250), '--batch-bytes', '64KiB',
        ...(p === 'p0' ? [] : ['--sequencer', 'p0']));
    }
    for (const v of volumes) await cli(a(v.array), 'pair', 'create', v.volume, '--peer', v.secondary, '--remote-volume', v.remote, '--mode', 'journal', '--journal', 'j');
    const shown = JSON.parse(await cli(a('p0'), 'journal', 'show', 'j')) as { roles: string[]; members: string[] };
    assert.ok(shown.roles.includes('sequencer') && shown.roles.includes('primary'));
    const scrape = async (x: string): Promise<string> => (await fetch(`${a(x).apiUrl}/metrics`)).text();
    assert.match(await scrape('p0'), /tidemark_journal_sequence\{journal="j",stage="issued"\} 0/);
    assert.match(await scrape(secondaryNames[0]!), /tidemark_journal_sequence\{journal="j",stage="applied"\} 0/);

    const sessions = new Map(volumes.map((v) => [v.volume, QemuIoSession.open(a(v.array).uri(v.volume))]));
    const prng = new Prng(s.seed);
    const writes: Write[] = [];
    let acked = 0;
    // Dependent writes: each issued after the previous one was acknowledged, alternating volumes
    // (and so primary arrays), so the global sequence is the issue order.
    for (let i = 1; ; i++) {
      const v = volumes[(i - 1) % volumes.length]!;
      const w: Write = { index: i, volume: v.volume, offset: prng.int(0, SPAN_BLOCKS - 1) * BLOCK, pattern: (i % 250) + 1, acked: false };
      writes.push(w);
      const done = sessions.get(v.volume)!.run(`write -P ${w.pattern} ${w.offset} ${BLOCK}`, /wrote|error|failed/i, 30_000);
      if (acked === s.killAfter) {
        // Mid-load: this write is in flight while every primary array dies.
        await Promise.all(primaryNames.map((p) => a(p).stop('SIGKILL')));
        await done.catch(() => undefined);
        break;
      }
      const out = await done;
      assert.match(out, /wrote/, `write ${i}: ${out}`);
      w.acked = true;
      acked++;
    }
    for (const session of sessions.values()) await session.close().catch(() => undefined);

    // Recovery on a secondary array (it gathers every secondary's queue).
    await waitFor('secondaries settled', async () => true);
    const dry = JSON.parse(await cli(a(secondaryNames[0]!), 'journal', 'recover', 'j', '--dry-run')) as Report;
    const report = JSON.parse(await cli(a(secondaryNames[0]!), 'journal', 'recover', 'j')) as Report;
    assert.equal(report.carriedOut, true);
    assert.ok(report.consistentSequence >= dry.consistentSequence, 'queues only grow between the dry run and the recovery');
    const K = report.consistentSequence;
    assert.ok(K <= writes.length, `point ${K} beyond the ${writes.length} writes issued`);

    // The images are exactly the first K writes, replayed in order.
    for (const v of volumes) {
      const expected = Buffer.alloc(VOLUME_BYTES);
      for (const w of writes) if (w.index <= K && w.volume === v.volume) expected.fill(w.pattern, w.offset, w.offset + BLOCK);
      const got = await imageOf(fixture, a(v.secondary), v.remote);
      assert.ok(got.equals(expected), `${v.secondary}/${v.remote} is not the first ${K} writes (first difference at byte ${firstDifference(got, expected)})`);
    }
    // The report: every acknowledged write after K is lost or stranded; every entry is a write after K.
    const reported = new Map<number, Entry>();
    for (const e of [...report.lost, ...report.stranded]) reported.set(e.sequence, e);
    for (const w of writes) {
      if (w.acked && w.index > K) assert.ok(reported.has(w.index), `acknowledged write ${w.index} is after ${K} but not in the report`);
    }
    for (const e of [...report.lost, ...report.stranded, ...report.unacknowledged]) {
      const w = writes[e.sequence - 1];
      assert.ok(w && e.sequence > K, `reported sequence ${e.sequence} is not a write after ${K}`);
      assert.deepEqual([e.volume, e.offset, e.length], [w.volume, w.offset, BLOCK], `entry ${e.sequence}`);
    }
    for (const e of report.unacknowledged) assert.ok(!writes[e.sequence - 1]!.acked, `acknowledged write ${e.sequence} reported unacknowledged`);
    // Only the write in flight at the kill may be in the report without having been acknowledged.
    const unackedInReport = [...reported.keys()].filter((q) => !writes[q - 1]!.acked);
    assert.ok(unackedInReport.every((q) => q === writes.length), `reported but not acknowledged: ${unackedInReport.join(',')}`);
    // Recovered secondary volumes are the hosts' now.
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 4k', a(volumes[0]!.secondary).uri(volumes[0]!.remote)]);
    return { report, acked, issued: writes.length };
  } finally {
    await fixture.cleanup();
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const summary = (r: { report: Report; acked: number; issued: number }): string =>
  `${r.issued} issued, ${r.acked} acknowledged; recovered to ${r.report.consistentSequence}: lost ${r.report.lost.length}, ` +
  `stranded ${r.report.stranded.length}, unacknowledged ${r.report.unacknowledged.length}`;

test('journal, one primary and one secondary array, tokens sync: the primary SIGKILLed mid-load; recovery leaves the first K writes and reports every acknowledged write after K', { skip }, async (t) => {
  // Messages leave only when 64 KiB of entries are batched (the interval is an hour), so the kill
  // after 61 writes (a prime: no whole number of messages) always leaves acknowledged writes unshipped,
  // however slowly the machine runs the writes.
  const r = await runScenario({ primaries: 1, secondaries: 1, killAfter: 61, seed: 1, intervalMs: 3_600_000 });
  t.diagnostic(summary(r));
  assert.ok(r.report.consistentSequence > 0, 'some writes reached the secondary');
  assert.ok(r.report.lost.length + r.report.stranded.length > 0, `the secondary lagged: something acknowledged was lost (${JSON.stringify(r.report)})`);
});

for (const [killAfter, seed] of [[7, 2], [45, 3], [120, 4]] as const) {
  test(`journal, dependent writes alternating between two primary arrays journaled to two secondary arrays, tokens sync: both primaries SIGKILLed after ${killAfter} acknowledged writes`, { skip }, async (t) => {
    const r = await runScenario({ primaries: 2, secondaries: 2, killAfter, seed });
    t.diagnostic(summary(r));
    assert.equal(r.acked, killAfter);
  });
}

test('journal, tokens ahead: the secondary array SIGKILLed mid-load and restarted resumes its queue without gaps or duplicates; the image converges to the primary\'s', { skip }, async (t) => {
  const fixture = await DaemonFixture.create();
  try {
    const p0 = await fixture.start(join(fixture.dir, 'p0'), ['--name', 'p0', '--link', '127.0.0.1:0']);
    const s0Dir = join(fixture.dir, 's0');
    let s0 = await fixture.start(s0Dir, ['--name', 's0', '--link', '127.0.0.1:0']);
    const s0Link = s0.linkAddress!;
    await peerUp(fixture, p0, 'p0', s0, 's0');
    await cli(p0, 'volume', 'create', 'v', '--size', String(VOLUME_BYTES));
    await cli(s0, 'volume', 'create', 'v-r', '--size', String(VOLUME_BYTES));
    await cli(p0, 'journal', 'create', 'j', '--interval-ms', '20');
    await cli(p0, 'pair', 'create', 'v', '--peer', 's0', '--remote-volume', 'v-r', '--mode', 'journal', '--journal', 'j');
    const session = QemuIoSession.open(p0.uri('v'));
    const prng = new Prng(9);
    for (let i = 1; i <= 80; i++) {
      if (i === 30) await s0.stop('SIGKILL');
      if (i === 55) s0 = await fixture.start(s0Dir, ['--name', 's0', '--link', s0Link]);
      assert.match(await session.run(`write -P ${i} ${prng.int(0, SPAN_BLOCKS - 1) * BLOCK} ${BLOCK}`, /wrote|error/i, 30_000), /wrote/);
    }
    await session.close();
    const issued = (JSON.parse(await cli(p0, 'journal', 'show', 'j')) as { sequence: { issued: number } }).sequence.issued;
    assert.equal(issued, 80);
    await waitFor('the secondary applied every write', async () =>
      (JSON.parse(await cli(s0, 'journal', 'show', 'j')) as { sequence: { applied: number } }).sequence.applied === issued, 60_000);
    assert.ok((await imageOf(fixture, s0, 'v-r')).equals(await imageOf(fixture, p0, 'v')), 'the secondary image equals the primary\'s');
    const shown = JSON.parse(await cli(s0, 'journal', 'show', 'j')) as { lag: { entries: number } };
    assert.equal(shown.lag.entries, 0);
    t.diagnostic(`80 writes, secondary killed after 29 and back after 54: applied ${issued}`);
  } finally {
    await fixture.cleanup();
  }
});

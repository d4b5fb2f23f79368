// A journal's sequencer array SIGKILLed mid-load and restarted (real daemons, qemu-io as the host):
// its log of grants lets it go on numbering right after the last number it handed out (nothing
// skipped, nothing reused), answer a repeated request with the same grant, and fan out again the
// tokens its secondaries may lack. Two secondaries (each needs the other's tokens from the
// sequencer to agree on a point) both end equal to the primary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DaemonFixture, imageOf, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun } from '../helpers/in-process-array.js';
import { QemuIoSession } from '../helpers/nbd-qemu-io-session.js';
import { missingTools, requirement } from '../helpers/requirement.js';
import { Prng } from '../../src/core/lib/prng.js';

const skip = requirement(missingTools(['qemu-io', 'nbdcopy']));
const VOLUME_BYTES = 8 * 1024 * 1024;
const SPAN_BLOCKS = 64;
const BLOCK = 4096;

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);

const sequence = async (array: DaemonProcess): Promise<{ issued: number | null; applied: number | null }> =>
  (JSON.parse(await cli(array, 'journal', 'show', 'j')) as { sequence: { issued: number | null; applied: number | null } }).sequence;

test('journal: the sequencer array SIGKILLed mid-load and restarted numbers on without a gap; both secondaries apply everything and equal the primary', { skip }, async (t) => {
  const fixture = await DaemonFixture.create();
  try {
    const seqDir = join(fixture.dir, 'seq');
    let seq = await fixture.start(seqDir, ['--name', 'seq', '--link', '127.0.0.1:0']);
    const seqLink = seq.linkAddress!;
    const p1 = await fixture.start(join(fixture.dir, 'p1'), ['--name', 'p1', '--link', '127.0.0.1:0']);
    const s0 = await fixture.start(join(fixture.dir, 's0'), ['--name', 's0', '--link', '127.0.0.1:0']);
    const s1 = await fixture.start(join(fixture.dir, 's1'), ['--name', 's1', '--link', '127.0.0.1:0']);
    await peerUp(fixture, p1, 'p1', seq, 'seq');
    await peerUp(fixture, p1, 'p1', s0, 's0');
    await peerUp(fixture, p1, 'p1', s1, 's1');
    await peerUp(fixture, seq, 'seq', s0, 's0');
    await peerUp(fixture, seq, 'seq', s1, 's1');
    await peerUp(fixture, s0, 's0', s1, 's1');
    for (const v of ['a', 'b']) await cli(p1, 'volume', 'create', v, '--size', String(VOLUME_BYTES));
    await cli(s0, 'volume', 'create', 'a-r', '--size', String(VOLUME_BYTES));
    await cli(s1, 'volume', 'create', 'b-r', '--size', String(VOLUME_BYTES));
    await cli(seq, 'journal', 'create', 'j');
    await cli(p1, 'journal', 'create', 'j', '--sequencer', 'seq', '--interval-ms', '20');
    await cli(p1, 'pair', 'create', 'a', '--peer', 's0', '--remote-volume', 'a-r', '--mode', 'journal', '--journal', 'j');
    await cli(p1, 'pair', 'create', 'b', '--peer', 's1', '--remote-volume', 'b-r', '--mode', 'journal', '--journal', 'j');

    const sessions = { a: QemuIoSession.open(p1.uri('a')), b: QemuIoSession.open(p1.uri('b')) };
    const prng = new Prng(31);
    let issuedBefore = 0;
    for (let i = 1; i <= 80; i++) {
      const volume = i % 2 === 0 ? 'a' : 'b';
      const done = sessions[volume].run(`write -P ${(i % 250) + 1} ${prng.int(0, SPAN_BLOCKS - 1) * BLOCK} ${BLOCK}`, /wrote|error|failed/i, 60_000);
      if (i === 35) {
        // This write may be waiting for its number while the sequencer dies; it gets one after.
        issuedBefore = (await sequence(seq)).issued!;
        await seq.stop('SIGKILL');
        seq = await fixture.start(seqDir, ['--name', 'seq', '--link', seqLink]);
      }
      assert.match(await done, /wrote/, `write ${i}`);
    }
    for (const s of Object.values(sessions)) await s.close();
    const issued = (await sequence(seq)).issued!;
    assert.equal(issued, 80, `80 writes, 80 numbers (${issuedBefore} before the kill): none skipped or reused`);
    for (const s of [s0, s1]) {
      await waitFor(`${s === s0 ? 's0' : 's1'} applied every number`, async () => (await sequence(s)).applied === issued, 60_000);
    }
    assert.ok((await imageOf(fixture, s0, 'a-r')).equals(await imageOf(fixture, p1, 'a')), 's0 equals the primary');
    assert.ok((await imageOf(fixture, s1, 'b-r')).equals(await imageOf(fixture, p1, 'b')), 's1 equals the primary');
    t.diagnostic(`80 writes; sequencer killed with ${issuedBefore} issued and restarted; ${issued} issued and applied on both secondaries`);
  } finally {
    await fixture.cleanup();
  }
});

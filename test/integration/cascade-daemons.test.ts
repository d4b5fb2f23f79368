// Cascading to a third site with real array daemons (separate processes, authenticated links):
// A → B sync pair, a cascade on B shipping differential-split images of B's replica to C every
// second. Dependent writes reach A over NBD and A is killed with SIGKILL mid-load: after the next
// cycle C's recoverable image is a prefix of the write sequence. A hot set rewritten continuously
// ships far fewer bytes to C than the hosts write. B and C are killed -9 mid-cycle and the cascade
// carries on without losing a track.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { api, DaemonFixture, imageOf, peerUp, tidemarkBin, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { missingTools, requirement } from '../helpers/requirement.js';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 16 * MiB;
/** Room for the dependent writes of the crash test's whole run (one record each). */
const LONG_VOLUME_BYTES = 64 * MiB;
const RECORD = 4096;
const MAGIC = 0x5ca5cade;

interface CascadeJson {
  name: string; phase: string; cycles: number; consistentAt: string | null; splitAt: string | null;
  bytesShipped: number; bytesShippedLast: number; tracksShippedLast: number; lastError: string | null; waitingFor: string | null;
}

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args], 120_000);
const cascade = async (array: DaemonProcess, name: string): Promise<CascadeJson> => JSON.parse(await cli(array, 'cascade', 'show', name)) as CascadeJson;

const startArray = (fixture: DaemonFixture, name: string, link = '127.0.0.1:0'): Promise<DaemonProcess> =>
  fixture.start(join(fixture.dir, name), ['--name', name, '--link', link]);

/** A → B (sync) and a cascade B → C every second, its first cycle complete. */
async function threeSites(fixture: DaemonFixture, sizeBytes = VOLUME_BYTES): Promise<{ a: DaemonProcess; b: DaemonProcess; c: DaemonProcess }> {
  const [a, b, c] = await Promise.all([startArray(fixture, 'a'), startArray(fixture, 'b'), startArray(fixture, 'c')]);
  await peerUp(fixture, a, 'a', b, 'b');
  await peerUp(fixture, b, 'b', c, 'c');
  await cli(a, 'volume', 'create', 'db', '--size', String(sizeBytes));
  await cli(b, 'volume', 'create', 'db-r', '--size', String(sizeBytes));
  await cli(b, 'volume', 'create', 'db-cl', '--size', String(sizeBytes));
  await cli(c, 'volume', 'create', 'db-far', '--size', String(sizeBytes));
  await cli(c, 'volume', 'create', 'db-safe', '--size', String(sizeBytes));
  await cli(a, 'pair', 'create', 'db', '--peer', 'b', '--remote-volume', 'db-r', '--mode', 'sync');
  await cli(a, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
  await cli(c, 'clone', 'establish', 'db-far', 'db-safe');
  await cli(b, 'cascade', 'create', 'far', '--volume', 'db-r', '--clone', 'db-cl', '--peer', 'c', '--remote-volume', 'db-far',
    '--remote-clone', 'db-safe', '--every', '1s');
  await cli(b, 'cascade', 'wait', 'far', '--cycles', '1', '--timeout', '120');
  return { a, b, c };
}

/**
 * What a user at C recovers from: the protection clone CPROT (docs/design/cascade.md). While the
 * cascade refreshes it (it is attached for a moment) CRVOL is whole instead, but a live cascade may
 * start shipping the next cycle into CRVOL while it is read (a user recovering at C stops the
 * cascade first), so the test reads CPROT once it is split again: it does not change while exported.
 */
async function recoverableAtC(fixture: DaemonFixture, c: DaemonProcess): Promise<Buffer> {
  let image: Buffer | undefined;
  await waitFor('C\'s protection clone split and read', async () => {
    const state = (JSON.parse(await cli(c, 'clone', 'show', 'db-far', 'db-safe')) as { state: string }).state;
    if (state !== 'split') return false;
    image = await imageOf(fixture, c, 'db-safe').catch(() => undefined);
    return image !== undefined;
  }, 60_000);
  return image!;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function writeBytes(i: number): Buffer {
  const data = Buffer.alloc(RECORD, (i % 251) + 1);
  data.writeUInt32LE(MAGIC, 0);
  data.writeUInt32LE(i, 4);
  return data;
}

/** Write i fills record i, each only after the previous was acknowledged, until the array dies. */
async function dependentWrites(port: number, volume: string, first: number, onAck: (i: number) => void, stop = (): boolean => false,
  pauseMs = 0): Promise<number> {
  const c = await RawNbdClient.connect(port);
  await c.greeting();
  await c.go(volume);
  let acked = first;
  try {
    for (let i = first; i < LONG_VOLUME_BYTES / RECORD && !stop(); i++) {
      c.sendRequest(1, BigInt(i), BigInt(i * RECORD), RECORD, 0, writeBytes(i));
      const reply = await c.simpleReply();
      if (reply.error !== 0) throw new Error(`write ${i} failed: ${reply.error}`);
      acked = i + 1;
      onAck(acked);
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
    }
  } catch {
    // The array died under the host: the writes acknowledged so far are the issued sequence.
  } finally {
    c.close();
  }
  return acked;
}

/** The number of writes an image holds, checking they are exactly writes 0..n-1, each whole in its record. */
function prefixIn(image: Buffer, what: string): number {
  let n = 0;
  for (let slot = 0; slot * RECORD < image.length; slot++) {
    const at = slot * RECORD;
    const record = image.subarray(at, at + RECORD);
    if (image.readUInt32LE(at) !== MAGIC) {
      assert.ok(record.every((b) => b === 0), `${what} record ${slot} holds neither a write nor zeros`);
      continue;
    }
    assert.equal(image.readUInt32LE(at + 4), slot, `${what} record ${slot} holds another write`);
    assert.ok(record.equals(writeBytes(slot)), `${what} record ${slot} is torn`);
    assert.equal(slot, n, `${what} holds write ${slot} without write ${n}: not a prefix`);
    n++;
  }
  return n;
}

test('cascade A→B (sync) →C every 1 s: dependent writes over NBD, A killed mid-load: after the next cycle C holds a prefix of the writes', { skip: requirement(missingTools(['nbdcopy'])) }, async () => {
  const fixture = await DaemonFixture.create();
  try {
    const { a, b, c } = await threeSites(fixture);
    const first = await cascade(b, 'far');
    assert.equal(first.cycles >= 1, true);
    assert.ok(first.consistentAt !== null, 'the first cycle gave C an image');

    let acked = 0;
    const workload = dependentWrites(a.nbdPort, 'db', 0, (n) => { acked = n; });
    // Let several cycles pass under load, with C's image checked while they run.
    await waitFor('writes and two more cycles under load', async () => acked > 200 && (await cascade(b, 'far')).cycles >= first.cycles + 2, 60_000);
    const during = prefixIn(await recoverableAtC(fixture, c), 'C during the load');
    assert.ok(during <= acked + 1, 'C holds no write the host was not acknowledged (beyond the one in flight)');
    await a.stop('SIGKILL');
    const killedAt = Date.now();
    const total = await workload;

    // The next cycle starts after the kill: it ships B's image of then, which holds every acknowledged write.
    await waitFor('a cycle after the kill completes', async () => {
      const s = await cascade(b, 'far');
      return s.consistentAt !== null && Date.parse(s.consistentAt) > killedAt && s.phase !== 'refreshing';
    }, 60_000);
    const atC = prefixIn(await recoverableAtC(fixture, c), 'C after the kill');
    assert.ok(atC >= total && atC <= total + 1, `C holds writes 0..${atC - 1}; the host had ${total} acknowledged`);
    assert.ok(atC > during, 'C moved on during the load');
    const view = await cascade(b, 'far');
    const metrics = (await api<string>(b, 'GET', '/metrics')).body;
    const cycles = /^tidemark_cascade_cycles\{cascade="far",peer="c"\} (\d+)$/m.exec(metrics);
    assert.ok(cycles && Number(cycles[1]) >= view.cycles - 1, 'the cycles are in /metrics');
    const age = /^tidemark_cascade_consistent_age_seconds\{cascade="far",peer="c"\} ([\d.e+-]+)$/m.exec(metrics);
    assert.ok(age && Number(age[1]) < 60, `C's image age (RPO) is in /metrics: ${age?.[1]}`);
    console.log(`cascade after A's kill: ${total} writes acknowledged, C holds ${atC}; C held ${during} mid-load; ${view.cycles} cycles, ` +
      `${view.bytesShipped} bytes shipped in all`);
  } finally {
    await fixture.cleanup();
  }
});

test('cascade with a hot set rewritten continuously: bytes shipped to C ≤ 0.3 × bytes written by hosts; C equals A at the end', { skip: requirement(missingTools(['fio', 'nbdcopy', 'qemu-io'])) }, async () => {
  const fixture = await DaemonFixture.create();
  try {
    const { a, b, c } = await threeSites(fixture);
    const before = await cascade(b, 'far');
    const out = await mustRun('fio', ['--name=hot', '--ioengine=nbd', `--uri=${a.uri('db')}`, '--rw=randwrite', '--bs=4k', '--size=512k',
      '--time_based', '--runtime=8', '--iodepth=4', '--output-format=json'], 120_000);
    const written = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ write: { io_bytes: number } }> }).jobs[0]!.write.io_bytes;
    const endedAt = Date.now();
    await waitFor('a cycle after the writes completes', async () => {
      const s = await cascade(b, 'far');
      return s.consistentAt !== null && Date.parse(s.consistentAt) > endedAt && s.phase !== 'refreshing';
    }, 60_000);
    const after = await cascade(b, 'far');
    const shipped = after.bytesShipped - before.bytesShipped;
    const ratio = shipped / written;
    console.log(`hot set 512 KiB: hosts wrote ${written} bytes, ${after.cycles - before.cycles} cycles shipped ${shipped} bytes to C (${ratio.toFixed(3)}×)`);
    assert.ok(written > 8 * MiB, `the hosts wrote enough to measure (${written} bytes)`);
    assert.ok(shipped > 0, 'the cycles shipped the hot set');
    assert.ok(ratio <= 0.3, `shipped ${shipped} bytes for ${written} written (${ratio.toFixed(3)}×)`);
    assert.equal(sha(await recoverableAtC(fixture, c)), sha(await imageOf(fixture, a, 'db')), 'C recovers A\'s image');

    // Sparse writes: one 4 KiB record in each of 32 tracks. The reattach copies whole tracks, but
    // the pair compares them with C's digests: records, not tracks, travel.
    const sparseFrom = (await cascade(b, 'far')).bytesShipped;
    await mustRun('qemu-io', ['-f', 'raw', ...Array.from({ length: 32 }, (_, t) => ['-c', `write -P ${0x40 + t} ${t * 65536 + 8192} 4k`]).flat(), a.uri('db')]);
    const sparseAt = Date.now();
    await waitFor('a cycle after the sparse writes', async () => {
      const s = await cascade(b, 'far');
      return s.consistentAt !== null && Date.parse(s.consistentAt) > sparseAt && s.phase !== 'refreshing';
    }, 60_000);
    const sparse = (await cascade(b, 'far')).bytesShipped - sparseFrom;
    console.log(`sparse: 32 records of 4 KiB in 32 tracks shipped ${sparse} bytes to C`);
    assert.ok(sparse >= 32 * RECORD && sparse <= 2 * 32 * RECORD, `shipped ${sparse} bytes for 32 changed records (whole tracks: ${32 * 65536})`);
    const want = sha(await imageOf(fixture, a, 'db'));
    assert.equal(sha(await recoverableAtC(fixture, c)), want, 'C recovers A\'s image');

    // close: once C is whole the pair goes, CRVOL keeps that image and becomes usable at C.
    const closed = JSON.parse(await cli(b, 'cascade', 'close', 'far')) as { closed: boolean; cycles: number; consistentAt: string | null };
    assert.equal(closed.closed, true);
    assert.equal((JSON.parse(await cli(b, 'cascade', 'list')) as { cascades: unknown[] }).cascades.length, 0);
    assert.equal((await api(b, 'GET', '/v1/pairs/far')).status, 404, 'the pair B→C is deleted');
    assert.equal((await api(c, 'GET', '/v1/pairs/far')).status, 404, 'and its half on C');
    assert.equal((await api<{ state: string }>(c, 'GET', '/v1/volumes/db-far')).body.state, 'ready');
    assert.equal(sha(await imageOf(fixture, c, 'db-far')), want, 'CRVOL keeps the last complete image');
    assert.equal((await api(b, 'GET', '/v1/clones/db-r/db-cl')).status, 404, 'the clone session on B ended');
  } finally {
    await fixture.cleanup();
  }
});

// This test found that a restarted array gave its links their peers before loading its pairs: A
// asked the restarted B for its half of the pair at once, heard "no half of this pair", and left the
// pair partitioned for good (test/integration/array-startup-order.test.ts pins that, fixed). It also
// found, about 1 run in 50, C's recoverable image not a prefix ("holds write 1472 without write
// 1229": one push batch of 16 tracks missing, the next present): a tick of the pair B→C between a
// resume's record change and its resync pushed owed tracks while C refreshed its clone from that
// half-shipped CRVOL. Fixed in PairLifecycle; pinned by unit tests and cascade sim seed 2.
test('cascade survives kill -9 of B and of C in each phase of a cycle under load: C always holds a prefix of the writes; at the end, all of them', {
  skip: requirement(missingTools(['nbdcopy'])),
}, async () => {
  const fixture = await DaemonFixture.create();
  try {
    const sites = await threeSites(fixture, LONG_VOLUME_BYTES);
    const { a } = sites;
    let { b, c } = sites;
    let acked = 0;
    let stop = false;
    // Paced, so the sequence (one record each) lasts the whole run.
    const workload = dependentWrites(a.nbdPort, 'db', 0, (n) => { acked = n; }, () => stop, 3);
    let held = 0;
    const kills: string[] = [];
    for (const [victim, phase] of [['b', 'shipping'], ['c', 'shipping'], ['b', 'synchronizing'], ['c', 'refreshing'], ['b', 'refreshing']] as const) {
      // Kill the array the moment B's cascade is in that phase (the API polled every 50 ms).
      await waitFor(`cascade ${phase}`, async () => (await api<CascadeJson>(b, 'GET', '/v1/cascades/far')).body.phase === phase, 90_000);
      const array = victim === 'b' ? b : c;
      const link = array.linkAddress!;
      await array.stop('SIGKILL');
      const restarted = await startArray(fixture, victim, link);
      if (victim === 'b') b = restarted;
      else c = restarted;
      kills.push(`${victim}@${phase}`);
      const now = prefixIn(await recoverableAtC(fixture, c), `C after kill -9 of ${victim} in ${phase}`);
      assert.ok(now >= held && now <= acked + 1, `C holds writes 0..${now - 1} (held ${held} before; ${acked} acknowledged)`);
      held = now;
      // The cascade resumes: a cycle that began after the restart completes.
      const restartedAt = Date.now();
      await waitFor(`a cycle after the kill of ${victim}`, async () => {
        const s = (await api<CascadeJson>(b, 'GET', '/v1/cascades/far')).body;
        return s.consistentAt !== null && Date.parse(s.consistentAt) > restartedAt && s.phase !== 'refreshing';
      }, 90_000).catch(async (error: unknown) => {
        const state = await Promise.all([api(b, 'GET', '/v1/cascades/far'), api(b, 'GET', '/v1/pairs/far'), api(c, 'GET', '/v1/pairs/far'),
          api(c, 'GET', '/v1/clones/db-far/db-safe'), api(b, 'GET', '/v1/clones/db-r/db-cl'), api(a, 'GET', '/v1/pairs/db')]);
        throw new Error(`${String(error)}: ${JSON.stringify(state.map((r) => r.body))}`);
      });
      const next = prefixIn(await recoverableAtC(fixture, c), `C after the cycle that followed the kill of ${victim}`);
      assert.ok(next > held || acked === LONG_VOLUME_BYTES / RECORD, `C moved on after the kill of ${victim} (${next} > ${held})`);
      held = next;
    }
    stop = true;
    const total = await workload;
    const endedAt = Date.now();
    await waitFor('a cycle after the last write', async () => {
      const s = (await api<CascadeJson>(b, 'GET', '/v1/cascades/far')).body;
      return s.consistentAt !== null && Date.parse(s.consistentAt) > endedAt && s.phase !== 'refreshing';
    }, 90_000);
    assert.equal(prefixIn(await recoverableAtC(fixture, c), 'C at the end'), total, 'C holds every write: no track was lost between cycles');
    assert.equal(sha(await recoverableAtC(fixture, c)), sha(await imageOf(fixture, a, 'db')));
    console.log(`cascade kills ${kills.join(', ')}: ${total} writes, C holds them all`);
  } finally {
    await fixture.cleanup();
  }
});

test('cascade commands refuse bad input with stable codes and change nothing', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const b = await startArray(fixture, 'b');
    await cli(b, 'volume', 'create', 'r2', '--size', String(VOLUME_BYTES));
    await cli(b, 'volume', 'create', 'small', '--size', String(VOLUME_BYTES / 2));
    await cli(b, 'volume', 'create', 'cl', '--size', String(VOLUME_BYTES));
    const refused = async (code: string, ...args: string[]): Promise<void> => {
      const r = await runCommand(tidemarkBin, [...b.cliArgs, '--json', 'cascade', ...args]);
      assert.notEqual(r.code, 0, `cascade ${args.join(' ')} must fail`);
      assert.match(r.stderr + r.stdout, new RegExp(code), `cascade ${args.join(' ')}: ${r.stderr}`);
    };
    const create = (volume: string, clone: string, peer: string, ...more: string[]): string[] =>
      ['create', 'x', '--volume', volume, '--clone', clone, '--peer', peer, '--remote-volume', 'far', '--remote-clone', 'safe', ...more];
    await refused('TM_ERR_INVALID_ARGUMENT', ...create('r2', 'small', 'c'));
    await refused('TM_ERR_INVALID_ARGUMENT', ...create('r2', 'r2', 'c'));
    await refused('TM_ERR_NOT_FOUND', ...create('nope', 'cl', 'c'));
    await refused('TM_ERR_NOT_FOUND', ...create('r2', 'cl', 'c'));
    await refused('TM_ERR_INVALID_ARGUMENT', ...create('r2', 'cl', 'c', '--every', '50ms'));
    await refused('TM_ERR_INVALID_ARGUMENT', ...create('r2', 'cl', 'c', '--every', 'soon'));
    await refused('TM_ERR_INVALID_ARGUMENT', ...create('r2', '../cl', 'c'));
    await refused('TM_ERR_NOT_FOUND', 'show', 'x');
    await refused('TM_ERR_NOT_FOUND', 'cycle', 'x');
    await refused('TM_ERR_NOT_FOUND', 'close', 'x');
    await refused('TM_ERR_INVALID_ARGUMENT', 'wait', 'x', '--cycles', '0');
    const extra = await api(b, 'POST', '/v1/cascades', { name: 'x', volume: 'r2', clone: 'cl', peer: 'c', remoteVolume: 'f', remoteClone: 's', bogus: 1 });
    assert.equal(extra.status, 400);
    // Nothing was made: no session, no clone session, no pair.
    assert.deepEqual((JSON.parse(await cli(b, 'cascade', 'list')) as { cascades: unknown[] }).cascades, []);
    assert.deepEqual((JSON.parse(await cli(b, 'clone', 'list')) as { sessions: unknown[] }).sessions, []);
    assert.deepEqual((JSON.parse(await cli(b, 'pair', 'list')) as { pairs: unknown[] }).pairs, []);
  } finally {
    await fixture.cleanup();
  }
});

test('cascade against a direct async chain from the same replica, same hot-set workload: link bytes to the far site', { skip: requirement(missingTools(['fio', 'nbdcopy'])) }, async () => {
  const fixture = await DaemonFixture.create();
  try {
    // B forwards db-r two ways: a chain pair (async, 1 s cycles) to D and the cascade (every 1 s) to C.
    const { a, b, c } = await threeSites(fixture);
    const d = await startArray(fixture, 'd');
    await peerUp(fixture, b, 'b', d, 'd');
    await cli(d, 'volume', 'create', 'db-chain', '--size', String(VOLUME_BYTES));
    await cli(b, 'pair', 'create', 'db-r', '--name', 'chain', '--peer', 'd', '--remote-volume', 'db-chain', '--mode', 'async', '--cycle-ms', '1000');
    await cli(b, 'pair', 'wait', 'chain', '--until', 'synchronized', '--timeout', '60');
    await waitFor('the chain\'s cycles run', async () => (await api<{ cycles: unknown }>(b, 'GET', '/v1/pairs/chain')).body.cycles !== null, 30_000);
    const sent = async (peer: string): Promise<number> => (await api<{ bytesSent: number }>(b, 'GET', `/v1/peers/${peer}`)).body.bytesSent;
    const [toC, toD] = [await sent('c'), await sent('d')];
    const out = await mustRun('fio', ['--name=hot', '--ioengine=nbd', `--uri=${a.uri('db')}`, '--rw=randwrite', '--bs=4k', '--size=512k',
      '--time_based', '--runtime=8', '--iodepth=4', '--output-format=json'], 120_000);
    const written = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ write: { io_bytes: number } }> }).jobs[0]!.write.io_bytes;
    const endedAt = Date.now();
    await waitFor('a cascade cycle after the writes', async () => {
      const s = await cascade(b, 'far');
      return s.consistentAt !== null && Date.parse(s.consistentAt) > endedAt && s.phase !== 'refreshing';
    }, 60_000);
    const want = sha(await imageOf(fixture, a, 'db'));
    await waitFor('the chain converges', async () => sha(await imageOf(fixture, d, 'db-chain')) === want, 60_000);
    const cascadeBytes = (await sent('c')) - toC;
    const chainBytes = (await sent('d')) - toD;
    console.log(`same workload (fio 8 s into a 512 KiB hot set, ${written} bytes): link bytes B→C cascade ${cascadeBytes} ` +
      `(${(cascadeBytes / written).toFixed(3)}× host bytes), B→D async chain ${chainBytes} (${(chainBytes / written).toFixed(3)}×); ` +
      `cascade ÷ chain ${(cascadeBytes / chainBytes).toFixed(3)}`);
    assert.ok(cascadeBytes < chainBytes, 'the cascade ships less than the chain for a hot set');
    assert.equal(sha(await recoverableAtC(fixture, c)), want);
  } finally {
    await fixture.cleanup();
  }
});

// A consistency group across two R1 arrays, with real daemons: a host issues dependent writes
// (each only after the previous one was acknowledged) alternately to a volume on each R1 array;
// both R1 daemons are killed with SIGKILL mid-run; `group recover` on an R2 array brings both R2s to
// one tag; both R2 images, read back through their exports, must hold exactly the first K writes.
// Repeated with the kill at different moments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { tidemarkBin } from '../helpers/daemon.js';

const VOLUME_BYTES = 16 * 1024 * 1024;
const RECORD = 4096;
const MAGIC = 0x7a1d3a2c;

const cli = (array: DaemonProcess, ...args: string[]): Promise<string> => mustRun(tidemarkBin, [...array.cliArgs, '--json', ...args]);
const json = async <T>(array: DaemonProcess, ...args: string[]): Promise<T> => JSON.parse(await cli(array, ...args)) as T;

interface GroupJson {
  tag: number; switches: number; phase: string;
  members: Array<{ member: string; status: { ready: boolean; captureTag: number | null; committedCycle: number | null } | null }>;
}
interface RecoveryJson {
  carriedOut: boolean; consistent: boolean; targetTag: number | null; problems: string[];
  members: Array<{ member: string; action: string; resultTag: number | null }>;
}

/** Write i goes to volume i % 2, record i >> 1: every write has a slot of its own. */
function writeBytes(i: number): Buffer {
  const data = Buffer.alloc(RECORD, (i % 251) + 1);
  data.writeUInt32LE(MAGIC, 0);
  data.writeUInt32LE(i, 4);
  return data;
}

/**
 * Issues dependent writes until `until.stopped`, or until a connection fails once `until.killing`
 * is set; returns how many were acknowledged. A failure before the kill is the test's failure.
 */
async function dependentWrites(ports: [number, number], names: [string, string], until: { stopped: boolean; killing: boolean }): Promise<number> {
  const clients = await Promise.all(ports.map(async (port, v) => {
    const c = await RawNbdClient.connect(port);
    await c.greeting();
    await c.go(names[v]!);
    return c;
  }));
  let acked = 0;
  try {
    for (let i = 0; !until.stopped && (i >> 1) < VOLUME_BYTES / RECORD; i++) {
      const c = clients[i % 2]!;
      c.sendRequest(1, BigInt(i), BigInt((i >> 1) * RECORD), RECORD, 0, writeBytes(i));
      const reply = await c.simpleReply();
      if (reply.error !== 0) throw new Error(`write ${i} failed: ${reply.error}`);
      acked = i + 1;
    }
  } catch (error) {
    if (!until.killing) throw error;
    // The array died under the host: the writes acknowledged so far are the issued sequence.
  } finally {
    for (const c of clients) c.close();
  }
  return acked;
}

/** The write numbers present in an R2 image. */
async function writesIn(fixture: DaemonFixture, array: DaemonProcess, volume: string, v: number): Promise<number[]> {
  const file = join(fixture.dir, `${volume}-${Date.now()}.img`);
  await mustRun('nbdcopy', [array.uri(volume), file]);
  const image = await readFile(file);
  const found: number[] = [];
  for (let slot = 0; slot * RECORD < image.length; slot++) {
    const at = slot * RECORD;
    if (image.readUInt32LE(at) !== MAGIC) continue;
    const i = image.readUInt32LE(at + 4);
    assert.equal(i, slot * 2 + v, `${volume} record ${slot} holds write ${i}, which belongs elsewhere`);
    assert.ok(image.subarray(at, at + RECORD).equals(writeBytes(i)), `${volume} record ${slot} holds write ${i} torn`);
    found.push(i);
  }
  return found;
}

async function oneRun(killAfterMs: number, restartR2: boolean): Promise<{ acked: number; recovered: number; tag: number | null }> {
  const fixture = await DaemonFixture.create();
  try {
    const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
    const [east1, east2, west1Started, west2] = await Promise.all([start('east1'), start('east2'), start('west1'), start('west2')]);
    let west1 = west1Started;
    await peerUp(fixture, east1, 'east1', west1, 'west1');
    await peerUp(fixture, east2, 'east2', west2, 'west2');
    await peerUp(fixture, east1, 'east1', east2, 'east2');
    await peerUp(fixture, west1, 'west1', west2, 'west2');
    for (const [r1, r2, v] of [[east1, west1, 'db1'], [east2, west2, 'db2']] as const) {
      await cli(r1, 'volume', 'create', v, '--size', String(VOLUME_BYTES));
      await cli(r2, 'volume', 'create', `${v}-r`, '--size', String(VOLUME_BYTES));
      await cli(r1, 'pair', 'create', v, '--peer', r2 === west1 ? 'west1' : 'west2', '--remote-volume', `${v}-r`, '--mode', 'async', '--cycle-ms', '100');
      await cli(r1, 'pair', 'wait', v, '--until', 'synchronized', '--timeout', '60');
    }
    await cli(east1, 'group', 'create', 'orders', '--cycle-ms', '150');
    await cli(east1, 'group', 'add', 'orders', 'db1');
    await cli(east2, 'group', 'add', 'orders', 'db2'); // given to the member's array: passed to the coordinator
    await waitFor('group switching', async () => {
      const g = await json<GroupJson>(east1, 'group', 'show', 'orders');
      return g.switches >= 3 && g.members.length === 2 && g.members.every((m) => m.status?.captureTag !== null);
    }, 20_000);
    const shown = await json<GroupJson>(east2, 'group', 'show', 'orders'); // asked of a member's array
    assert.equal(shown.members.length, 2);
    const metrics = await (await fetch(`${east1.apiUrl}/metrics`)).text();
    assert.match(metrics, /tidemark_group_members\{group="orders"\} 2/);
    assert.match(metrics, /tidemark_group_tag\{group="orders"\} [1-9]/);

    const until = { stopped: false, killing: false };
    const workload = dependentWrites([east1.nbdPort, east2.nbdPort], ['db1', 'db2'], until);
    await new Promise((r) => setTimeout(r, killAfterMs));
    // Both R1 arrays die at once (the coordinator with them).
    until.killing = true;
    await Promise.all([east1.stop('SIGKILL'), east2.stop('SIGKILL')]);
    until.stopped = true;
    const acked = await workload;

    if (restartR2) {
      // An R2 array also crashes before the recovery: what it received and committed is on disk.
      const link = west1.linkAddress!;
      await west1.stop('SIGKILL');
      west1 = await fixture.start(west1.dataDir, ['--name', 'west1', '--link', link]);
    }
    // R2 arrays notice the links are gone; recovery refuses while an R1 still answers.
    let recovery: RecoveryJson | undefined;
    await waitFor('group recover', async () => {
      const r = await runCommand(tidemarkBin, [...west1.cliArgs, '--json', 'group', 'recover', 'orders']);
      if (r.code !== 0 && /link .* is up/.test(r.stderr)) return false;
      recovery = JSON.parse(r.stdout) as RecoveryJson;
      return true;
    }, 20_000);
    assert.ok(recovery!.carriedOut, `recovery carried out: ${JSON.stringify(recovery)}`);
    assert.equal(recovery!.consistent, true);
    assert.equal(recovery!.members.length, 2, 'recovery decided for both members');
    assert.ok(recovery!.members.every((m) => m.resultTag === recovery!.targetTag), 'every member ends at the group tag');

    const present = [...await writesIn(fixture, west1, 'db1-r', 0), ...await writesIn(fixture, west2, 'db2-r', 1)].sort((a, b) => a - b);
    const k = present.length;
    assert.ok(present.every((w, i) => w === i), `the R2 images hold the first ${k} writes and nothing else (got ${present.slice(0, 20).join(',')}…)`);
    assert.ok(k <= acked + 1, `at most the acknowledged writes and the one in flight (${k} > ${acked} + 1)`);

    // Idempotent: a second recover finds nothing left to decide.
    const again = await json<RecoveryJson>(west1, 'group', 'recover', 'orders');
    assert.deepEqual(again.members.map((m) => m.action), ['none', 'none']);
    return { acked, recovered: k, tag: recovery!.targetTag };
  } finally {
    await fixture.cleanup();
  }
}

test('consistency group over two R1 arrays: SIGKILL of both mid-run (once also of an R2 array), group recover, R2 images hold a prefix of the dependent writes', async () => {
  const runs = [];
  for (const [killAfterMs, restartR2] of [[400, false], [1300, true], [2600, false]] as const) {
    runs.push({ killAfterMs, restartR2, ...await oneRun(killAfterMs, restartR2) });
  }
  // The later kills must have found replicated writes: the group was really replicating.
  assert.ok(runs.slice(1).every((r) => r.recovered > 0), `writes reached the R2s: ${JSON.stringify(runs)}`);
  console.log(`group kill runs: ${JSON.stringify(runs)}`);
});

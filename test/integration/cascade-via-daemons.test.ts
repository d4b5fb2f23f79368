// Operating three sites from site A alone (issue: cascading, routed commands): the peers are linked
// once, then every command for B and C travels from A over the replication links with --via —
// volumes on B and C, the clone at C, the cascade on B — and a two-hop `volume list` reaches C,
// which is not A's peer. Real daemons, the real CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, peerUp, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('everything on B and C is done from A with --via: volumes, the far clone, the cascade; a two-hop volume list; C ends with A\'s image', async () => {
  const fixture = await DaemonFixture.create();
  try {
    const start = (name: string): Promise<DaemonProcess> => fixture.start(join(fixture.dir, name), ['--name', name, '--link', '127.0.0.1:0']);
    const [a, b, c] = await Promise.all([start('a'), start('b'), start('c')]);
    await peerUp(fixture, a, 'a', b, 'b');
    await peerUp(fixture, b, 'b', c, 'c');
    // From here on, only A's API is used.
    const fromA = (via: string | undefined, ...args: string[]): Promise<string> =>
      mustRun(tidemarkBin, [...a.cliArgs, ...(via ? ['--via', via] : []), '--json', ...args], 120_000);
    await fromA(undefined, 'volume', 'create', 'db', '--size', '16MiB');
    for (const name of ['db-r', 'db-cl']) await fromA('b', 'volume', 'create', name, '--size', '16MiB');
    for (const name of ['db-far', 'db-safe']) await fromA('b,c', 'volume', 'create', name, '--size', '16MiB');
    const onC = JSON.parse(await fromA('b,c', 'volume', 'list')) as { volumes: Array<{ name: string }> };
    assert.deepEqual(onC.volumes.map((v) => v.name).sort(), ['db-far', 'db-safe'], 'the two-hop list is C\'s');
    const direct = await runCommand(tidemarkBin, [...a.cliArgs, '--via', 'c', '--json', 'volume', 'list']);
    assert.notEqual(direct.code, 0, 'C is not A\'s peer: a one-hop route to it is refused');
    assert.match(direct.stdout + direct.stderr, /TM_ERR_ROUTE_REFUSED/);

    await fromA(undefined, 'pair', 'create', 'db', '--peer', 'b', '--remote-volume', 'db-r', '--mode', 'sync');
    await fromA(undefined, 'pair', 'wait', 'db', '--until', 'synchronized', '--timeout', '60');
    await fromA('b,c', 'clone', 'establish', 'db-far', 'db-safe');
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 3M', '-c', `write -P 0x21 ${8 * MiB} 1M`, a.uri('db')]);
    const created = JSON.parse(await fromA('b', 'cascade', 'create', 'far', '--volume', 'db-r', '--clone', 'db-cl', '--peer', 'c',
      '--remote-volume', 'db-far', '--remote-clone', 'db-safe', '--every', '1s')) as { name: string };
    assert.equal(created.name, 'far');
    await fromA('b', 'cascade', 'wait', 'far', '--cycles', '1', '--timeout', '120');
    const shown = JSON.parse(await fromA('b', 'cascade', 'show', 'far')) as { cycles: number; consistentAt: string | null };
    assert.ok(shown.cycles >= 1 && shown.consistentAt !== null, JSON.stringify(shown));
    await fromA('b', 'cascade', 'close', 'far');
    assert.deepEqual((JSON.parse(await fromA('b', 'cascade', 'list')) as { cascades: unknown[] }).cascades, [], 'closed from A');

    // C holds A's image: compared through C's own export.
    const image = async (array: DaemonProcess, volume: string): Promise<string> => {
      const file = join(fixture.dir, `${volume}-${Date.now()}.img`);
      await mustRun('nbdcopy', [array.uri(volume), file]);
      return sha(await readFile(file));
    };
    assert.equal(await image(c, 'db-far'), await image(a, 'db'));
  } finally {
    await fixture.cleanup();
  }
});

// `clone wait` answers when the copy ends, not on its next poll: the API holds a GET of a clone
// session until it reaches the state asked for (a long poll). A real daemon and the real CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DaemonFixture, api, tidemarkBin, type DaemonProcess } from '../helpers/daemon.js';
import { mustRun, runCommand } from '../helpers/in-process-array.js';

interface Clone { state: string; tracksToCopy: number }

let fixture: DaemonFixture;
let daemon: DaemonProcess;
before(async () => {
  fixture = await DaemonFixture.create();
  daemon = await fixture.start();
});
after(async () => {
  await fixture.cleanup();
});

async function volumes(...names: string[]): Promise<void> {
  for (const name of names) assert.equal((await api(daemon, 'POST', '/v1/volumes', { name, sizeBytes: 256 * 1024 * 1024 })).status, 201);
}

test('a GET with until is answered once the session reaches that state, with the state it reached', async () => {
  await volumes('lp-std', 'lp-clone');
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 128M', daemon.uri('lp-std')]);
  const established = await api<Clone>(daemon, 'POST', '/v1/clones', { std: 'lp-std', clone: 'lp-clone' });
  assert.equal(established.status, 201);
  assert.equal(established.body.state, 'synchronizing');
  assert.ok(established.body.tracksToCopy > 0);
  const answer = await api<Clone>(daemon, 'GET', '/v1/clones/lp-std/lp-clone?until=synchronized&waitMs=9000');
  assert.equal(answer.status, 200);
  assert.equal(answer.body.state, 'synchronized', 'answered when the copy ended, not before');
  assert.equal(answer.body.tracksToCopy, 0);

  // A state not reached within waitMs: answered as the session is then.
  const started = performance.now();
  const notReached = await api<Clone>(daemon, 'GET', '/v1/clones/lp-std/lp-clone?until=split&waitMs=400');
  assert.equal(notReached.body.state, 'synchronized');
  assert.ok(performance.now() - started >= 350, 'the answer was held for waitMs');

  // The session ending while a GET waits on it: the GET answers 404.
  const waiting = api<{ error: { code: string } }>(daemon, 'GET', '/v1/clones/lp-std/lp-clone?until=split&waitMs=9000');
  assert.equal((await api(daemon, 'DELETE', '/v1/clones/lp-std/lp-clone')).status, 200);
  const gone = await waiting;
  assert.equal(gone.status, 404);
  assert.equal(gone.body.error.code, 'TM_ERR_NOT_FOUND');
});

test('bad long-poll parameters are refused and change nothing', async () => {
  await volumes('lp2-std', 'lp2-clone');
  assert.equal((await api(daemon, 'POST', '/v1/clones', { std: 'lp2-std', clone: 'lp2-clone' })).status, 201);
  for (const query of ['until=nonsense', 'until=split&waitMs=-1', 'until=split&waitMs=30001', 'waitMs=abc']) {
    const response = await api<{ error: { code: string } }>(daemon, 'GET', `/v1/clones/lp2-std/lp2-clone?${query}`);
    assert.equal(response.status, 400, query);
    assert.equal(response.body.error.code, 'TM_ERR_INVALID_ARGUMENT', query);
  }
});

test('tidemark clone wait, and reestablish --wait, return the reached state as JSON', async () => {
  await volumes('lp3-std', 'lp3-clone');
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 3 0 64M', daemon.uri('lp3-std')]);
  const cli = (...args: string[]) => runCommand(tidemarkBin, [...daemon.cliArgs, '--json', ...args]);
  assert.equal((await cli('clone', 'establish', 'lp3-std', 'lp3-clone')).code, 0);
  assert.equal((await cli('clone', 'wait', 'lp3-std', 'lp3-clone', '--until', 'synchronized')).code, 0);
  assert.equal((await cli('clone', 'split', 'lp3-std', 'lp3-clone')).code, 0);
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 4 1M 2M', daemon.uri('lp3-std')]);
  const waited = await cli('clone', 'reestablish', 'lp3-std', 'lp3-clone', '--wait');
  assert.equal(waited.code, 0, waited.stderr);
  const status = JSON.parse(waited.stdout) as Clone & { tracksCopied: number };
  assert.equal(status.state, 'synchronized');
  assert.equal(status.tracksCopied, 32, 'the reestablish copied the 2 MiB written since the split');
});

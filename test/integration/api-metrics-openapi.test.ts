// /metrics after real NBD I/O, and the committed OpenAPI document equal to what a daemon serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DaemonFixture, api, repoRoot, waitFor, type DaemonProcess } from '../helpers/daemon.js';
import { RawNbdClient } from '../helpers/raw-nbd-client.js';
import { mustRun } from '../helpers/in-process-array.js';

let fixture: DaemonFixture;
let daemon: DaemonProcess;

before(async () => {
  fixture = await DaemonFixture.create();
  daemon = await fixture.start();
});
after(async () => {
  await fixture.cleanup();
});

const metrics = async (): Promise<string> => {
  const response = await api<string>(daemon, 'GET', '/metrics');
  assert.equal(response.status, 200);
  return response.body;
};

/** The value of one sample line, e.g. `tidemark_volume_ops_total{volume="m",op="write"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('/metrics counts bytes, ops and latency per volume and kind, and NBD connections', { timeout: 60_000 }, async () => {
  await api(daemon, 'POST', '/v1/volumes', { name: 'm', sizeBytes: 4 * 1024 * 1024 });
  await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7 0 64k', '-c', 'write -P 0x7 64k 64k', '-c', 'flush',
    '-c', 'read -P 0x7 0 128k', daemon.uri('m')]);
  const text = await metrics();
  assert.equal(sample(text, 'tidemark_volume_ops_total{volume="m",op="write"}'), 2);
  assert.equal(sample(text, 'tidemark_volume_bytes_total{volume="m",op="write"}'), 128 * 1024);
  assert.ok(sample(text, 'tidemark_volume_bytes_total{volume="m",op="read"}')! >= 128 * 1024);
  assert.ok(sample(text, 'tidemark_volume_ops_total{volume="m",op="flush"}')! >= 1);
  assert.equal(sample(text, 'tidemark_volume_op_duration_seconds_count{volume="m",op="write"}'), 2);
  assert.equal(sample(text, 'tidemark_volume_changed_tracks{volume="m"}'), 2);
  assert.equal(sample(text, 'tidemark_volumes'), 1);
  assert.match(text, /^tidemark_process_cpu_seconds_total /m, 'default process metrics');

  const client = await RawNbdClient.connect(daemon.nbdPort);
  try {
    await client.greeting();
    await client.go('m');
    assert.equal(sample(await metrics(), 'tidemark_nbd_connections'), 1);
    assert.equal(sample(await metrics(), 'tidemark_volume_exports{volume="m"}'), 1);
  } finally {
    client.close();
  }
  await waitFor('the connection gauge to drop', async () => sample(await metrics(), 'tidemark_nbd_connections') === 0);

  await api(daemon, 'DELETE', '/v1/volumes/m');
  assert.doesNotMatch(await metrics(), /volume="m"/, 'a deleted volume leaves no series behind');
});

test('docs/api/openapi.json is exactly what the daemon serves', { timeout: 10_000 }, async () => {
  const response = await fetch(`${daemon.apiUrl}/openapi.json`, { headers: { authorization: `Bearer ${daemon.token}` }, signal: AbortSignal.timeout(5000) });
  const served = await response.text();
  const committed = await readFile(join(repoRoot, 'docs', 'api', 'openapi.json'), 'utf8');
  assert.equal(committed, served,
    'docs/api/openapi.json is stale: run `npm run build && node scripts/write-openapi.mjs` and commit the result');
  const doc = JSON.parse(served) as { openapi: string; paths: Record<string, Record<string, unknown>> };
  assert.equal(doc.openapi, '3.1.0');
  for (const [path, method] of [['/v1/volumes', 'post'], ['/v1/volumes/{name}', 'delete'], ['/v1/volumes/{name}/changes', 'get'], ['/metrics', 'get']] as const) {
    assert.ok(doc.paths[path]?.[method], `${method} ${path} documented`);
  }
});

// The host-operation metrics kept in plain numbers must expose exactly what prom-client's own
// Counter and Histogram would for the same operations: same sample lines, labels, order of series.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Histogram, Registry } from 'prom-client';
import { OpMetrics } from '../../src/app/observe/op-metrics.js';
import { Prng } from '../../src/core/lib/prng.js';

const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const NAMES = {
  ops: { name: 't_ops_total', help: 'ops' },
  bytes: { name: 't_bytes_total', help: 'bytes' },
  latency: { name: 't_duration_seconds', help: 'latency', buckets: BUCKETS },
};

function reference(): { registry: Registry; record(volume: string, op: string, bytes: number, seconds: number): void; forget(volume: string): void } {
  const registry = new Registry();
  const registers = [registry];
  const ops = new Counter({ name: NAMES.ops.name, help: NAMES.ops.help, labelNames: ['volume', 'op'], registers });
  const bytes = new Counter({ name: NAMES.bytes.name, help: NAMES.bytes.help, labelNames: ['volume', 'op'], registers });
  const latency = new Histogram({ name: NAMES.latency.name, help: NAMES.latency.help, labelNames: ['volume', 'op'], buckets: BUCKETS, registers });
  const seen = new Set<string>();
  return {
    registry,
    record(volume, op, n, seconds) {
      seen.add(`${volume}\0${op}`);
      ops.labels(volume, op).inc();
      bytes.labels(volume, op).inc(n);
      latency.labels(volume, op).observe(seconds);
    },
    forget(volume) {
      for (const key of seen) {
        const [v, op] = key.split('\0') as [string, string];
        if (v !== volume) continue;
        ops.remove(v, op);
        bytes.remove(v, op);
        latency.remove(v, op);
      }
    },
  };
}

test('the exposition equals prom-client\'s Counter and Histogram for the same operations, also after a volume is forgotten', async () => {
  const prng = new Prng(7);
  const ref = reference();
  const registry = new Registry();
  const ours = new OpMetrics(registry, NAMES);
  const volumes = ['a', 'b', 'c'];
  const ops = ['read', 'write', 'zero', 'trim', 'flush'];
  for (let i = 0; i < 2000; i++) {
    const volume = prng.pick(volumes);
    const op = prng.pick(ops);
    const bytes = op === 'flush' ? 0 : prng.int(1, 64) * 4096;
    // Latencies across every bucket, exactly on bounds too, and beyond the last one.
    const seconds = prng.chance(0.1) ? prng.pick(BUCKETS) : prng.next() ** 4 * 4;
    ref.record(volume, op, bytes, seconds);
    ours.record(volume, op, bytes, seconds);
  }
  assert.equal(await registry.metrics(), await ref.registry.metrics());
  ref.forget('b');
  ours.forget('b');
  const after = await registry.metrics();
  assert.equal(after, await ref.registry.metrics());
  assert.ok(!after.includes('volume="b"'), 'the forgotten volume has no series');
  assert.ok(after.includes('t_duration_seconds_bucket{le="+Inf",volume="a",op='), 'histogram lines are there');
});

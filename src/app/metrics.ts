// Prometheus metrics for one array: per-volume operation counters and latency, NBD connections,
// volume count and change-tracker size, plus the default process metrics. Each array has its own
// registry so several arrays in one process (tests, the simulator) do not collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OpKind } from './volume/volume.js';

const OP_KINDS: readonly OpKind[] = ['read', 'write', 'zero', 'trim', 'flush'];

/** From 50 µs (a page-cache hit) to 2.5 s (a stalled disk). */
const LATENCY_BUCKETS_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface VolumeStats {
  readonly name: string;
  readonly changedTracks: number;
  readonly exports: number;
}

interface OpSeries {
  readonly ops: Counter.Internal;
  readonly bytes: Counter.Internal;
  readonly latency: Histogram.Internal<'volume' | 'op'>;
}

export class ArrayMetrics {
  readonly registry = new Registry();
  private readonly ops: Counter<'volume' | 'op'>;
  private readonly bytes: Counter<'volume' | 'op'>;
  private readonly latency: Histogram<'volume' | 'op'>;
  private readonly connections: Gauge;
  /** Label lookups hash an object; the I/O path reuses the bound series instead. */
  private readonly series = new Map<string, OpSeries>();

  constructor(private readonly nowMs: () => number, volumeStats: () => readonly VolumeStats[]) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tidemark_' });
    this.ops = new Counter({
      name: 'tidemark_volume_ops_total', help: 'Completed host operations per volume and kind.',
      labelNames: ['volume', 'op'], registers,
    });
    this.bytes = new Counter({
      name: 'tidemark_volume_bytes_total', help: 'Bytes read, written, zeroed or trimmed by hosts, per volume and kind.',
      labelNames: ['volume', 'op'], registers,
    });
    this.latency = new Histogram({
      name: 'tidemark_volume_op_duration_seconds', help: 'Host operation latency inside the array, per volume and kind.',
      labelNames: ['volume', 'op'], buckets: LATENCY_BUCKETS_SECONDS, registers,
    });
    this.connections = new Gauge({ name: 'tidemark_nbd_connections', help: 'Open NBD client connections.', registers });
    new Gauge({
      name: 'tidemark_volumes', help: 'Volumes defined on the array.', registers,
      collect() { this.set(volumeStats().length); },
    });
    new Gauge({
      name: 'tidemark_volume_changed_tracks', help: 'Tracks changed since the change tracker was last reset.',
      labelNames: ['volume'], registers,
      collect() {
        this.reset();
        for (const v of volumeStats()) this.set({ volume: v.name }, v.changedTracks);
      },
    });
    new Gauge({
      name: 'tidemark_volume_exports', help: 'NBD connections using each volume.',
      labelNames: ['volume'], registers,
      collect() {
        this.reset();
        for (const v of volumeStats()) this.set({ volume: v.name }, v.exports);
      },
    });
  }

  /** The ArrayService hook, called after every completed host operation. */
  readonly onOp = (volume: string, kind: OpKind, bytes: number, startedAtMs: number): void => {
    const key = `${volume}\0${kind}`;
    let s = this.series.get(key);
    if (!s) {
      s = { ops: this.ops.labels(volume, kind), bytes: this.bytes.labels(volume, kind), latency: this.latency.labels(volume, kind) };
      this.series.set(key, s);
    }
    s.ops.inc();
    if (bytes > 0) s.bytes.inc(bytes);
    s.latency.observe(Math.max(0, this.nowMs() - startedAtMs) / 1000);
  };

  readonly onConnection = (delta: 1 | -1): void => {
    this.connections.inc(delta);
  };

  /** Drops a deleted volume's series so label sets do not grow without bound. */
  forgetVolume(volume: string): void {
    for (const op of OP_KINDS) {
      this.series.delete(`${volume}\0${op}`);
      this.ops.remove(volume, op);
      this.bytes.remove(volume, op);
      this.latency.remove(volume, op);
    }
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

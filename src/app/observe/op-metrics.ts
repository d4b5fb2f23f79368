// Host operation counters and the latency histogram per volume and kind, kept as plain numbers on
// the I/O path and turned into Prometheus samples only when scraped. prom-client's labelled
// children validate and hash their label set on every inc/observe, ~5 % of the event loop under
// 4 KiB writes; here an operation costs a map lookup and a few additions. The exposition is the
// one prom-client's Counter and Histogram give (test/unit/op-metrics.test.ts compares them).
import type { Metric, Registry } from 'prom-client';

interface Series {
  readonly labels: { readonly volume: string; readonly op: string };
  ops: number;
  bytes: number;
  sum: number;
  /** Observations per bucket (not cumulative); the last slot counts those above every bound. */
  readonly buckets: Float64Array;
}

interface Sample {
  readonly value: number;
  readonly labels: Record<string, string | number>;
  readonly sharedLabels?: Record<string, string>;
  readonly metricName?: string;
}

export interface OpMetricNames {
  readonly ops: { readonly name: string; readonly help: string };
  readonly bytes: { readonly name: string; readonly help: string };
  readonly latency: { readonly name: string; readonly help: string; readonly buckets: readonly number[] };
}

export class OpMetrics {
  /** Every series, in the order they appeared (the exposition's order). */
  private readonly series = new Map<string, Series>();
  /** The same series by volume, then kind: found without building a key string per operation. */
  private readonly byVolume = new Map<string, Map<string, Series>>();
  private readonly bounds: readonly number[];

  constructor(registry: Registry, names: OpMetricNames) {
    this.bounds = [...names.latency.buckets].sort((a, b) => a - b);
    const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]): void => {
      const get = async (): Promise<object> => ({ name, help, type, aggregator: 'sum', values: values() });
      // The registry reads name, help, type and get(); a prom-client Metric needs nothing else here.
      registry.registerMetric({ name, help, type, aggregator: 'sum', get } as unknown as Metric);
    };
    metric(names.ops.name, names.ops.help, 'counter', () => [...this.series.values()].map((s) => ({ value: s.ops, labels: { ...s.labels } })));
    metric(names.bytes.name, names.bytes.help, 'counter', () => [...this.series.values()].map((s) => ({ value: s.bytes, labels: { ...s.labels } })));
    metric(names.latency.name, names.latency.help, 'histogram', () => this.histogramSamples(names.latency.name));
  }

  /** One completed operation; `seconds` is its latency. */
  record(volume: string, op: string, bytes: number, seconds: number): void {
    let ofVolume = this.byVolume.get(volume);
    if (!ofVolume) this.byVolume.set(volume, ofVolume = new Map());
    let s = ofVolume.get(op);
    if (!s) {
      s = { labels: { volume, op }, ops: 0, bytes: 0, sum: 0, buckets: new Float64Array(this.bounds.length + 1) };
      ofVolume.set(op, s);
      this.series.set(`${volume}\0${op}`, s);
    }
    s.ops++;
    s.bytes += bytes;
    s.sum += seconds;
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]!) i++;
    s.buckets[i]!++;
  }

  /** Drops a volume's series (a deleted volume): label sets must not grow without bound. */
  forget(volume: string): void {
    for (const [key, s] of this.series) if (s.labels.volume === volume) this.series.delete(key);
    this.byVolume.delete(volume);
  }

  private histogramSamples(name: string): Sample[] {
    const out: Sample[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (const [i, bound] of this.bounds.entries()) {
        cumulative += s.buckets[i]!;
        out.push({ value: cumulative, labels: { le: bound }, sharedLabels: { ...s.labels }, metricName: `${name}_bucket` });
      }
      out.push(
        { value: s.ops, labels: { le: '+Inf' }, sharedLabels: { ...s.labels }, metricName: `${name}_bucket` },
        { value: s.sum, labels: {}, sharedLabels: { ...s.labels }, metricName: `${name}_sum` },
        { value: s.ops, labels: {}, sharedLabels: { ...s.labels }, metricName: `${name}_count` },
      );
    }
    return out;
  }
}

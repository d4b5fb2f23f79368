// What the array looked like over the last hour, kept in memory so the dashboard can plot lag and
// I/O without Prometheus: every tick (1 s) it reads pair, peer, volume and clone figures; it turns
// state changes it sees into timeline events (a pair's state is derived from its record, link and
// owed tracks, so no single line of code decides "synchronized" — it is observed here), and every
// few ticks it appends one sample per object to that object's ring.
import type { EventTimeline } from './event-timeline.js';
import { SampleRing } from './sample-ring.js';
import type { IoTotals } from './io-counters.js';

export interface WatchedPair {
  readonly pair: string;
  /** The pair id, the same on both arrays (what the event port names pairs by). */
  readonly id: string;
  readonly peer: string;
  readonly role: string;
  readonly state: string;
  readonly lagSeconds: number;
  readonly tracksOwed: number;
  readonly bytesOwed: number;
}
export interface WatchedPeer {
  readonly name: string;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  /** The link's last measured round trip, or null. */
  readonly rttMs: number | null;
}
export interface WatchedClone {
  readonly std: string;
  readonly clone: string;
  readonly state: string;
}

export interface EstateSources {
  pairs(): WatchedPair[];
  peers(): WatchedPeer[];
  volumes(): string[];
  io(volume: string): IoTotals;
  clones(): WatchedClone[];
}

export interface HistoryOptions {
  readonly nowMs: () => number;
  readonly timeline: EventTimeline;
  /** How often states are compared (default 1 s). */
  readonly tickMs?: number;
  /** Ticks per history sample (default 5: a sample every 5 s). */
  readonly ticksPerSample?: number;
  /** Samples kept per object (default 720: an hour at 5 s). */
  readonly samplesKept?: number;
  /** A look that failed (the sampler never takes the array down; it tries again next tick). */
  readonly onError?: (error: unknown) => void;
}

interface PairPoint { t: number; lagSeconds: number; tracksOwed: number; bytesOwed: number }
interface RatePoint { t: number; a: number; b: number; c: number; d: number }
interface PeerPoint { t: number; sent: number; received: number; rttMs: number | null }

/** Columnar series (what uPlot plots), `t` in epoch milliseconds. */
export interface HistoryBody {
  readonly sampleMs: number;
  readonly now: number;
  readonly pairs: Record<string, { t: number[]; lagSeconds: number[]; tracksOwed: number[]; bytesOwed: number[] }>;
  readonly volumes: Record<string, { t: number[]; readOpsPerSecond: number[]; writeOpsPerSecond: number[]; readBytesPerSecond: number[]; writeBytesPerSecond: number[] }>;
  readonly peers: Record<string, { t: number[]; sentBytesPerSecond: number[]; receivedBytesPerSecond: number[]; rttMs: Array<number | null> }>;
}

const rate = (now: number, before: number | undefined, seconds: number): number =>
  before === undefined || now < before ? 0 : Math.round(((now - before) / seconds) * 10) / 10;

export class EstateHistory {
  private readonly tickMs: number;
  private readonly ticksPerSample: number;
  private readonly kept: number;
  private readonly pairStates = new Map<string, string>();
  private readonly cloneStates = new Map<string, string>();
  private readonly pairRings = new Map<string, SampleRing<PairPoint>>();
  private readonly volumeRings = new Map<string, SampleRing<RatePoint>>();
  private readonly peerRings = new Map<string, SampleRing<PeerPoint>>();
  /** Worst lag seen per pair since the last sample: a plot must not miss a spike between samples. */
  private readonly worstLag = new Map<string, number>();
  private lastTotals = new Map<string, { t: number; a: number; b: number; c: number; d: number }>();
  private ticks = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly sources: EstateSources, private readonly options: HistoryOptions) {
    this.tickMs = options.tickMs ?? 1000;
    this.ticksPerSample = options.ticksPerSample ?? 5;
    this.kept = options.samplesKept ?? 720;
  }

  get sampleMs(): number {
    return this.tickMs * this.ticksPerSample;
  }

  start(): void {
    if (this.timer) return;
    const look = (): void => {
      try {
        this.tick();
      } catch (error) {
        this.options.onError?.(error);
      }
    };
    look(); // the states as the array starts: later changes are compared with these
    this.timer = setInterval(look, this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look at the estate (exposed for tests and for a last look at shutdown). */
  tick(): void {
    const pairs = this.sources.pairs();
    this.watchPairs(pairs);
    this.watchClones(this.sources.clones());
    if (this.ticks++ % this.ticksPerSample === 0) this.sample(pairs);
  }

  private watchPairs(pairs: WatchedPair[]): void {
    const seen = new Set<string>();
    for (const p of pairs) {
      seen.add(p.pair);
      const before = this.pairStates.get(p.pair);
      if (before === undefined && this.ticks > 0) {
        this.options.timeline.record('pair', `pair ${p.pair}: ${p.state}`, p.pair, { to: p.state, role: p.role, peer: p.peer, tracksOwed: p.tracksOwed });
      } else if (before !== undefined && before !== p.state) {
        this.options.timeline.record('pair', `pair ${p.pair}: ${before} → ${p.state}`, p.pair,
          { from: before, to: p.state, role: p.role, peer: p.peer, tracksOwed: p.tracksOwed });
      }
      this.pairStates.set(p.pair, p.state);
      this.worstLag.set(p.pair, Math.max(this.worstLag.get(p.pair) ?? 0, p.lagSeconds));
    }
    for (const name of [...this.pairStates.keys()]) {
      if (seen.has(name)) continue;
      this.pairStates.delete(name);
      this.pairRings.delete(name);
      this.worstLag.delete(name);
    }
  }

  private watchClones(clones: WatchedClone[]): void {
    const seen = new Set<string>();
    for (const c of clones) {
      const key = `${c.std}/${c.clone}`;
      seen.add(key);
      const before = this.cloneStates.get(key);
      if (before === undefined && this.ticks > 0) {
        this.options.timeline.record('clone', `clone session ${key}: ${c.state}`, key, { to: c.state });
      } else if (before !== undefined && before !== c.state) {
        this.options.timeline.record('clone', `clone session ${key}: ${before} → ${c.state}`, key, { from: before, to: c.state });
      }
      this.cloneStates.set(key, c.state);
    }
    for (const key of [...this.cloneStates.keys()]) {
      if (seen.has(key)) continue;
      this.cloneStates.delete(key);
      this.options.timeline.record('clone', `clone session ${key} ended`, key, {});
    }
  }

  private ring<T>(rings: Map<string, SampleRing<T>>, key: string): SampleRing<T> {
    let ring = rings.get(key);
    if (!ring) rings.set(key, ring = new SampleRing<T>(this.kept));
    return ring;
  }

  private sample(pairs: WatchedPair[]): void {
    const t = this.options.nowMs();
    for (const p of pairs) {
      this.ring(this.pairRings, p.pair).push({ t, lagSeconds: this.worstLag.get(p.pair) ?? p.lagSeconds, tracksOwed: p.tracksOwed, bytesOwed: p.bytesOwed });
      this.worstLag.set(p.pair, 0);
    }
    const totals = new Map<string, { t: number; a: number; b: number; c: number; d: number }>();
    const volumes = this.sources.volumes();
    for (const v of volumes) {
      const io = this.sources.io(v);
      totals.set(`v:${v}`, { t, a: io.readOps, b: io.writeOps, c: io.readBytes, d: io.writeBytes });
    }
    const peers = this.sources.peers();
    const rtts = new Map(peers.map((p) => [p.name, p.rttMs]));
    for (const p of peers) totals.set(`p:${p.name}`, { t, a: p.bytesSent, b: p.bytesReceived, c: 0, d: 0 });
    for (const [key, now] of totals) {
      const before = this.lastTotals.get(key);
      if (!before) continue; // a rate needs two readings
      const seconds = Math.max(0.001, (now.t - before.t) / 1000);
      const point = { t, a: rate(now.a, before.a, seconds), b: rate(now.b, before.b, seconds), c: rate(now.c, before.c, seconds), d: rate(now.d, before.d, seconds) };
      if (key.startsWith('v:')) this.ring(this.volumeRings, key.slice(2)).push(point);
      else this.ring(this.peerRings, key.slice(2)).push({ t, sent: point.a, received: point.b, rttMs: rtts.get(key.slice(2)) ?? null });
    }
    this.lastTotals = totals;
    const keepOnly = (rings: Map<string, unknown>, names: string[]): void => {
      const live = new Set(names);
      for (const name of [...rings.keys()]) if (!live.has(name)) rings.delete(name);
    };
    keepOnly(this.volumeRings, volumes);
    keepOnly(this.peerRings, peers.map((p) => p.name));
  }

  /** The samples newer than `sinceMs` (0: all an hour holds). */
  history(sinceMs = 0): HistoryBody {
    const newer = (p: { t: number }): boolean => p.t > sinceMs;
    const pairs: HistoryBody['pairs'] = {};
    for (const [name, ring] of this.pairRings) {
      const points = ring.toArray(newer);
      pairs[name] = { t: points.map((p) => p.t), lagSeconds: points.map((p) => p.lagSeconds), tracksOwed: points.map((p) => p.tracksOwed), bytesOwed: points.map((p) => p.bytesOwed) };
    }
    const volumes: HistoryBody['volumes'] = {};
    for (const [name, ring] of this.volumeRings) {
      const points = ring.toArray(newer);
      volumes[name] = {
        t: points.map((p) => p.t), readOpsPerSecond: points.map((p) => p.a), writeOpsPerSecond: points.map((p) => p.b),
        readBytesPerSecond: points.map((p) => p.c), writeBytesPerSecond: points.map((p) => p.d),
      };
    }
    const peers: HistoryBody['peers'] = {};
    for (const [name, ring] of this.peerRings) {
      const points = ring.toArray(newer);
      peers[name] = {
        t: points.map((p) => p.t), sentBytesPerSecond: points.map((p) => p.sent), receivedBytesPerSecond: points.map((p) => p.received),
        rttMs: points.map((p) => p.rttMs),
      };
    }
    return { sampleMs: this.sampleMs, now: this.options.nowMs(), pairs, volumes, peers };
  }
}

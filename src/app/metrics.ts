// Prometheus metrics for one array: per-volume operation counters and latency, NBD connections,
// volume count and change-tracker size, plus the default process metrics. Each array has its own
// registry so several arrays in one process (tests, the simulator) do not collide.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { OpMetrics } from './observe/op-metrics.js';
import type { OpKind } from './volume/volume.js';

/** From 50 µs (a page-cache hit) to 2.5 s (a stalled disk). */
const LATENCY_BUCKETS_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** What /metrics shows of one pair half. */
export interface PairStats {
  readonly pair: string;
  readonly peer: string;
  readonly role: string;
  readonly state: string;
  readonly tracksOwed: number;
  readonly bytesOwed: number;
  readonly lagSeconds: number;
  readonly generation: number;
  readonly bytesShipped: number;
  readonly writesForwarded: number;
  readonly bytesPulled: number;
  /** async: cycle data held in memory and spilled to disk on R1, and unplanned falls back to bitmaps. */
  readonly cycleMemoryBytes: number;
  readonly cycleSpilledBytes: number;
  readonly cycleFallbacks: number;
}

export interface PeerStats {
  readonly peer: string;
  readonly up: boolean;
  readonly bytesSent: number;
  readonly bytesReceived: number;
  readonly retransmittedPackets: number;
}

/** A consistency group this array coordinates. */
export interface GroupStats {
  readonly group: string;
  readonly tag: number;
  readonly switches: number;
  readonly members: number;
  /** Members the coordinator is waiting for now. */
  readonly waiting: number;
  /** Seconds since the last completed switch. */
  readonly lastSwitchAgeSeconds: number;
  /** 1 while the group reports itself stalled (no switch for longer than its bound). */
  readonly stalled: number;
}

export interface VolumeStats {
  readonly name: string;
  readonly changedTracks: number;
  readonly exports: number;
}

export class ArrayMetrics {
  readonly registry = new Registry();
  private readonly hostOps: OpMetrics;
  private readonly connections: Gauge;

  constructor(
    private readonly nowMs: () => number,
    volumeStats: () => readonly VolumeStats[],
    pairStats: () => readonly PairStats[] = () => [],
    peerStats: () => readonly PeerStats[] = () => [],
    groupStats: () => readonly GroupStats[] = () => [],
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'tidemark_' });
    this.hostOps = new OpMetrics(this.registry, {
      ops: { name: 'tidemark_volume_ops_total', help: 'Completed host operations per volume and kind.' },
      bytes: { name: 'tidemark_volume_bytes_total', help: 'Bytes read, written, zeroed or trimmed by hosts, per volume and kind.' },
      latency: {
        name: 'tidemark_volume_op_duration_seconds', help: 'Host operation latency inside the array, per volume and kind.',
        buckets: LATENCY_BUCKETS_SECONDS,
      },
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
    this.registerReplication(registers, pairStats, peerStats);
    this.registerGroups(registers, groupStats);
  }

  /** The NBD server's shared reply budget: buffered bytes now, the cap, connections refused at it. */
  registerNbd(budget: { readonly bufferedBytes: number; readonly capBytes: number; readonly peakBytes: number; readonly refused: number }): void {
    const registers = [this.registry];
    const gauge = (name: string, help: string, value: () => number): void => {
      new Gauge({ name, help, registers, collect() { this.set(value()); } });
    };
    gauge('tidemark_nbd_reply_buffered_bytes', 'NBD reply bytes held by the array (read, not yet passed to the kernel), all connections.', () => budget.bufferedBytes);
    gauge('tidemark_nbd_reply_buffered_peak_bytes', 'Most NBD reply bytes held at once since start.', () => budget.peakBytes);
    gauge('tidemark_nbd_reply_buffer_cap_bytes', 'Cap on NBD reply bytes held (array start --nbd-reply-buffer).', () => budget.capBytes);
    new Counter({
      name: 'tidemark_nbd_connections_refused_total', help: 'NBD connections refused because reply buffers were at their cap.', registers,
      collect() { this.reset(); this.inc(budget.refused); },
    });
  }

  /** Relay tunnels (docs/design/routing-and-relay.md): what this array carries for its peers. */
  registerRelay(stats: () => { readonly ends: number; readonly relayed: number; readonly relayedBytes: number }): void {
    const registers = [this.registry];
    new Gauge({ name: 'tidemark_relay_tunnels', help: 'Tunnels this array relays between two of its peers now.', registers, collect() { this.set(stats().relayed); } });
    new Gauge({ name: 'tidemark_relay_tunnel_ends', help: 'Link connections to relayed peers this array holds now (dialled or accepted through a relay).', registers,
      collect() { this.set(stats().ends); } });
    new Counter({
      name: 'tidemark_relay_bytes_total', help: 'Bytes this array passed on as a relay (sealed frames of other arrays\' links) since it started.', registers,
      collect() { this.reset(); this.inc(stats().relayedBytes); },
    });
  }

  /** Consistency groups this array coordinates. */
  /** Cascade sessions (SPEC §7): how far behind the far site's complete image is, and what cycles ship. */
  registerCascades(stats: () => ReadonlyArray<{ readonly name: string; readonly peer: string; readonly cycles: number;
    readonly consistentAtMs: number | null; readonly bytesShipped: number; readonly bytesShippedLast: number }>): void {
    const registers = [this.registry];
    const nowMs = this.nowMs;
    const gauge = (name: string, help: string, value: (c: ReturnType<typeof stats>[number]) => number | null): void => {
      new Gauge({
        name, help, labelNames: ['cascade', 'peer'], registers,
        collect() {
          this.reset();
          for (const c of stats()) {
            const v = value(c);
            if (v !== null) this.set({ cascade: c.name, peer: c.peer }, v);
          }
        },
      });
    };
    gauge('tidemark_cascade_cycles', 'Completed cascade cycles.', (c) => c.cycles);
    gauge('tidemark_cascade_consistent_age_seconds', 'Age of the image the far site holds whole (absent before the first cycle): the RPO there.',
      (c) => (c.consistentAtMs === null ? null : Math.max(0, (nowMs() - c.consistentAtMs) / 1000)));
    gauge('tidemark_cascade_shipped_bytes', 'Bytes the cascade shipped to the far site over its life.', (c) => c.bytesShipped);
    gauge('tidemark_cascade_last_cycle_bytes', 'Bytes the last completed cycle shipped.', (c) => c.bytesShippedLast);
  }

  private registerGroups(registers: Registry[], groupStats: () => readonly GroupStats[]): void {
    const groupGauge = (name: string, help: string, value: (g: GroupStats) => number): void => {
      new Gauge({
        name, help, labelNames: ['group'], registers,
        collect() {
          this.reset();
          for (const g of groupStats()) this.set({ group: g.group }, value(g));
        },
      });
    };
    groupGauge('tidemark_group_tag', 'The group\'s current capture tag (grows at every switch).', (g) => g.tag);
    groupGauge('tidemark_group_switches', 'Cycle switches since the coordinator started.', (g) => g.switches);
    groupGauge('tidemark_group_members', 'Members of the group.', (g) => g.members);
    groupGauge('tidemark_group_last_switch_age_seconds', 'Seconds since the group last switched cycles (the R2 images age at least this much).', (g) => g.lastSwitchAgeSeconds);
    groupGauge('tidemark_group_stalled', '1 while the group has not switched for longer than its stall bound (group show says why).', (g) => g.stalled);
    groupGauge('tidemark_group_waiting_members', 'Members the coordinator is waiting for (a group that stays above 0 is not switching).', (g) => g.waiting);
  }

  /** Pair and link gauges, read from the replication layer at scrape time. */
  private registerReplication(registers: Registry[], pairStats: () => readonly PairStats[], peerStats: () => readonly PeerStats[]): void {
    const pairGauge = (name: string, help: string, value: (p: PairStats) => number): void => {
      new Gauge({
        name, help, labelNames: ['pair', 'peer', 'role'], registers,
        collect() {
          this.reset();
          for (const p of pairStats()) this.set({ pair: p.pair, peer: p.peer, role: p.role }, value(p));
        },
      });
    };
    pairGauge('tidemark_pair_tracks_owed', 'Tracks R1 still has to ship to R2.', (p) => p.tracksOwed);
    pairGauge('tidemark_pair_bytes_owed', 'Bytes R1 still has to ship to R2 (whole tracks where the changed records are unknown).', (p) => p.bytesOwed);
    pairGauge('tidemark_pair_lag_seconds', 'Age of the oldest change R2 has not got.', (p) => p.lagSeconds);
    pairGauge('tidemark_pair_generation', 'Generation of the pair (grows at every change of the writable side).', (p) => p.generation);
    pairGauge('tidemark_pair_shipped_bytes', 'Record bytes shipped by background copies since the array started.', (p) => p.bytesShipped);
    pairGauge('tidemark_pair_forwarded_writes', 'Host writes forwarded synchronously since the array started.', (p) => p.writesForwarded);
    pairGauge('tidemark_pair_pulled_bytes', 'Bytes taken from R2 by failback/restore since the array started.', (p) => p.bytesPulled);
    pairGauge('tidemark_pair_cycle_memory_bytes', "async: record data of R1's cycles held in memory.", (p) => p.cycleMemoryBytes);
    pairGauge('tidemark_pair_cycle_spilled_bytes', "async: R1's cycle data spilled to disk (record slots).", (p) => p.cycleSpilledBytes);
    pairGauge('tidemark_pair_cycle_fallbacks', 'async: times the cycles fell back to bitmaps on their own (limit reached, spill failed) since the array started.', (p) => p.cycleFallbacks);
    new Gauge({
      name: 'tidemark_pair_state', help: 'Pair state: 1 for the current state of each pair half.',
      labelNames: ['pair', 'peer', 'role', 'state'], registers,
      collect() {
        this.reset();
        for (const p of pairStats()) this.set({ pair: p.pair, peer: p.peer, role: p.role, state: p.state }, 1);
      },
    });
    const peerGauge = (name: string, help: string, value: (p: PeerStats) => number): void => {
      new Gauge({
        name, help, labelNames: ['peer'], registers,
        collect() {
          this.reset();
          for (const p of peerStats()) this.set({ peer: p.peer }, value(p));
        },
      });
    };
    peerGauge('tidemark_link_up', 'Whether the replication link to the peer is up.', (p) => (p.up ? 1 : 0));
    peerGauge('tidemark_link_sent_bytes', 'Link bytes sent to the peer (frames, headers included) since the array started.', (p) => p.bytesSent);
    peerGauge('tidemark_link_received_bytes', 'Link bytes received from the peer since the array started.', (p) => p.bytesReceived);
    peerGauge('tidemark_link_retransmitted_packets', 'Packets sent again after a reconnect.', (p) => p.retransmittedPackets);
  }

  /** The ArrayService hook, called after every completed host operation. */
  readonly onOp = (volume: string, kind: OpKind, bytes: number, startedAtMs: number): void => {
    this.hostOps.record(volume, kind, bytes, Math.max(0, this.nowMs() - startedAtMs) / 1000);
  };

  readonly onConnection = (delta: 1 | -1): void => {
    this.connections.inc(delta);
  };

  /** Drops a deleted volume's series so label sets do not grow without bound. */
  forgetVolume(volume: string): void {
    this.hostOps.forget(volume);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

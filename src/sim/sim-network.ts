// A deterministic simulated network for link endpoints. Connections are ordered byte streams with
// a delay, delivered in chunks split at random boundaries; faults: connection cuts (the tail in
// flight is lost; the ends notice at once or only through silence), partitions (traffic between
// two hosts vanishes until healed, so connections die by heartbeat timeout), corrupted bytes (the
// frame CRC must catch them) and host restarts (a new endpoint: a new session incarnation). With
// several streams per link every connection has its own delays, so packets really reorder.
import { frameToBytes } from '../core/link/frame.js';
import { LinkEndpoint } from '../core/link/endpoint.js';
import type { ConnId, LinkAction } from '../core/link/types.js';
import { assert, assertNever } from '../core/lib/assert.js';
import type { Prng } from '../core/lib/prng.js';
import type { Scheduler } from './scheduler.js';

export interface SimNetworkFaults {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  /** Written bytes are delivered in chunks of 1..maxChunkBytes. */
  readonly maxChunkBytes: number;
  /** Per byte sent: the chance its chunk arrives with one bit flipped. */
  readonly corruptByteProbability: number;
  readonly connectDelayMs: number;
}

export const QUIET_NETWORK: SimNetworkFaults = {
  minDelayMs: 1, maxDelayMs: 5, maxChunkBytes: 64 * 1024, corruptByteProbability: 0, connectDelayMs: 2,
};

interface Side {
  readonly host: SimLinkHost;
  /** The host's endpoint generation this side belongs to (a restart orphans old connections). */
  readonly generation: number;
  readonly connId: ConnId;
  /** Delivery time of the last chunk scheduled towards this side (streams stay ordered). */
  lastDeliveryMs: number;
  closed: boolean;
}

interface SimConn {
  readonly id: number;
  readonly dialer: Side;
  readonly acceptor: Side;
  /** Traffic is silently dropped from now on (cut without notice, partition). */
  blackholed: boolean;
  dead: boolean;
}

export interface SimNetworkStats {
  connections: number;
  chunks: number;
  corruptedChunks: number;
  cuts: number;
}

export class SimNetwork {
  private readonly hosts = new Map<string, SimLinkHost>();
  private readonly conns = new Set<SimConn>();
  private readonly partitioned = new Set<string>();
  private nextConn = 1;
  faults: SimNetworkFaults;
  readonly stats: SimNetworkStats = { connections: 0, chunks: 0, corruptedChunks: 0, cuts: 0 };

  constructor(readonly scheduler: Scheduler, readonly prng: Prng, faults: SimNetworkFaults = QUIET_NETWORK) {
    this.faults = faults;
  }

  get nowMs(): number {
    return this.scheduler.nowMs;
  }

  register(host: SimLinkHost): void {
    assert(!this.hosts.has(host.address), `address ${host.address} taken`);
    this.hosts.set(host.address, host);
  }

  /** Open connections (not yet dead). */
  openConnections(): number {
    let n = 0;
    for (const c of this.conns) if (!c.dead) n++;
    return n;
  }

  private pairKey(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  isPartitioned(a: string, b: string): boolean {
    return this.partitioned.has(this.pairKey(a, b));
  }

  /** Traffic between the two addresses vanishes; existing connections become black holes. */
  partition(a: string, b: string): void {
    this.partitioned.add(this.pairKey(a, b));
    for (const c of this.conns) {
      const ends = [c.dialer.host.address, c.acceptor.host.address];
      if (ends.includes(a) && ends.includes(b)) c.blackholed = true;
    }
  }

  heal(a: string, b: string): void {
    this.partitioned.delete(this.pairKey(a, b));
  }

  healAll(): void {
    this.partitioned.clear();
  }

  private delay(): number {
    return this.prng.int(this.faults.minDelayMs, this.faults.maxDelayMs);
  }

  /** Cuts one random live connection: the tail in flight is lost. `notify`: the ends see a reset. */
  cutRandom(notify: boolean): boolean {
    const live = [...this.conns].filter((c) => !c.dead);
    if (live.length === 0) return false;
    this.cut(this.prng.pick(live), notify, 'connection cut');
    return true;
  }

  private cut(conn: SimConn, notify: boolean, reason: string): void {
    if (conn.dead) return;
    this.stats.cuts++;
    if (!notify) {
      conn.blackholed = true; // the ends find out by silence (heartbeat timeout)
      return;
    }
    conn.dead = true;
    this.conns.delete(conn);
    for (const side of [conn.dialer, conn.acceptor]) {
      if (side.closed) continue;
      side.closed = true;
      this.scheduler.at(this.delay(), () => side.host.deliverClosed(side.generation, side.connId, reason));
    }
  }

  /** Cuts every connection of a host (it restarted), with a reset seen by the other ends. */
  cutHost(host: SimLinkHost): void {
    for (const c of [...this.conns]) if (c.dialer.host === host || c.acceptor.host === host) this.cut(c, true, 'peer restarted');
  }

  // ---- called by hosts ----

  connect(from: SimLinkHost, connId: ConnId, address: string): void {
    const generation = from.generation;
    this.scheduler.at(this.faults.connectDelayMs + this.delay(), () => {
      const to = this.hosts.get(address);
      if (!to || !to.listening || this.isPartitioned(from.address, address)) {
        from.deliverClosed(generation, connId, `connect to ${address} failed`);
        return;
      }
      if (from.generation !== generation) return;
      const acceptedId = to.endpoint.accept(this.nowMs);
      if (acceptedId === undefined) {
        from.deliverClosed(generation, connId, 'connection refused');
        return;
      }
      const conn: SimConn = {
        id: this.nextConn++,
        dialer: { host: from, generation, connId, lastDeliveryMs: 0, closed: false },
        acceptor: { host: to, generation: to.generation, connId: acceptedId, lastDeliveryMs: 0, closed: false },
        blackholed: false,
        dead: false,
      };
      this.conns.add(conn);
      this.stats.connections++;
      from.bind(connId, conn);
      to.bind(acceptedId, conn);
      from.deliverConnected(generation, connId);
      to.drain();
    });
  }

  write(conn: SimConn, from: SimLinkHost, bytes: Uint8Array): void {
    if (conn.dead || conn.blackholed) return;
    const target = conn.dialer.host === from ? conn.acceptor : conn.dialer;
    const source = conn.dialer.host === from ? conn.dialer : conn.acceptor;
    if (source.closed || target.closed) return;
    let at = 0;
    while (at < bytes.length) {
      const n = Math.min(bytes.length - at, this.prng.int(1, this.faults.maxChunkBytes));
      const chunk = bytes.slice(at, at + n);
      at += n;
      if (this.faults.corruptByteProbability > 0 && this.prng.chance(n * this.faults.corruptByteProbability)) {
        const i = this.prng.int(0, chunk.length - 1);
        chunk[i] = chunk[i]! ^ (1 << this.prng.int(0, 7));
        this.stats.corruptedChunks++;
      }
      const when = Math.max(target.lastDeliveryMs, this.nowMs + this.delay());
      target.lastDeliveryMs = when;
      this.stats.chunks++;
      this.scheduler.at(when - this.nowMs, () => {
        if (conn.dead || conn.blackholed || target.closed) return;
        target.host.deliverData(target.generation, target.connId, chunk);
      });
    }
  }

  /** An orderly close: what was written arrives first, then the other end sees the close. */
  close(conn: SimConn, from: SimLinkHost, reason: string): void {
    const source = conn.dialer.host === from ? conn.dialer : conn.acceptor;
    const target = conn.dialer.host === from ? conn.acceptor : conn.dialer;
    source.closed = true;
    if (conn.dead) return;
    const when = Math.max(target.lastDeliveryMs, this.nowMs + this.delay()) + 1;
    this.scheduler.at(when - this.nowMs, () => {
      conn.dead = true;
      this.conns.delete(conn);
      if (target.closed) return;
      target.closed = true;
      if (!conn.blackholed) target.host.deliverClosed(target.generation, target.connId, `peer closed: ${reason}`);
    });
  }
}

export interface SimLinkHandlers {
  onAction?(host: SimLinkHost, action: LinkAction): void;
}

/** One endpoint on the simulated network: performs its actions and runs its timer. */
export class SimLinkHost {
  endpoint: LinkEndpoint;
  generation = 0;
  listening = true;
  private readonly bound = new Map<ConnId, SimConn>();
  private tickAt: number | undefined;
  private tickToken = 0;

  constructor(
    private readonly net: SimNetwork,
    readonly address: string,
    private readonly makeEndpoint: (nowMs: number) => LinkEndpoint,
    private readonly handlers: SimLinkHandlers,
  ) {
    this.endpoint = makeEndpoint(net.nowMs);
    net.register(this);
  }

  /** A process restart: all connections die, the new endpoint has new incarnations. */
  restart(): void {
    this.net.cutHost(this);
    this.bound.clear();
    this.generation++;
    this.tickAt = undefined;
    this.endpoint = this.makeEndpoint(this.net.nowMs);
  }

  bind(connId: ConnId, conn: SimConn): void {
    this.bound.set(connId, conn);
  }

  deliverConnected(generation: number, connId: ConnId): void {
    if (generation !== this.generation) return;
    this.endpoint.handle({ kind: 'connected', connId }, this.net.nowMs);
    this.drain();
  }

  deliverData(generation: number, connId: ConnId, bytes: Uint8Array): void {
    if (generation !== this.generation) return;
    this.endpoint.handle({ kind: 'data', connId, bytes }, this.net.nowMs);
    this.drain();
  }

  deliverClosed(generation: number, connId: ConnId, reason: string): void {
    if (generation !== this.generation) return;
    this.bound.delete(connId);
    this.endpoint.handle({ kind: 'closed', connId, reason }, this.net.nowMs);
    this.drain();
  }

  /** Performs every pending action, then (re)arms the timer. */
  drain(): void {
    for (let action = this.endpoint.poll(); action; action = this.endpoint.poll()) {
      this.perform(action);
      this.handlers.onAction?.(this, action);
    }
    this.armTimer();
  }

  private perform(action: LinkAction): void {
    switch (action.kind) {
      case 'dial': return this.net.connect(this, action.connId, action.address);
      case 'send': {
        const conn = this.bound.get(action.connId);
        if (conn) this.net.write(conn, this, frameToBytes(action.frame));
        return;
      }
      case 'close': {
        const conn = this.bound.get(action.connId);
        this.bound.delete(action.connId);
        if (conn) this.net.close(conn, this, action.reason);
        return;
      }
      case 'deliver':
      case 'peer-up':
      case 'peer-down':
      case 'session-reset':
      case 'send-space':
      case 'log':
        return;
      default: return assertNever(action, 'link action');
    }
  }

  private armTimer(): void {
    const deadline = this.endpoint.nextDeadlineMs();
    if (deadline === undefined) return;
    const at = Math.max(deadline, this.net.nowMs);
    if (this.tickAt !== undefined && this.tickAt <= at) return;
    this.tickAt = at;
    const token = ++this.tickToken;
    const generation = this.generation;
    this.net.scheduler.at(at - this.net.nowMs, () => {
      if (token !== this.tickToken || generation !== this.generation) return;
      this.tickAt = undefined;
      this.endpoint.handle({ kind: 'tick' }, this.net.nowMs);
      this.drain();
    });
  }
}

// Cascade sessions of the middle array (SPEC §7, seed 000; docs/design/cascade.md): each runs the
// core CascadeMachine and carries out its actions with this array's clone sessions (R2VOL→CVOL) and
// a pair CVOL→CRVOL to the far array, whose clone CPROT keeps the last complete image. Records are
// persisted under `cascade/NAME` (checksummed); a restart resumes every session from its phase.
import { ErrorCode, TidemarkError, invalidArgument, isTidemarkError, notFound } from '../../core/errors.js';
import { decodeJson, encodeJson } from '../../core/lib/checksummed-record.js';
import { CascadeMachine, type CascadeAction, type CascadeFacts } from '../../core/cascade/cascade-machine.js';
import { MIN_CASCADE_EVERY_MS, newCascadeRecord, parseCascadeRecord, type CascadeRecord } from '../../core/cascade/cascade-record.js';
import { isValidVolumeName, VOLUME_NAME_RULE } from '../../core/volume/volume-record.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { Timers } from '../../ports/timers.js';
import type { CloneManager } from '../clone/clone-manager.js';
import type { PairManager } from '../replication/pair-manager.js';
import type { PeerRpc } from '../replication/peer-rpc.js';
import type { Volume } from '../volume/volume.js';
import { SourceWatch } from './source-watch.js';
// A session's view is the API's shape: the schema is its one definition.
import type { CascadeCreateBody, CascadeView } from '../../adapters/http/cascade-routes.js';

const KEY_PREFIX = 'cascade/';
const TICK_MS = 100;
/** Refreshing the far clone copies what CRVOL changed since its last split: allow for a big cycle. */
const REFRESH_TIMEOUT_MS = 15 * 60_000;
/** How long `close` waits for the session to end before it answers that it is closing. */
const CLOSE_ANSWER_MS = 20_000;

export interface CascadeHost {
  readonly meta: MetaStore;
  readonly timers: Timers;
  readonly clones: CloneManager;
  readonly pairs: PairManager;
  readonly rpc: PeerRpc;
  volume(name: string): Volume;
  checkPeer(name: string): void;
  peerLinkUp(name: string): boolean;
  exportCount(name: string): number;
  nowMs(): number;
  randomId(): string;
  onError(error: unknown, context: Record<string, unknown>): void;
  onEvent(message: string, fields: Record<string, unknown>): void;
}

interface Session {
  machine: CascadeMachine;
  running: boolean;
  closed: Array<() => void>;
}

export class CascadeManager {
  private readonly sessions = new Map<string, Session>();
  private readonly watch: SourceWatch;
  private readonly stopTicking: () => void;

  constructor(private readonly host: CascadeHost) {
    this.watch = new SourceWatch(host.rpc, (peer) => host.peerLinkUp(peer), () => host.nowMs(), host.randomId());
    this.stopTicking = host.timers.every(TICK_MS, () => {
      for (const name of this.sessions.keys()) this.tick(name);
    });
  }

  async load(): Promise<void> {
    for (const key of await this.host.meta.list(KEY_PREFIX)) {
      const bytes = await this.host.meta.read(key);
      if (!bytes) continue;
      const record = parseCascadeRecord(decodeJson(bytes, key), key);
      this.sessions.set(record.name, { machine: new CascadeMachine(record), running: false, closed: [] });
    }
  }

  /** The link to `peer` came up: a pair it feeds may now resync the volume a cascade splits. */
  peerUp(peer: string): void {
    this.watch.peerUp(peer, (p) => this.host.pairs.list().filter((x) => x.role === 'R2' && x.peer === p).map((x) => x.id));
  }

  // ---- commands ----

  async create(body: CascadeCreateBody): Promise<CascadeView> {
    const { name, volume, clone, peer, remoteVolume, remoteClone } = body;
    for (const [what, value] of [['name', name], ['volume', volume], ['clone', clone], ['remote volume', remoteVolume], ['remote clone', remoteClone]] as const) {
      if (!isValidVolumeName(value)) throw invalidArgument(`invalid ${what} ${JSON.stringify(value)}: ${VOLUME_NAME_RULE}`);
    }
    const everyMs = body.everyMs ?? null;
    if (everyMs !== null && (!Number.isSafeInteger(everyMs) || everyMs < MIN_CASCADE_EVERY_MS)) {
      throw invalidArgument(`--every must be at least ${MIN_CASCADE_EVERY_MS} ms`);
    }
    if (this.sessions.has(name)) throw new TidemarkError(ErrorCode.AlreadyExists, `cascade ${name} already exists`, { cascade: name });
    if (this.host.pairs.hasPair(name)) {
      throw new TidemarkError(ErrorCode.AlreadyExists, `a pair named ${name} exists; the cascade's pair to ${peer} takes the cascade's name`, { pair: name });
    }
    if (volume === clone) throw invalidArgument('the clone must be another volume than the one it cascades');
    const source = this.host.volume(volume);
    const target = this.host.volume(clone);
    if (source.geometry.sizeBytes !== target.geometry.sizeBytes || source.geometry.trackBytes !== target.geometry.trackBytes) {
      throw invalidArgument(`clone ${clone} must have the size and track size of ${volume}`);
    }
    this.host.checkPeer(peer);
    for (const s of this.sessions.values()) {
      const r = s.machine.record;
      if (r.clone === clone || r.volume === clone || r.clone === volume) {
        throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${clone === r.clone ? clone : volume} takes part in cascade ${r.name}`, { cascade: r.name });
      }
    }
    if (this.host.pairs.isPaired(clone)) throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${clone} is in a remote pair; the cascade makes its own`, { volume: clone });
    if (this.host.exportCount(clone) > 0) throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${clone} is exported; the cascade overwrites it every cycle`, { volume: clone });
    const existing = this.host.clones.list().find((c) => c.clone === clone);
    if (existing && existing.std !== volume) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${clone} is a clone of ${existing.std}`, { volume: clone });
    }
    const upstream = this.upstreamOf(volume);
    if (upstream && upstream.mode !== 'sync' && upstream.mode !== 'semisync') {
      throw invalidArgument(`${volume} is fed by pair ${upstream.name} in ${upstream.mode} mode; a cascade needs a sync or semisync source ` +
        '(its R2 is in write order between resyncs)', { pair: upstream.name, mode: upstream.mode });
    }
    const record = newCascadeRecord({ name, volume, clone, peer, remoteVolume, remoteClone, everyMs, createdAtMs: Math.floor(this.host.nowMs()) });
    await this.persist(record);
    this.sessions.set(name, { machine: new CascadeMachine(record), running: false, closed: [] });
    this.host.onEvent('cascade created', { cascade: name, volume, clone, peer, remoteVolume, remoteClone, everyMs });
    this.tick(name);
    return this.show(name);
  }

  cycle(name: string): CascadeView {
    const s = this.session(name);
    if (s.machine.record.closing) throw new TidemarkError(ErrorCode.InvalidState, `cascade ${name} is closing`, { cascade: name });
    s.machine.handle({ type: 'request-cycle' }, this.host.nowMs());
    this.tick(name);
    return this.show(name);
  }

  /**
   * Ends the session once the far site holds a whole image: at once between cycles, else after the
   * cycle under way. Answers when it is closed or after `CLOSE_ANSWER_MS` with `closed: false` (it
   * closes later by itself; the CLI polls until the session is gone).
   */
  async close(name: string): Promise<{ name: string; closed: boolean; consistentAt: string | null; cycles: number }> {
    const s = this.session(name);
    s.machine.handle({ type: 'close' }, this.host.nowMs());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const closed = await new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), CLOSE_ANSWER_MS);
      timer.unref();
      s.closed.push(() => resolve(true));
      this.tick(name);
    });
    clearTimeout(timer);
    const r = s.machine.record;
    return { name, closed, consistentAt: iso(r.consistentAtMs), cycles: r.cycles };
  }

  list(): CascadeView[] {
    return [...this.sessions.keys()].sort().map((n) => this.show(n));
  }

  show(name: string): CascadeView {
    const m = this.session(name).machine;
    const r = m.record;
    return {
      name: r.name, volume: r.volume, clone: r.clone, peer: r.peer, remoteVolume: r.remoteVolume, remoteClone: r.remoteClone,
      everyMs: r.everyMs, phase: r.phase, cycles: r.cycles, cycleStartedAt: iso(r.cycleStartedAtMs), splitAt: iso(r.splitAtMs),
      consistentAt: iso(r.consistentAtMs), nextDueAt: r.phase === 'complete' && !r.closing ? iso(m.nextDueAtMs) : null,
      tracksShipping: r.tracksShipping, bytesShippingCycle: r.bytesShippingCycle,
      tracksShippedLast: r.tracksShippedLast, bytesShippedLast: r.bytesShippedLast, bytesShipped: r.bytesShipped,
      sourceSettled: r.sourceSettled, requested: r.requested, closing: r.closing, busy: m.busy ?? null,
      waitingFor: m.waitingFor, lastError: m.lastError, createdAt: iso(r.createdAtMs)!,
    };
  }

  /** The persisted state of every session (for metrics). */
  records(): CascadeRecord[] {
    return [...this.sessions.values()].map((s) => s.machine.record);
  }

    /** Volumes in a cascade cannot be deleted. */
  checkDeletable(volume: string): void {
    for (const s of this.sessions.values()) {
      const r = s.machine.record;
      if (r.volume === volume || r.clone === volume) {
        throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${volume} takes part in cascade ${r.name}; close it first`, { volume, cascade: r.name });
      }
    }
  }

  stop(): void {
    this.stopTicking();
  }

  // ---- the machine's loop ----

  private session(name: string): Session {
    const s = this.sessions.get(name);
    if (!s) throw notFound(`no cascade named ${JSON.stringify(name)}`, { cascade: name });
    return s;
  }

  private upstreamOf(volume: string) {
    return this.host.pairs.recordsOn(volume).find((p) => p.role === 'R2');
  }

  private facts(r: CascadeRecord): CascadeFacts {
    let clone: CascadeFacts['clone'] = { state: 'missing', splitAtMs: null };
    try {
      const c = this.host.clones.show(r.volume, r.clone);
      clone = { state: c.state, splitAtMs: c.splitAt === null ? null : Date.parse(c.splitAt) };
    } catch (error) {
      if (!isTidemarkError(error, ErrorCode.NotFound)) throw error;
    }
    let pair: CascadeFacts['pair'] = { exists: false };
    if (this.host.pairs.hasPair(r.name)) {
      const p = this.host.pairs.status(r.name);
      pair = {
        exists: true, intent: p.intent, owedTracks: p.invalidTracks.local, persistedOwed: p.invalidTracks.persisted,
        quiet: !p.protecting && p.tracksOwed === 0, bytesShipped: p.counters.bytesShipped ?? 0,
      };
    }
    return { clone, pair, source: this.watch.facts(this.upstreamOf(r.volume)), trackCount: this.host.volume(r.volume).geometry.trackCount };
  }

  private tick(name: string): void {
    const s = this.sessions.get(name);
    if (!s || s.running) return;
    try {
      s.machine.handle({ type: 'tick', facts: this.facts(s.machine.record) }, this.host.nowMs());
    } catch (error) {
      this.host.onError(error, { cascade: name });
      return;
    }
    const actions = s.machine.poll();
    if (actions.length === 0) return;
    s.running = true;
    void this.run(s, actions).finally(() => { s.running = false; });
  }

  private async run(s: Session, actions: CascadeAction[]): Promise<void> {
    const name = s.machine.record.name;
    for (const action of actions) {
      if (action.type === 'persist') {
        try {
          await this.persist(action.record);
        } catch (error) {
          this.host.onError(error, { cascade: name, action: 'persist' });
          // The action that follows must not run on a record that is not on disk.
          const next = actions[actions.indexOf(action) + 1];
          if (next && next.type !== 'persist') s.machine.handle({ type: 'failed', action: next.type, error: String(error) }, this.host.nowMs());
          return;
        }
        continue;
      }
      const before = s.machine.record.phase;
      try {
        await this.execute(s.machine.record, action);
        s.machine.handle({ type: 'done', action: action.type }, this.host.nowMs());
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error);
        s.machine.handle({ type: 'failed', action: action.type, error: message }, this.host.nowMs());
        this.host.onError(error, { cascade: name, action: action.type });
        return;
      }
      if (s.machine.finished) {
        await this.host.meta.delete(KEY_PREFIX + name);
        this.sessions.delete(name);
        this.host.onEvent('cascade closed', { cascade: name, cycles: s.machine.record.cycles, consistentAtMs: s.machine.record.consistentAtMs });
        for (const resolve of s.closed.splice(0)) resolve();
        return;
      }
      const after = s.machine.record;
      if (before !== 'complete' && after.phase === 'complete') {
        this.host.onEvent('cascade cycle complete', { cascade: name, cycle: after.cycles, tracks: after.tracksShippedLast, bytes: after.bytesShippedLast });
      }
    }
    // A record change without an action (a completed cycle) reaches the disk now.
    for (const rest of s.machine.poll()) {
      if (rest.type === 'persist') await this.persist(rest.record).catch((error: unknown) => this.host.onError(error, { cascade: name }));
      else throw new Error(`cascade ${name}: ${rest.type} emitted outside a tick`);
    }
  }

  /** Every action is repeatable: a restart may replay the one it was doing. */
  private async execute(r: CascadeRecord, action: Exclude<CascadeAction, { type: 'persist' }>): Promise<void> {
    const { clones, pairs } = this.host;
    switch (action.type) {
      case 'establish-clone':
        if (!clones.list(r.volume).some((c) => c.clone === r.clone)) await clones.establish(r.volume, r.clone);
        return;
      case 'reestablish-clone':
        if (clones.show(r.volume, r.clone).state === 'split') await clones.reestablish(r.volume, r.clone);
        return;
      case 'split-clone':
        if (clones.show(r.volume, r.clone).state !== 'split') await clones.split(r.volume, r.clone, true);
        return;
      case 'suspend-pair':
        if (pairs.hasPair(r.name) && pairs.status(r.name).intent === 'replicating') await pairs.command(r.name, 'suspend');
        return;
      case 'ship':
        if (!pairs.hasPair(r.name)) {
          await pairs.create({
            volume: r.clone, name: r.name, peer: r.peer, remoteVolume: r.remoteVolume, mode: 'adaptive', onLinkFailure: 'continue', protectWith: r.remoteClone,
          });
        } else if (pairs.status(r.name).intent === 'suspended') {
          // The reattach copied whole tracks into CVOL; C holds most of their records already.
          pairs.compareOwedTracks(r.name);
          try {
            await pairs.command(r.name, 'resume');
          } catch (error) {
            // CRVOL has no hosts while the pair exists, and crash recovery no longer counts a
            // write-disabled R2's hot extents as its own changes; but if someone made CRVOL writable
            // and wrote to it, resume refuses those changes. R1's image is the one that must win, so
            // establish: those tracks are compared by digest and only differing records travel.
            if (!isTidemarkError(error, ErrorCode.PairDiverged)) throw error;
            this.host.onEvent('cascade: the far replica reports own changes after a restart; establishing from the clone', { cascade: r.name });
            await pairs.command(r.name, 'establish');
          }
        }
        return;
      case 'refresh-remote': {
        const p = pairs.status(r.name);
        const reply = await this.host.rpc.request(r.peer, { op: 'pair.protect', pair: p.id, whole: true }, [], REFRESH_TIMEOUT_MS);
        if (!reply.header.protected) throw new TidemarkError(ErrorCode.InvalidState, `${r.peer} did not split ${r.remoteClone}: the pair has no protection clone there`);
        return;
      }
      case 'finish':
        if (pairs.hasPair(r.name)) await pairs.delete(r.name);
        if (clones.list(r.volume).some((c) => c.clone === r.clone) && clones.show(r.volume, r.clone).state !== 'restoring') {
          await clones.terminate(r.volume, r.clone);
        }
        return;
    }
  }

  private persist(record: CascadeRecord): Promise<void> {
    return this.host.meta.write(KEY_PREFIX + record.name, encodeJson(record));
  }
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

// Remote pairs of one array (SPEC §4): the registry of pair halves, their persistence, and the
// executor of each half's lifecycle (core/replication/pair-lifecycle.ts: reconcile when a link
// comes back, protection before a resync, cycle starts). The commands are in pair-commands.ts,
// the requests a peer array sends in pair-peer-handlers.ts, the status in pair-status.ts.
// A pair half's record rides in its volume's bitmaps record, so state and bitmaps persist together.
import { ErrorCode, TidemarkError, notFound } from '../../core/errors.js';
import { parsePairRecord, type PairIntent, type PairMode, type PairRecord } from '../../core/replication/pair-record.js';
import type { PairCommand } from '../../core/replication/pair-rules.js';
import { combinedVolumeState } from '../../core/replication/pair-set.js';
import type { LifecycleStep, PeerHalfStatus } from '../../core/replication/pair-lifecycle.js';
import type { Volume } from '../volume/volume.js';
import { DEFAULT_PAIR_TIMEOUTS, PairRuntime, type PairTimeouts } from './pair-runtime.js';
import type { PeerRpc } from './peer-rpc.js';
import { R1Async, R2Async, type CyclesFallBackReason, type R2AsyncHost } from './async-cycles.js';
import { CONTROL_TIMEOUT_MS, type PairContext, type PairHost } from './pair-context.js';
import { PairCommands, type PairCreateOptions } from './pair-commands.js';
import { registerPairHandlers } from './pair-peer-handlers.js';
import { pairStatus, showPair } from './pair-status.js';
// A pair's status is the API's shape: the schema is its one definition.
import type { PairStatusView as PairStatus } from '../../adapters/http/replication-routes.js';

export type { PairHost } from './pair-context.js';
export type { PairCreateOptions } from './pair-commands.js';

const EXTENSION_KEY = 'pairs';
const KICK_INTERVAL_MS = 250;
const CYCLE_TICK_MS = 25;
/** How often R1 asks whether a flush round is due (rounds are ~1 s apart; see clean-round.ts). */
const CLEAN_TICK_MS = 100;
/** How long R2 may take to apply what it committed before it takes anything else. */
const STOP_CYCLES_TIMEOUT_MS = 120_000;
/** Splitting R2's protection clone may first have to copy what R2 changed since its last split. */
const PROTECT_TIMEOUT_MS = 15 * 60_000;

export class PairManager implements PairContext {
  /** Pair name → its half on this array. */
  private readonly pairs = new Map<string, PairRuntime>();
  /** Volume name → the pair halves on it, in creation order (fan-out, chains). */
  private readonly byVolume = new Map<string, PairRuntime[]>();
  /** Volumes whose write plan this manager takes part in. */
  private readonly participating = new Set<string>();
  private readonly stopKicking: () => void;
  private closed = false;
  private readonly commands: PairCommands = new PairCommands(this);

  constructor(
    readonly host: PairHost,
    readonly rpc: PeerRpc,
    private readonly timeouts: PairTimeouts = DEFAULT_PAIR_TIMEOUTS,
  ) {
    registerPairHandlers(this, this.commands);
    const stopKick = host.timers.every(KICK_INTERVAL_MS, () => this.kick());
    // Async cycles switch and send on a finer tick than the resync kick.
    const stopCycles = host.timers.every(CYCLE_TICK_MS, () => {
      for (const r of this.pairs.values()) if (r.capturing) r.asyncR1!.pump();
    });
    const stopClean = host.timers.every(CLEAN_TICK_MS, () => {
      for (const r of this.pairs.values()) r.kickClean();
    });
    this.stopKicking = () => { stopKick(); stopCycles(); stopClean(); };
  }

  // ---- loading and persistence ----

  async load(volumeNames: string[]): Promise<void> {
    for (const name of volumeNames) {
      const v = this.host.volume(name);
      const stored = v.loadedExtensions[EXTENSION_KEY];
      if (stored === undefined) continue;
      if (!Array.isArray(stored)) throw new TidemarkError(ErrorCode.MetadataCorrupt, `pairs of ${name} are not a list`);
      for (const value of stored) {
        const record = parsePairRecord(value, `pair of volume ${name}`);
        if (this.pairs.has(record.name)) throw new TidemarkError(ErrorCode.MetadataCorrupt, `two pairs are named ${record.name}`);
        const runtime = this.attach(record, v, false);
        if (record.role === 'R2' && record.mode === 'async') runtime.asyncR2 = await R2Async.recover(this.r2CyclesHost(runtime));
      }
      // An attached clone session (loaded first) owns its target's access, as in applyAccess: a
      // cascade's clone is the R1 of a suspended pair while it reattaches.
      if (stored.length > 0 && v.state !== 'not-ready') await v.setState(combinedVolumeState(this.recordsOn(name)));
    }
  }

  /**
   * `live`: made in an exchange with the peer just now (create, swap), so R1 and R2 agree already;
   * a half loaded at start reconciles with its peer before it ships anything.
   */
  attach(record: PairRecord, volume: Volume, live = true): PairRuntime {
    const runtime = new PairRuntime(record, volume, this.rpc, this.timeouts, this.host.nowMs, live);
    this.pairs.set(record.name, runtime);
    this.byVolume.set(volume.name, [...this.onVolume(volume.name), runtime]);
    volume.setExtension(EXTENSION_KEY, () => this.recordsOn(volume.name));
    if (!this.participating.has(volume.name)) {
      this.participating.add(volume.name);
      // One participant per volume in its write plan, finding its pair halves at call time (role
      // changes replace a runtime). Every half is a position of every write: a host's, a replica's (a
      // chain forwards what it receives) and a restore's pull (the volume's other pairs must get the
      // restored tracks too).
      volume.participants.push({
        positions: (into) => { for (const r of this.onVolume(volume.name)) into.push(r.planPosition()); },
        execute: (step, position, write) => this.halfNamed(volume.name, position.id)?.execute(step, write),
      });
      volume.beforePersist.push(async () => {
        for (const r of this.onVolume(volume.name)) await r.beforePersist();
      });
    }
    return runtime;
  }

  /** The half of pair `name` on the volume (a plain loop: this runs for every step of every paired write). */
  private halfNamed(volume: string, name: string): PairRuntime | undefined {
    for (const r of this.onVolume(volume)) if (r.record.name === name) return r;
    return undefined;
  }

  /** The pair halves on a volume (R1 of up to four pairs, R2 of at most one). */
  private onVolume(volume: string): PairRuntime[] {
    return this.byVolume.get(volume) ?? [];
  }

  recordsOn(volume: string): PairRecord[] {
    return this.onVolume(volume).map((r) => r.record);
  }

  async save(runtime: PairRuntime, record: PairRecord): Promise<void> {
    runtime.record = record;
    // Cycles run only while an async pair replicates; otherwise what they hold goes to the bitmaps.
    if (runtime.capturing && (record.mode !== 'async' || record.intent !== 'replicating')) runtime.stopAsync();
    await runtime.volume.persistBitmaps();
  }

  /** Sets the volume's host access for the pair's role and intent; a write window makes it atomic. */
  async applyAccess(runtime: PairRuntime, intent: PairIntent = runtime.record.intent): Promise<void> {
    const wanted = combinedVolumeState(this.recordsOn(runtime.volume.name), { record: runtime.record, intent });
    // An attached clone session owns its target's access (not ready) until it splits.
    if (runtime.volume.state === wanted || runtime.volume.state === 'not-ready') return;
    const release = await runtime.volume.holdWrites();
    try {
      await runtime.volume.setState(wanted);
    } finally {
      release();
    }
  }

  detach(runtime: PairRuntime): void {
    runtime.retire();
    if (runtime.capturing) runtime.stopAsync(); // its spill files go with it
    const ids = runtime.ids;
    for (const id of [ids.out, ids.own, ids.pull]) runtime.volume.removePosition(id);
    this.pairs.delete(runtime.record.name);
    const rest = this.onVolume(runtime.volume.name).filter((r) => r !== runtime);
    if (rest.length > 0) this.byVolume.set(runtime.volume.name, rest);
    else this.byVolume.delete(runtime.volume.name);
  }

  // ---- queries ----

  /**
   * The pair half named `pair` on this array (the PAIR argument of the CLI). A volume's name stands
   * for its pair while it has only one: scripts written when pairs were named after their volume
   * (on R2 too, where the pair now carries R1's name) keep working.
   */
  runtime(pair: string): PairRuntime {
    const r = this.pairs.get(pair);
    if (r) return r;
    const on = this.onVolume(pair);
    if (on.length === 1) return on[0]!;
    if (on.length > 1) {
      throw new TidemarkError(ErrorCode.PairNameRequired,
        `volume ${pair} takes part in pairs ${on.map((x) => x.record.name).join(', ')}; name the pair`, { volume: pair, pairs: on.map((x) => x.record.name) });
    }
    throw notFound(`no pair named ${JSON.stringify(pair)} on this array`, { pair });
  }

  /** Whether the volume takes part in any pair. */
  isPaired(volume: string): boolean {
    return this.onVolume(volume).length > 0;
  }

  checkVolumeChange(volume: string, what: string): void {
    if (this.isPaired(volume)) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${volume} is in a remote pair; ${what} is refused (delete the pair first)`, { volume });
    }
  }

  list(): PairStatus[] {
    return [...this.pairs.keys()].sort().map((name) => this.status(name));
  }

  status(pair: string): PairStatus {
    return pairStatus(this, this.runtime(pair));
  }

  /** Status with the peer's figures fetched fresh when the link is up. */
  show(pair: string): Promise<PairStatus> {
    return showPair(this, this.runtime(pair));
  }

  // ---- commands (pair-commands.ts) ----

  create(options: PairCreateOptions): Promise<PairStatus> {
    return this.commands.create(options);
  }

  command(pair: string, command: PairCommand): Promise<PairStatus> {
    return this.commands.command(pair, command);
  }

  /**
   * R1: which records of the owed tracks changed is forgotten, so the next push compares each with
   * R2's digests and ships only the records that differ. For a cascade, whose owed tracks were
   * marked by whole-track clone copies: one changed record travels as 4 KiB, not 64 KiB.
   */
  compareOwedTracks(pair: string): void {
    const r = this.runtime(pair);
    if (r.record.role === 'R1') r.owed.markWholeBitmap(r.owed.owed.copy(), this.host.nowMs());
  }

  suspendForGroup(pair: string, reason: string): Promise<void> {
    return this.commands.suspendForGroup(pair, reason);
  }

  setMode(pair: string, mode: PairMode): Promise<PairStatus> {
    return this.commands.setMode(pair, mode);
  }

  delete(pair: string): Promise<{ peerDeleted: boolean }> {
    return this.commands.delete(pair);
  }

  kickRestore(r: PairRuntime): void {
    r.kickPull(async () => {
      await this.rpc.request(r.record.peer,
        { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
      r.volume.removePosition(r.ids.pull);
      r.pull = undefined;
      // Hosts get R1 back before the record says so: until then the pair still shows restoring.
      await this.applyAccess(r, 'replicating');
      await this.save(r, { ...r.record, intent: 'replicating' });
      this.host.onEvent('pair restored from R2', { pair: r.record.id });
      // What hosts wrote meanwhile is a resync (R2's clone, if any, is split first).
      this.startResync(r);
    });
  }

  async becomeR2(r: PairRuntime, generation: number): Promise<void> {
    const record: PairRecord = { ...r.record, role: 'R2', intent: 'replicating', generation, diverged: false };
    this.detach(r);
    const next = this.attach(record, r.volume);
    await this.save(next, record);
    await this.applyAccess(next);
  }

  // ---- background ----

  private kick(): void {
    if (this.closed) return;
    for (const r of this.pairs.values()) {
      if (r.record.role !== 'R1') continue;
      r.lifecycle.handle({ type: 'tick', facts: r.facts() }, this.host.nowMs());
      this.execute(r);
    }
  }

  /** Carries out what the pair's lifecycle asks for; each step reports back to it when it ends. */
  private execute(r: PairRuntime): void {
    for (const action of r.lifecycle.poll()) {
      switch (action.type) {
        case 'ask-peer-status': void this.step(r, 'reconcile', action.epoch, () => this.askPeerStatus(r, action.epoch), false); break;
        case 'become-r2': void this.step(r, 'reconcile', action.epoch, () => this.becomeR2(r, action.generation)); break;
        case 'adopt-failover': void this.step(r, 'reconcile', action.epoch, () => this.adoptFailover(r, action.generation)); break;
        case 'confirm-replicating':
          void this.step(r, 'reconcile', action.epoch, async () => {
            await this.rpc.request(r.record.peer,
              { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: action.generation }, [], CONTROL_TIMEOUT_MS);
            this.startResync(r);
          });
          break;
        case 'restore': this.kickRestore(r); break;
        case 'protect': void this.step(r, 'protect', action.epoch, () => this.protectReplica(r, action.whole)); break;
        case 'push': r.kickPush(); break;
        case 'start-cycles': void this.step(r, 'start-cycles', action.epoch, () => this.startCycles(r)); break;
      }
    }
  }

  /**
   * Runs one step of the lifecycle and tells it how the step ended (`done`: the step is over when
   * `run` returns; otherwise `run` answers through another event), then executes what follows.
   */
  private async step(r: PairRuntime, step: LifecycleStep, epoch: number, run: () => Promise<void>, done = true): Promise<void> {
    try {
      await run();
      if (done) r.lifecycle.handle({ type: 'step-done', step, epoch }, this.host.nowMs());
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      r.lastError = step === 'reconcile' ? message
        : step === 'protect' ? `protecting R2 before the resync failed (will retry): ${message}` : `starting async cycles: ${message}`;
      r.lifecycle.handle({ type: 'step-failed', step, epoch, error: message }, this.host.nowMs());
    }
    this.execute(r);
  }

  /**
   * A resync leaves R2 inconsistent until it ends: with --protect-with, R2's clone is split first
   * (on R2's array), and nothing is shipped to R2 until that is done.
   */
  private async protectReplica(r: PairRuntime, whole: boolean): Promise<void> {
    await this.rpc.request(r.record.peer, { op: 'pair.protect', pair: r.record.id, whole }, [], PROTECT_TIMEOUT_MS);
  }

  /**
   * Async mode starts its cycles from a synchronized pair, inside a write window (no write is half
   * in the bitmaps and half in a cycle); R2 first applies whatever cycles it had committed.
   */
  private async startCycles(r: PairRuntime): Promise<void> {
    const release = await r.volume.holdWrites();
    try {
      if (!r.lifecycle.cyclesMayStart(r.facts())) return;
      // What the bitmaps shipped becomes durable on both sides first: from here R2's own restarts
      // cost nothing (it keeps its cycles), and no resync has to end the cycles for old tracks.
      await r.volume.persistBitmaps();
      if (!r.quiet || r.hasUndurableClears) return;
      const first = r.nextCycle;
      // A group member's first cycle carries the group's current tag: the coordinator cannot switch
      // the group while this member is not ready, so the tag last heard is still current.
      const groupTag = r.group?.tag;
      await this.rpc.request(r.record.peer,
        { op: 'pair.cycles-start', pair: r.record.id, cycle: first, groupFrom: groupTag === undefined ? null : first }, [], CONTROL_TIMEOUT_MS);
      // The mode, intent or membership may have changed while R2 was answering: then no cycles after all.
      if (!r.lifecycle.cyclesMayStart(r.facts()) || r.group?.tag !== groupTag) return;
      const runtime = r;
      r.asyncR1 = new R1Async({
        volume: r.volume, rpc: this.rpc, peer: r.record.peer, pairId: r.record.id, cycleMs: r.record.cycleMs, nowMs: this.host.nowMs,
        ...(groupTag === undefined ? {} : { groupTag }),
        memoryBudgetBytes: r.record.cycleMemoryBytes, spillLimitBytes: r.record.spillLimitBytes,
        ...(this.host.spill ? { spill: this.host.spill } : {}),
        fellBack: (tracks, reason) => {
          // A group member does not resync by itself: that would leave its R2 at no point at all
          // while the others' R2s go on. It suspends first (before its tracks are owed, so no push
          // starts), leaves the group, and keeps R2 at the last group boundary it holds.
          const group = reason === 'stopped' ? undefined : runtime.group?.name;
          if (group !== undefined) void this.suspendForGroup(runtime.record.name, `the cycles fell back to bitmaps (${reason}); left group ${group}`);
          runtime.cyclesFellBack(tracks);
          if (reason !== 'stopped') this.cyclesFellBack(runtime, tracks.length, reason);
        },
        committed: (tracks, busy) => runtime.cyclesCommitted(tracks, busy),
      }, first);
      r.cyclesFallback = undefined;
      this.host.onEvent('pair async cycles started', { pair: r.record.id, cycle: first });
    } finally {
      release();
    }
  }

  /** The cycles gave up on their own: the bitmaps carry their tracks; a resync starts them again. */
  private cyclesFellBack(r: PairRuntime, tracks: number, reason: Exclude<CyclesFallBackReason, 'stopped'>): void {
    const rec = r.record;
    const why = {
      'capture-limit': `the cycles outgrew ${formatBytes(rec.cycleMemoryBytes)} in memory` +
        (this.host.spill && rec.spillLimitBytes > 0 ? ` plus the ${formatBytes(rec.spillLimitBytes)} spill limit` : ' (no spill to disk)'),
      'spill-failed': 'writing or reading the spill files failed',
      'peer-stopped': `${rec.peer} runs no cycles for this pair`,
    }[reason];
    const message = `${why}: fell back to bitmaps (${tracks} tracks owed); the pair resyncs when it can and then starts cycles again`;
    r.cyclesFallback = { at: new Date(this.host.nowMs()).toISOString(), reason, tracks, message };
    r.counters.cycleFallbacks++;
    this.host.onEvent('pair async cycles fell back to bitmaps', { pair: rec.id, reason, tracks });
  }

  /** R2: apply every cycle it committed, then drop the cycles (R1 carries on through its bitmaps). */
  stopR2Cycles(r: PairRuntime): Promise<void> {
    const cycles = r.asyncR2;
    if (!cycles) return Promise.resolve();
    r.stoppingR2 ??= (async () => {
      const deadline = this.host.nowMs() + STOP_CYCLES_TIMEOUT_MS;
      while (cycles.committedPending && !cycles.stopped) {
        if (this.host.nowMs() > deadline) throw new TidemarkError(ErrorCode.Unavailable, `R2 ${r.record.localVolume} is still applying committed cycles`);
        await new Promise<void>((resolve) => this.host.timers.after(5, resolve));
      }
      await cycles.halt();
      await R2Async.dropAll({ meta: this.host.meta, pairId: r.record.id });
      if (r.asyncR2 === cycles) r.asyncR2 = undefined;
    })().finally(() => { r.stoppingR2 = undefined; });
    return r.stoppingR2;
  }

  /** Before shipping owed tracks to R2 (a resync): protect R2 first if the pair says so. */
  startResync(r: PairRuntime): void {
    r.lifecycle.handle({ type: 'resync', facts: r.facts() }, this.host.nowMs());
    this.execute(r);
  }

  /** A link to `peer` came up: R1 halves compare notes with their R2 and pick up where they were. */
  peerUp(peer: string): void {
    for (const r of [...this.pairs.values()]) {
      if (r.record.peer !== peer) continue;
      r.lifecycle.handle({ type: 'link-up' }, this.host.nowMs());
      this.execute(r);
    }
  }

  /** The link to `peer` went down: its R1 halves ship nothing after it returns until they have reconciled. */
  peerDown(peer: string): void {
    for (const r of this.pairs.values()) if (r.record.peer === peer) r.lifecycle.handle({ type: 'link-down' }, this.host.nowMs());
  }

  /** Reconcile, first step: what does R2 say of its half? The lifecycle decides what follows. */
  private async askPeerStatus(r: PairRuntime, epoch: number): Promise<void> {
    const reply = await this.rpc.request(r.record.peer, { op: 'pair.status', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    const h = reply.header;
    r.remoteTracks = h.invalidTracks;
    let status: PeerHalfStatus = { exists: false };
    if (h.exists) {
      if (h.role === undefined || h.intent === undefined || h.generation === undefined) {
        throw new TidemarkError(ErrorCode.Protocol, `${r.record.peer} says it has a half of pair ${r.record.name} but not its role, intent and generation`);
      }
      status = { exists: true, role: h.role, intent: h.intent, generation: h.generation };
    }
    r.lifecycle.handle({ type: 'peer-status', epoch, status }, this.host.nowMs());
    if (r.peerMissing) r.lastError = `${r.record.peer} has no half of this pair`;
  }

  /** R2 took over while this side could not hear it. Writes taken here since are a divergence. */
  private async adoptFailover(r: PairRuntime, generation: number): Promise<void> {
    const diverged = r.bits.count() > 0;
    await this.save(r, { ...r.record, intent: 'failed-over', generation, diverged });
    await this.applyAccess(r);
    this.host.onEvent('pair: R2 failed over while the link was down', { pair: r.record.id, diverged });
  }

  /** The link session ended for good: whatever was in flight is owed again (the bits still say so). */
  sessionReset(peer: string): void {
    for (const r of this.pairs.values()) if (r.record.peer === peer) r.sessionReset();
  }

  // ---- requests from peers ----

  /** The local half of the pair with this id (and, when given, paired with `peer`). */
  halfById(pairId: string, peer?: string): PairRuntime | undefined {
    for (const r of this.pairs.values()) if (r.record.id === pairId && (peer === undefined || r.record.peer === peer)) return r;
    return undefined;
  }

  hasPair(name: string): boolean {
    return this.pairs.has(name);
  }

  halves(): PairRuntime[] {
    return [...this.pairs.values()];
  }

  halfFor(peer: string, id: string, role?: 'R1' | 'R2'): PairRuntime {
    for (const r of this.pairs.values()) {
      if (r.record.id === id && r.record.peer === peer && (role === undefined || r.record.role === role)) return r;
    }
    throw notFound(`no pair ${id} with ${peer} on ${this.host.arrayName}`, { pair: id });
  }


  r2CyclesHost(r: PairRuntime): R2AsyncHost {
    return {
      volume: r.volume, meta: this.host.meta, rpc: this.rpc, peer: r.record.peer, pairId: r.record.id, ownPosition: r.ids.own,
      onError: (error) => this.host.onError(error, { pair: r.record.id }),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const r of this.pairs.values()) if (r.asyncR2) r.asyncR2.stopped = true;
    // R1's cycles end with the process (the bitmaps already cover their tracks); their spill goes.
    for (const r of this.pairs.values()) if (r.capturing) r.stopAsync();
    this.stopKicking();
    for (const r of this.pairs.values()) r.retire();
  }
}

function formatBytes(n: number): string {
  for (const [unit, size] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= size) return `${Number((n / size).toFixed(1))} ${unit}`;
  }
  return `${n} bytes`;
}

// Remote pairs of one array (SPEC §4): the commands, the requests a peer array sends, and the
// reconciliation when a link comes back. R1 drives a pair; a command given on R2's array is
// forwarded to R1, except a failover with the link down (the disaster case), which R2 takes alone.
// A pair half's record rides in its volume's bitmaps record, so state and bitmaps persist together.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../../core/errors.js';
import {
  DEFAULT_CYCLE_MEMORY_BYTES, DEFAULT_SPILL_LIMIT_BYTES, LINK_FAILURE_POLICIES, MIN_CYCLE_MEMORY_BYTES, PAIR_INTENTS, PAIR_MODES,
  parsePairRecord, type LinkFailurePolicy, type PairIntent, type PairMode, type PairRecord,
} from '../../core/replication/pair-record.js';
import { checkCommand, volumeStateFor, type PairCommand } from '../../core/replication/pair-rules.js';
import {
  checkNewR1, checkNewR2, checkR1VolumeState, checkSiblings, choosePairName, combinedVolumeState,
} from '../../core/replication/pair-set.js';
import { validateExtents, type ByteExtent } from '../../core/replication/pair-extents.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import { trackRange } from '../../core/volume/geometry.js';
import type { Volume } from '../volume/volume.js';
import { PairRuntime, positionIds, type PairTimeouts } from './pair-runtime.js';
import type { PeerRpc, RpcReply } from './peer-rpc.js';
import { digestEqual, isAllZero, recordDigests } from './record-digests.js';
import { holeTracks } from './hole-tracks.js';
import {
  DEFAULT_CYCLE_MS, MIN_CYCLE_MS, R1Async, R2Async, cycleMessageFromWire, type CyclesFallBackReason, type R2AsyncHost,
} from './async-cycles.js';
import type { R1Message, R2Message } from '../../core/replication/cycles/cycle-messages.js';
import type { MetaStore } from '../../ports/meta-store.js';
// A pair's status is the API's shape: the schema is its one definition.
import type { PairCyclesView as CycleStatus, PairStatusView as PairStatus } from '../../adapters/http/replication-routes.js';
import type { Timers } from '../../ports/timers.js';
import type { SpillStore } from '../../ports/spill-store.js';

const EXTENSION_KEY = 'pairs';
const CONTROL_TIMEOUT_MS = 15_000;
const KICK_INTERVAL_MS = 250;
const CYCLE_TICK_MS = 25;
/** How often R1 asks whether a flush round is due (rounds are ~1 s apart; see clean-round.ts). */
const CLEAN_TICK_MS = 100;
/** How long R2 may take to apply what it committed before it takes anything else. */
const STOP_CYCLES_TIMEOUT_MS = 120_000;
/** Splitting R2's protection clone may first have to copy what R2 changed since its last split. */
const PROTECT_TIMEOUT_MS = 15 * 60_000;

export interface PairHost {
  readonly arrayName: string;
  volume(name: string): Volume;
  findVolume(name: string): Volume | undefined;
  /** The peer must be configured on this array. */
  checkPeer(name: string): void;
  peerLinkState(name: string): string;
  nowMs(): number;
  onError(error: unknown, context: Record<string, unknown>): void;
  onEvent(message: string, fields: Record<string, unknown>): void;
  readonly timers: Timers;
  /** Where R2 keeps received cycles of async pairs. */
  readonly meta: MetaStore;
  /** Where R1's async cycles spill when they outgrow memory; without one they fall back instead. */
  readonly spill?: SpillStore;
  /** A fresh unpredictable suffix for pair ids (seeded in the simulator). */
  randomId(): string;
  /** Checks that CLONE is a clone session of volume STD on this array (for --protect-with). */
  checkProtection?(std: string, clone: string): void;
  /** Brings the clone session STD→CLONE to synchronized and splits it: CLONE then holds STD's image. */
  protect?(std: string, clone: string): Promise<void>;
}

export interface PairCreateOptions {
  readonly volume: string;
  /** Defaults to the volume's name while the volume has no pair; required after. */
  readonly name?: string;
  readonly peer: string;
  readonly remoteVolume: string;
  readonly mode: PairMode;
  readonly onLinkFailure: LinkFailurePolicy;
  /** A clone of the remote volume (on the peer) to split before every resync. */
  readonly protectWith?: string;
  /** Replicate only these byte ranges (whole tracks). */
  readonly extents?: readonly ByteExtent[];
  /** async mode: the shortest time between cycle switches (≥ 100 ms). */
  readonly cycleMs?: number;
  /** async mode: R1's cycles spill to disk above this much data in memory. */
  readonly cycleMemoryBytes?: number;
  /** async mode: spilled data above this makes R1 fall back to bitmaps (0: never spill). */
  readonly spillLimitBytes?: number;
}

export class PairManager {
  /** Pair name → its half on this array. */
  private readonly pairs = new Map<string, PairRuntime>();
  /** Volume name → the pair halves on it, in creation order (fan-out, chains). */
  private readonly byVolume = new Map<string, PairRuntime[]>();
  /** Volumes whose write plan this manager takes part in. */
  private readonly participating = new Set<string>();
  private readonly stopKicking: () => void;
  private closed = false;

  constructor(
    private readonly host: PairHost,
    private readonly rpc: PeerRpc,
    private readonly timeouts: PairTimeouts = { writeAckMs: 10_000, copyAckMs: 30_000 },
  ) {
    this.registerHandlers();
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
      if (stored.length > 0) await v.setState(combinedVolumeState(this.recordsOn(name)));
    }
  }

  /**
   * `live`: made in an exchange with the peer just now (create, swap), so R1 and R2 agree already;
   * a half loaded at start reconciles with its peer before it ships anything.
   */
  private attach(record: PairRecord, volume: Volume, live = true): PairRuntime {
    const runtime = new PairRuntime(record, volume, this.rpc, this.timeouts, this.host.nowMs);
    if (live) runtime.reconciledFor(runtime.reconcileStarting());
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
        execute: (step, position, write) => this.onVolume(volume.name).find((r) => r.record.name === position.id)?.execute(step, write),
      });
      volume.beforePersist.push(async () => {
        for (const r of this.onVolume(volume.name)) await r.beforePersist();
      });
    }
    return runtime;
  }

  /** The pair halves on a volume (R1 of up to four pairs, R2 of at most one). */
  private onVolume(volume: string): PairRuntime[] {
    return this.byVolume.get(volume) ?? [];
  }

  private recordsOn(volume: string): PairRecord[] {
    return this.onVolume(volume).map((r) => r.record);
  }

  private async save(runtime: PairRuntime, record: PairRecord): Promise<void> {
    runtime.record = record;
    // Cycles run only while an async pair replicates; otherwise what they hold goes to the bitmaps.
    if (runtime.capturing && (record.mode !== 'async' || record.intent !== 'replicating')) runtime.stopAsync();
    await runtime.volume.persistBitmaps();
  }

  /** Sets the volume's host access for the pair's role and intent; a write window makes it atomic. */
  private async applyAccess(runtime: PairRuntime, intent: PairIntent = runtime.record.intent): Promise<void> {
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

  private detach(runtime: PairRuntime): void {
    runtime.retired = true;
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
    const r = this.runtime(pair);
    const rec = r.record;
    return {
      pair: rec.name, volume: rec.localVolume, id: rec.id, role: rec.role, mode: rec.mode, state: r.state(), intent: rec.intent,
      localVolume: rec.localVolume, peer: rec.peer, remoteVolume: rec.remoteVolume, onLinkFailure: rec.onLinkFailure,
      protectWith: rec.protectWith, extents: rec.extents ? rec.extents.map((e) => ({ ...e })) : null, protecting: r.needsProtection,
      generation: rec.generation, diverged: rec.diverged,
      invalidTracks: { local: r.bits.count(), remote: r.remoteTracks ?? null, persisted: r.persistedInvalidTracks },
      tracksOwed: rec.role === 'R1' ? r.owed.count : 0,
      tracksToPull: r.pull?.count() ?? 0,
      bytesOwed: rec.role === 'R1' ? r.bytesOwed() : 0,
      lagSeconds: rec.role === 'R1' ? r.lagSeconds() : 0,
      link: { state: this.host.peerLinkState(rec.peer) },
      peerMissing: r.peerMissing,
      lastError: r.lastError ?? null,
      counters: { ...r.counters },
      cycles: this.cycleStatus(r),
      cycleMs: rec.cycleMs,
      cycleMemoryBytes: rec.cycleMemoryBytes,
      spillLimitBytes: this.host.spill ? rec.spillLimitBytes : 0,
      cyclesFallback: rec.role === 'R1' && !r.capturing ? r.cyclesFallback ?? null : null,
      group: r.group?.name ?? null,
    };
  }

  private cycleStatus(r: PairRuntime): CycleStatus | null {
    if (r.capturing) {
      const st = r.asyncR1!.cycles.stats();
      return {
        captureCycle: st.capture.cycle, transmitCycle: st.transmit?.cycle ?? null, appliedCycle: r.asyncR1!.appliedCycle,
        captureRecords: st.capture.records, transmitRecords: st.transmit?.records ?? 0,
        captureBytes: st.capture.bytes, transmitBytes: st.transmit?.bytes ?? 0, memoryBytes: r.asyncR1!.memoryBytes,
        spilledRecords: st.spilledRecords, spilledBytes: st.spilledRecords * r.volume.geometry.recordBytes,
        remoteAppliedCycle: r.remoteAppliedCycle ?? null, recoverableCycle: r.remoteRecoverableCycle ?? null,
      };
    }
    if (r.asyncR2 && !r.asyncR2.stopped) {
      const st = r.asyncR2.cycles.stats();
      return {
        captureCycle: null, transmitCycle: st.receivingCycle, appliedCycle: st.appliedCycle,
        captureRecords: 0, transmitRecords: st.receivedRecords, captureBytes: 0, transmitBytes: 0, memoryBytes: 0, spilledRecords: 0, spilledBytes: 0,
        remoteAppliedCycle: null, recoverableCycle: r.asyncR2.cycles.recoverablePoint.cycle,
      };
    }
    return null;
  }

  /** Status with the peer's invalid-track count fetched fresh when the link is up. */
  async show(pair: string): Promise<PairStatus> {
    const r = this.runtime(pair);
    if (r.linkUp) {
      try {
        const reply = await this.rpc.request(r.record.peer, { op: 'pair.status', pair: r.record.id }, [], 2000);
        r.remoteTracks = typeof reply.header.invalidTracks === 'number' ? reply.header.invalidTracks : undefined;
        r.remoteAppliedCycle = typeof reply.header.appliedCycle === 'number' ? reply.header.appliedCycle : undefined;
        r.remoteRecoverableCycle = typeof reply.header.recoverableCycle === 'number' ? reply.header.recoverableCycle : undefined;
      } catch {
        // Shown from the last known figures.
      }
    }
    return this.status(pair);
  }

  // ---- commands ----

  async create(options: PairCreateOptions): Promise<PairStatus> {
    const { volume: name, peer, remoteVolume, mode, onLinkFailure } = options;
    const protectWith = options.protectWith ?? null;
    if (!PAIR_MODES.includes(mode)) throw invalidArgument(`mode must be one of ${PAIR_MODES.join(', ')}`);
    if (!LINK_FAILURE_POLICIES.includes(onLinkFailure)) throw invalidArgument(`on-link-failure must be one of ${LINK_FAILURE_POLICIES.join(', ')}`);
    const volume = this.host.volume(name);
    this.host.checkPeer(peer);
    const siblings = this.recordsOn(name);
    const pairName = choosePairName(name, options.name, siblings, (n) => this.pairs.has(n));
    checkNewR1(name, siblings);
    checkR1VolumeState(name, volume.state, siblings);
    const upstream = siblings.find((r) => r.role === 'R2');
    if (upstream && upstream.peer === peer && upstream.remoteVolume === remoteVolume) {
      throw new TidemarkError(ErrorCode.PairConflict,
        `volume ${name} receives from ${peer}:${remoteVolume} (pair ${upstream.name}); replicating back to it would loop`, { pair: upstream.name });
    }
    const extents = options.extents ? validateExtents(options.extents, volume.geometry) : null;
    const cycleMs = options.cycleMs ?? DEFAULT_CYCLE_MS;
    if (!Number.isSafeInteger(cycleMs) || cycleMs < MIN_CYCLE_MS) throw invalidArgument(`--cycle-ms must be a whole number of at least ${MIN_CYCLE_MS}`);
    const cycleMemoryBytes = options.cycleMemoryBytes ?? DEFAULT_CYCLE_MEMORY_BYTES;
    if (!Number.isSafeInteger(cycleMemoryBytes) || cycleMemoryBytes < MIN_CYCLE_MEMORY_BYTES) {
      throw invalidArgument(`--cycle-memory must be at least ${MIN_CYCLE_MEMORY_BYTES} bytes`);
    }
    const spillLimitBytes = options.spillLimitBytes ?? DEFAULT_SPILL_LIMIT_BYTES;
    if (!Number.isSafeInteger(spillLimitBytes) || spillLimitBytes < 0) throw invalidArgument('--spill-limit must be a whole number of bytes ≥ 0');
    const id = `${this.host.arrayName}.${pairName}.${this.host.randomId()}`;
    const record: PairRecord = {
      id, name: pairName, role: 'R1', localVolume: name, peer, remoteVolume, mode, intent: 'replicating', onLinkFailure,
      generation: 1, diverged: false, protectWith, extents, cycleMs, cycleMemoryBytes, spillLimitBytes, createdAtMs: Math.floor(this.host.nowMs()),
    };
    // R2 first: a crash after it leaves a half R1 does not know (refused later, deletable on R2),
    // never an R1 shipping to a volume that was not made a replica.
    await this.rpc.request(peer, {
      op: 'pair.create', record: { ...record, role: 'R2', localVolume: remoteVolume, peer: this.host.arrayName, remoteVolume: name },
      sizeBytes: volume.geometry.sizeBytes, trackBytes: volume.geometry.trackBytes,
    }, [], CONTROL_TIMEOUT_MS);
    const runtime = this.attach(record, volume);
    await this.save(runtime, record);
    this.host.onEvent('pair created', { pair: pairName, id, volume: name, peer, remoteVolume, mode });
    runtime.kickPush();
    return this.status(pairName);
  }

  async command(pair: string, command: PairCommand): Promise<PairStatus> {
    const r = this.runtime(pair);
    if (r.record.role === 'R2') return this.commandOnR2(r, command);
    checkCommand(command, r.record);
    checkSiblings(command, r.record, this.recordsOn(r.volume.name));
    if (command === 'swap') refuseIfGrouped(r, 'swap it');
    switch (command) {
      case 'establish': await this.establish(r); break;
      case 'resume': await this.resume(r); break;
      case 'suspend': await this.setBoth(r, 'suspended', r.record.generation, false); break;
      case 'split': await this.setBoth(r, 'split', r.record.generation + 1, true); break;
      case 'failover': await this.failover(r); break;
      case 'failback': case 'restore': await this.startRestore(r); break;
      case 'swap': await this.swap(r); break;
    }
    this.host.onEvent(`pair ${command}`, { pair: r.record.id, state: r.state(), generation: r.record.generation });
    return this.status(pair);
  }

  /**
   * A consistency group let this R1 go (evicted, or its coordinator vanished mid-switch): the cycles
   * fall back to the bitmaps and the pair suspends at once — no resync starts, so R2 keeps the last
   * cycle boundary it holds. The caller may release a write window as soon as this returns.
   */
  suspendForGroup(pair: string, reason: string): Promise<void> {
    const r = this.runtime(pair);
    r.lastError = reason;
    r.group = undefined;
    if (r.record.role !== 'R1' || r.record.intent !== 'replicating') return Promise.resolve();
    // save() stops the cycles before its first await: no write after this point is captured.
    const saved = this.save(r, { ...r.record, intent: 'suspended' });
    this.host.onEvent('pair suspended by its consistency group', { pair: r.record.id, reason });
    return (async () => {
      await saved;
      await this.applyAccess(r);
      try {
        await this.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent: 'suspended', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
      } catch {
        // R2 learns it when the link returns; it takes nothing from a suspended R1 meanwhile.
      }
    })();
  }

  private async commandOnR2(r: PairRuntime, command: PairCommand): Promise<PairStatus> {
    if (r.linkUp) {
      await this.rpc.request(r.record.peer, { op: 'pair.command', pair: r.record.id, command }, [], CONTROL_TIMEOUT_MS * 4);
      return this.show(r.record.name);
    }
    if (command !== 'failover') {
      throw new TidemarkError(ErrorCode.LinkDown,
        `the link to R1 (${r.record.peer}) is down; only 'failover' can be given on R2 alone`, { pair: r.record.id });
    }
    checkCommand(command, { ...r.record, role: 'R1' });
    // The disaster case: R2 takes over alone. A newer generation tells R1 when the link returns.
    await this.save(r, { ...r.record, intent: 'failed-over', generation: r.record.generation + 1 });
    await this.applyAccess(r);
    this.host.onEvent('pair failover (R1 unreachable)', { pair: r.record.id, generation: r.record.generation });
    return this.status(r.record.name);
  }

  /** Sets the intent on both halves: R2 first when it becomes less writable, R1 first otherwise. */
  private async setBoth(r: PairRuntime, intent: PairIntent, generation: number, r2Writable: boolean): Promise<void> {
    const tellR2 = (): Promise<RpcReply> =>
      this.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent, generation }, [], CONTROL_TIMEOUT_MS);
    if (!r2Writable) {
      try {
        await tellR2();
      } catch (error) {
        // Suspending with the link down is still a suspend: R2 stays write-disabled.
        if (!(intent === 'suspended' && (error as TidemarkError).code === ErrorCode.LinkDown)) throw error;
      }
    }
    await this.save(r, { ...r.record, intent, generation });
    await this.applyAccess(r);
    if (r2Writable) await tellR2();
  }

  private async resume(r: PairRuntime): Promise<void> {
    const reply = await this.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
    if (typeof reply.header.ownTracks === 'number' && reply.header.ownTracks > 0) {
      throw new TidemarkError(ErrorCode.PairDiverged,
        `R2 (${r.record.peer}) holds host writes R1 has not got; 'pair establish' keeps R1's data, 'pair restore' keeps R2's`, { pair: r.record.id });
    }
    await this.save(r, { ...r.record, intent: 'replicating' });
    await this.applyAccess(r);
    this.startResync(r);
  }

  /** R1's image wins: R2 is write-disabled and every track either side changed is shipped. */
  private async establish(r: PairRuntime): Promise<void> {
    const generation = r.record.intent === 'replicating' ? r.record.generation : r.record.generation + 1;
    const reply = await this.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation, returnOwn: true }, [], CONTROL_TIMEOUT_MS);
    const own = bitmapFrom(reply, r.volume.geometry.trackCount);
    r.bits.or(own);
    r.owed.markWholeBitmap(own, this.host.nowMs());
    await this.save(r, { ...r.record, intent: 'replicating', generation, diverged: false });
    await this.rpc.request(r.record.peer, { op: 'pair.clear-own', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    await this.applyAccess(r);
    this.startResync(r);
  }

  private async failover(r: PairRuntime): Promise<void> {
    if (!r.linkUp) {
      throw new TidemarkError(ErrorCode.LinkDown,
        `the link to R2 (${r.record.peer}) is down; give 'pair failover' on R2's array to take over there`, { pair: r.record.id });
    }
    // R1 stops taking writes before R2 starts: never both writable through a failover.
    const generation = r.record.generation + 1;
    await this.save(r, { ...r.record, intent: 'failed-over', generation });
    await this.applyAccess(r);
    await this.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent: 'failed-over', generation }, [], CONTROL_TIMEOUT_MS);
  }

  /** R2's image wins (failback, restore): both write-disabled, R1 pulls what differs, then replication resumes. */
  private async startRestore(r: PairRuntime): Promise<void> {
    if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to ${r.record.peer} is down`, { pair: r.record.id });
    const generation = r.record.generation + 1;
    await this.save(r, { ...r.record, intent: 'restoring', generation, diverged: false });
    await this.applyAccess(r);
    const reply = await this.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'restoring', generation, returnOwn: true }, [], CONTROL_TIMEOUT_MS);
    const pull = bitmapFrom(reply, r.volume.geometry.trackCount).or(r.bits);
    const existing = r.volume.findPosition(r.ids.pull);
    if (existing) existing.invalid.or(pull);
    else r.volume.addPosition({ id: r.ids.pull, kind: 'remote-own', marksOn: 'never', invalid: pull });
    r.pull = r.volume.findPosition(r.ids.pull)!.invalid;
    await r.volume.persistBitmaps();
    await this.rpc.request(r.record.peer, { op: 'pair.clear-own', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    r.owed.clearAll();
    this.kickRestore(r);
  }

  private kickRestore(r: PairRuntime): void {
    r.kickPull(async () => {
      await this.rpc.request(r.record.peer,
        { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
      r.volume.removePosition(r.ids.pull);
      r.pull = undefined;
      // Hosts get R1 back before the record says so: until then the pair still shows restoring.
      await this.applyAccess(r, 'replicating');
      await this.save(r, { ...r.record, intent: 'replicating' });
      this.host.onEvent('pair restored from R2', { pair: r.record.id });
      r.kickPush();
    });
  }

  /** Roles exchange over the same link: R2 becomes R1 (taking what the old R1 had not shipped), then R1 becomes R2. */
  private async swap(r: PairRuntime): Promise<void> {
    if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to ${r.record.peer} is down`, { pair: r.record.id });
    const generation = r.record.generation + 1;
    const release = await r.volume.holdWrites();
    try {
      // What was shipped becomes durable on both sides, so its bits clear and are not handed over.
      await r.volume.persistBitmaps();
      if (r.record.intent === 'replicating' && (r.owed.count > 0 || r.state() !== 'synchronized')) {
        throw new TidemarkError(ErrorCode.InvalidState,
          `pair ${r.record.name} is ${r.state()}; swap a replicating pair only when synchronized`, { pair: r.record.id });
      }
      await r.volume.setState('write-disabled');
      try {
        await this.rpc.request(r.record.peer, { op: 'pair.swap', pair: r.record.id, generation },
          [{ kind: 'data', offset: 0, data: r.bits.toBytes() }], CONTROL_TIMEOUT_MS);
      } catch (error) {
        // Refused (the peer's volume is the R1 of too many pairs) or lost: hosts keep this side.
        await r.volume.setState(combinedVolumeState(this.recordsOn(r.volume.name)));
        throw error;
      }
      await this.becomeR2(r, generation);
    } finally {
      release();
    }
  }

  private async becomeR2(r: PairRuntime, generation: number): Promise<void> {
    const record: PairRecord = { ...r.record, role: 'R2', intent: 'replicating', generation, diverged: false };
    this.detach(r);
    const next = this.attach(record, r.volume);
    await this.save(next, record);
    await this.applyAccess(next);
  }

  async setMode(pair: string, mode: PairMode): Promise<PairStatus> {
    if (!PAIR_MODES.includes(mode)) throw invalidArgument(`mode must be one of ${PAIR_MODES.join(', ')}`);
    const r = this.runtime(pair);
    if (r.record.role === 'R2') {
      if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to R1 (${r.record.peer}) is down`);
      await this.rpc.request(r.record.peer, { op: 'pair.set-mode', pair: r.record.id, mode }, [], CONTROL_TIMEOUT_MS);
      return this.show(pair);
    }
    if (mode !== 'async') refuseIfGrouped(r, `switch to ${mode} mode`);
    await this.save(r, { ...r.record, mode });
    if (r.linkUp) await this.rpc.request(r.record.peer, { op: 'pair.set-mode', pair: r.record.id, mode }, [], CONTROL_TIMEOUT_MS).catch(() => undefined);
    this.host.onEvent('pair mode set', { pair: r.record.id, mode });
    return this.status(pair);
  }

  /** Deletes this half, and the peer's when the link is up; both volumes end up ready to hosts. */
  async delete(pair: string): Promise<{ peerDeleted: boolean }> {
    const r = this.runtime(pair);
    refuseIfGrouped(r, 'delete it');
    let peerDeleted = false;
    if (r.linkUp) {
      await this.rpc.request(r.record.peer, { op: 'pair.delete', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
      peerDeleted = true;
    }
    await this.deleteLocal(r);
    this.host.onEvent('pair deleted', { pair: r.record.id, peerDeleted });
    return { peerDeleted };
  }

  private async deleteLocal(r: PairRuntime): Promise<void> {
    this.detach(r);
    await this.host.meta.delete(protectHeldKey(r.record.id));
    await r.volume.persistBitmaps();
    const release = await r.volume.holdWrites();
    try {
      // The volume's other pairs still decide its access (e.g. it stays an R2 of another pair).
      await r.volume.setState(combinedVolumeState(this.recordsOn(r.volume.name)));
    } finally {
      release();
    }
  }

  // ---- background ----

  private kick(): void {
    if (this.closed) return;
    for (const r of this.pairs.values()) {
      if (r.record.role !== 'R1') continue;
      if (r.needsReconcile) {
        // The link is up but R1 has not compared notes with R2 since it came back (or that failed): again.
        if (r.linkUp && !r.reconciling) void this.reconcileSafely(r);
        continue;
      }
      if (r.record.intent === 'restoring') this.kickRestore(r);
      else if (r.needsProtection) void this.protectReplica(r);
      else {
        r.kickPush();
        if (r.record.mode === 'async') void this.startCycles(r);
      }
    }
  }

  /**
   * A resync leaves R2 inconsistent until it ends: with --protect-with, R2's clone is split first
   * (on R2's array), and nothing is shipped to R2 until that is done.
   */
  private async protectReplica(r: PairRuntime): Promise<void> {
    if (r.protectionInFlight || !r.linkUp) return;
    r.protectionInFlight = true;
    try {
      await this.rpc.request(r.record.peer, { op: 'pair.protect', pair: r.record.id, whole: r.r2WholeSinceProtection }, [], PROTECT_TIMEOUT_MS);
      r.needsProtection = false;
      r.r2WholeSinceProtection = false;
      r.kickPush();
    } catch (error) {
      r.lastError = `protecting R2 before the resync failed (will retry): ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      r.protectionInFlight = false;
    }
  }

  /**
   * Async mode starts its cycles from a synchronized pair, inside a write window (no write is half
   * in the bitmaps and half in a cycle); R2 first applies whatever cycles it had committed.
   */
  private async startCycles(r: PairRuntime): Promise<void> {
    const ready = (): boolean => r.record.role === 'R1' && r.record.mode === 'async' && r.record.intent === 'replicating' &&
      !r.capturing && !r.startingAsync && !r.needsProtection && !r.needsReconcile && r.linkUp && !r.peerMissing && !r.retired && r.quiet &&
      (r.group === undefined || r.group.tag !== undefined);
    if (!ready()) return;
    r.startingAsync = true;
    const release = await r.volume.holdWrites();
    try {
      if (!r.quiet || r.record.mode !== 'async' || r.record.intent !== 'replicating' || r.retired) return;
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
      if (r.record.mode !== 'async' || r.record.intent !== 'replicating' || r.retired || !r.quiet || r.group?.tag !== groupTag) return;
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
    } catch (error) {
      r.lastError = `starting async cycles: ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      r.startingAsync = false;
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
  private stopR2Cycles(r: PairRuntime): Promise<void> {
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
  private startResync(r: PairRuntime): void {
    r.noteR2WholeIfQuiet();
    if (r.record.protectWith !== null && r.owed.count > 0) {
      r.needsProtection = true;
      void this.protectReplica(r);
    } else {
      r.kickPush();
    }
  }

  /** A link to `peer` came up: R1 halves compare notes with their R2 and pick up where they were. */
  async peerUp(peer: string): Promise<void> {
    for (const r of [...this.pairs.values()]) {
      if (r.record.peer !== peer || r.record.role !== 'R1') continue;
      await this.reconcileSafely(r);
    }
  }

  /** The link to `peer` went down: its R1 halves ship nothing after it returns until they have reconciled. */
  peerDown(peer: string): void {
    for (const r of this.pairs.values()) if (r.record.peer === peer) r.linkLost();
  }

  private async reconcileSafely(r: PairRuntime): Promise<void> {
    if (r.reconciling) return;
    r.reconciling = true;
    const epoch = r.reconcileStarting();
    try {
      await this.reconcile(r);
      r.reconciledFor(epoch);
      // What reconcile decided may ship now (a resync without protection, a restore).
      if (!r.needsProtection) r.kickPush();
    } catch (error) {
      r.lastError = error instanceof Error ? error.message : String(error);
    } finally {
      r.reconciling = false;
    }
  }

  private async reconcile(r: PairRuntime): Promise<void> {
    const reply = await this.rpc.request(r.record.peer, { op: 'pair.status', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    const h = reply.header;
    if (h.exists !== true) {
      r.peerMissing = true;
      r.lastError = `${r.record.peer} has no half of this pair`;
      return;
    }
    r.peerMissing = false;
    r.remoteTracks = typeof h.invalidTracks === 'number' ? h.invalidTracks : undefined;
    const theirGeneration = Number(h.generation);
    if (theirGeneration > r.record.generation) {
      if (h.role === 'R1') {
        // A swap finished on the peer but not here.
        await this.becomeR2(r, theirGeneration);
        return;
      }
      if (h.intent === 'failed-over') {
        // R2 took over while this side could not hear it. Writes taken here since are a divergence.
        const diverged = r.bits.count() > 0;
        await this.save(r, { ...r.record, intent: 'failed-over', generation: theirGeneration, diverged });
        await this.applyAccess(r);
        this.host.onEvent('pair: R2 failed over while the link was down', { pair: r.record.id, diverged });
        return;
      }
    }
    if (r.record.intent === 'replicating') {
      await this.rpc.request(r.record.peer,
        { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
      this.startResync(r);
    } else if (r.record.intent === 'restoring') {
      this.kickRestore(r);
    }
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

  halves(): PairRuntime[] {
    return [...this.pairs.values()];
  }

  private halfFor(peer: string, header: Readonly<Record<string, unknown>>, role?: 'R1' | 'R2'): PairRuntime {
    const id = header.pair;
    for (const r of this.pairs.values()) {
      if (r.record.id === id && r.record.peer === peer && (role === undefined || r.record.role === role)) return r;
    }
    throw notFound(`no pair ${String(id)} with ${peer} on ${this.host.arrayName}`, { pair: id });
  }

  private registerHandlers(): void {
    const rpc = this.rpc;
    rpc.handle('pair.create', async (peer, h) => {
      const record = parsePairRecord(h.record, 'pair.create');
      if (record.role !== 'R2' || record.peer !== peer) throw invalidArgument('pair.create must describe an R2 half paired with the sender');
      const volume = this.host.volume(record.localVolume);
      if (volume.geometry.sizeBytes !== h.sizeBytes || volume.geometry.trackBytes !== h.trackBytes) {
        throw invalidArgument(`volume ${record.localVolume} on ${this.host.arrayName} is ${volume.geometry.sizeBytes} bytes with ` +
          `${volume.geometry.trackBytes}-byte tracks; R1 has ${String(h.sizeBytes)} and ${String(h.trackBytes)}`);
      }
      const siblings = this.recordsOn(record.localVolume);
      checkNewR2(record.localVolume, siblings);
      if (siblings.some((s) => s.role === 'R1' && s.peer === peer && s.remoteVolume === record.remoteVolume)) {
        throw new TidemarkError(ErrorCode.PairConflict,
          `volume ${record.localVolume} on ${this.host.arrayName} replicates to ${peer}:${record.remoteVolume}; receiving from it would loop`);
      }
      if (this.pairs.has(record.name)) {
        throw new TidemarkError(ErrorCode.AlreadyExists,
          `${this.host.arrayName} already has a pair named ${record.name}; give the new pair another --name`, { pair: record.name });
      }
      this.host.checkPeer(peer);
      if (record.extents !== null) validateExtents(record.extents, volume.geometry);
      if (record.protectWith !== null) {
        if (!this.host.checkProtection) throw invalidArgument('this array cannot protect replicas with clones');
        this.host.checkProtection(record.localVolume, record.protectWith);
      }
      const runtime = this.attach(record, volume);
      runtime.bits.clearAll();
      await this.save(runtime, record);
      await this.applyAccess(runtime);
      this.host.onEvent('pair created (R2)', { pair: record.name, id: record.id, volume: record.localVolume, peer });
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.apply', (peer, h, segments) => {
      const r = this.halfFor(peer, h, 'R2');
      if (r.record.intent !== 'replicating') {
        return Promise.reject(new TidemarkError(ErrorCode.InvalidState,
          `R2 ${r.record.localVolume} is ${r.record.intent}; it takes no replicated writes`));
      }
      // Started synchronously, in link order: overlapping writes apply in the order R1 sent them.
      // Replica writes: new data for R2 (a clone of R2 sees them), not R2's own hosts' changes.
      const options = { source: 'replica' as const, skipPosition: r.ids.own };
      const apply = (): Promise<RpcReply> => {
        const applied = segments.map((s) => (s.kind === 'data'
          ? r.volume.internalWrite(s.offset, s.data.slice(), options)
          : r.volume.internalZero(s.offset, s.length, options)));
        return Promise.all(applied).then(async () => {
          if (h.fua === true) await r.volume.internalFlush();
          return { header: {}, segments: [] };
        });
      };
      // Tracks shipped outside cycles (a resync) must land after every cycle R2 committed.
      if (r.asyncR2 || r.stoppingR2) return this.stopR2Cycles(r).then(apply);
      return apply();
    });
    rpc.handle('pair.flush', async (peer, h) => {
      const r = this.halfFor(peer, h);
      await r.volume.internalFlush();
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.digests', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R2');
      const segments: Segment[] = [];
      const tracks = trackList(h.tracks, r.volume.geometry.trackCount);
      // Holes as they are once writes already in flight there have landed (see lockedRead).
      const span = tracks.length > 0 ? trackRange(r.volume.geometry, Math.min(...tracks)) : undefined;
      const spanEnd = tracks.length > 0 ? trackRange(r.volume.geometry, Math.max(...tracks)) : undefined;
      const unlock = span && spanEnd ? await r.volume.lockRange(span.offset, spanEnd.offset + spanEnd.length - span.offset) : undefined;
      let holes: Set<number>;
      try {
        holes = await holeTracks(r.volume, tracks);
      } finally {
        unlock?.();
      }
      for (const t of tracks) {
        if (holes.has(t)) {
          segments.push({ kind: 'zero', offset: t, length: 0 });
          continue;
        }
        const range = trackRange(r.volume.geometry, t);
        const data = await lockedRead(r.volume, range.offset, range.length);
        if (isAllZero(data)) segments.push({ kind: 'zero', offset: t, length: 0 });
        else segments.push({ kind: 'data', offset: t, data: recordDigests(data, r.volume.geometry.recordBytes) });
      }
      return { header: {}, segments };
    });
    rpc.handle('pair.read', async (peer, h, digests) => {
      const r = this.halfFor(peer, h, 'R2');
      const g = r.volume.geometry;
      const tracks = trackList(h.tracks, g.trackCount);
      const segments: Segment[] = [];
      for (let i = 0; i < tracks.length; i++) {
        const range = trackRange(g, tracks[i]!);
        const data = await lockedRead(r.volume, range.offset, range.length);
        const theirs = digests[i];
        const ours = recordDigests(data, g.recordBytes);
        for (let at = 0, rec = 0; at < data.length; at += g.recordBytes, rec++) {
          if (theirs?.kind === 'data' && theirs.data.length === ours.length && digestEqual(ours, theirs.data, rec)) continue;
          const bytes = data.subarray(at, Math.min(data.length, at + g.recordBytes));
          segments.push(isAllZero(bytes) ? { kind: 'zero', offset: range.offset + at, length: bytes.length } : { kind: 'data', offset: range.offset + at, data: bytes });
        }
      }
      return { header: {}, segments };
    });
    rpc.handle('pair.status', async (peer, h) => {
      const r = [...this.pairs.values()].find((x) => x.record.id === h.pair && x.record.peer === peer);
      if (!r) return { header: { exists: false }, segments: [] };
      return {
        header: {
          exists: true, role: r.record.role, intent: r.record.intent, generation: r.record.generation, invalidTracks: r.bits.count(),
          appliedCycle: r.asyncR2 && !r.asyncR2.stopped ? r.asyncR2.appliedCycle : null,
          recoverableCycle: r.asyncR2 && !r.asyncR2.stopped ? r.asyncR2.cycles.recoverablePoint.cycle : null,
        },
        segments: [],
      };
    });
    rpc.handle('pair.set-intent', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R2');
      if (!PAIR_INTENTS.includes(h.intent as PairIntent) || !Number.isSafeInteger(h.generation)) throw invalidArgument('bad pair.set-intent');
      const generation = Math.max(r.record.generation, h.generation as number);
      const next: PairRecord = { ...r.record, intent: h.intent as PairIntent, generation };
      // R2 stops being a cycle target at a consistent point: every committed cycle applied.
      if (next.intent !== 'replicating') await this.stopR2Cycles(r);
      // Less writable first (before the bitmap is read), more writable after the record is durable.
      const moreWritable = volumeStateFor('R2', next.intent) === 'ready';
      if (!moreWritable) {
        r.record = next;
        await this.applyAccess(r);
      }
      await this.save(r, next);
      if (moreWritable) await this.applyAccess(r);
      const segments: Segment[] = h.returnOwn === true ? [{ kind: 'data', offset: 0, data: r.bits.toBytes() }] : [];
      return { header: { ownTracks: r.bits.count() }, segments };
    });
    rpc.handle('pair.cycles-start', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R2');
      if (!Number.isSafeInteger(h.cycle) || (h.cycle as number) < 1) throw invalidArgument('bad pair.cycles-start');
      const groupFrom = typeof h.groupFrom === 'number' ? h.groupFrom : null;
      if (groupFrom !== null && groupFrom !== h.cycle) throw invalidArgument('bad pair.cycles-start');
      await this.stopR2Cycles(r);
      r.asyncR2 = await R2Async.start(this.r2CyclesHost(r), h.cycle as number, groupFrom);
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.cycle', async (peer, h, segments) => {
      const r = this.halfFor(peer, h, 'R2');
      if (!r.asyncR2 || r.stoppingR2) throw new TidemarkError(ErrorCode.InvalidState, `R2 ${r.record.localVolume} runs no cycles`);
      r.asyncR2.handle(cycleMessageFromWire(h, segments) as R1Message);
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.cycle-r2', async (peer, h, segments) => {
      const r = this.halfFor(peer, h, 'R1');
      const message = cycleMessageFromWire(h, segments) as R2Message;
      if (r.capturing) r.asyncR1!.receive(message);
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.protect', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R2');
      if (r.record.protectWith === null || !this.host.protect) return { header: { protected: false }, segments: [] };
      // The clone already holds R2's last consistent image and R1 has not seen R2 whole since (a
      // resync interrupted, R1 restarted meanwhile): refreshing it now would copy a half-resynced R2.
      if (h.whole !== true && await this.host.meta.read(protectHeldKey(r.record.id))) return { header: { protected: true, kept: true }, segments: [] };
      await this.host.protect(r.record.localVolume, r.record.protectWith);
      await this.host.meta.write(protectHeldKey(r.record.id), new TextEncoder().encode(String(this.host.nowMs())));
      this.host.onEvent('replica protected by a clone split before resync', { pair: r.record.id, clone: r.record.protectWith });
      return { header: { protected: true }, segments: [] };
    });
    rpc.handle('pair.clear-own', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R2');
      r.bits.clearAll();
      await r.volume.persistBitmaps();
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.set-mode', async (peer, h) => {
      const r = this.halfFor(peer, h);
      if (!PAIR_MODES.includes(h.mode as PairMode)) throw invalidArgument('bad mode');
      if (r.record.role === 'R1') await this.setMode(r.record.name, h.mode as PairMode);
      else await this.save(r, { ...r.record, mode: h.mode as PairMode });
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.command', async (peer, h) => {
      const r = this.halfFor(peer, h, 'R1');
      await this.command(r.record.name, h.command as PairCommand);
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.swap', async (peer, h, segments) => {
      const r = this.halfFor(peer, h, 'R2');
      const theirs = segments[0];
      if (theirs?.kind !== 'data' || !Number.isSafeInteger(h.generation)) throw invalidArgument('bad pair.swap');
      // Checked before anything changes: R1 takes its volume back if this refuses.
      checkNewR1(r.volume.name, this.recordsOn(r.volume.name).filter((x) => x.id !== r.record.id));
      const out = TrackBitmap.fromBytes(r.volume.geometry.trackCount, theirs.data.slice()).or(r.bits);
      const record: PairRecord = { ...r.record, role: 'R1', intent: 'replicating', generation: h.generation as number, diverged: false };
      this.detach(r);
      r.volume.addPosition({ id: positionIds(record.id).out, kind: 'remote-out', marksOn: 'all', invalid: out });
      const next = this.attach(record, r.volume);
      next.owed.markWholeBitmap(out, this.host.nowMs());
      await this.save(next, record);
      await this.applyAccess(next);
      this.host.onEvent('pair swapped: now R1', { pair: record.id });
      return { header: {}, segments: [] };
    });
    rpc.handle('pair.delete', async (peer, h) => {
      const r = this.halfFor(peer, h);
      refuseIfGrouped(r, 'delete it');
      await this.deleteLocal(r);
      this.host.onEvent('pair deleted by peer', { pair: r.record.id });
      return { header: {}, segments: [] };
    });
  }

  private r2CyclesHost(r: PairRuntime): R2AsyncHost {
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
    for (const r of this.pairs.values()) r.retired = true;
  }
}

/**
 * Reads a range after every write already in flight to it has landed: an answer about R2's
 * content (digests, a pull) must not predate a write R2 has accepted (found by pair seed 13: a
 * slow replica write landed after R2 had answered that the track was still zeros).
 */
async function lockedRead(volume: Volume, offset: number, length: number): Promise<Uint8Array> {
  const unlock = await volume.lockRange(offset, length);
  try {
    return await volume.internalRead(offset, length);
  } finally {
    unlock();
  }
}

function formatBytes(n: number): string {
  for (const [unit, size] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= size) return `${Number((n / size).toFixed(1))} ${unit}`;
  }
  return `${n} bytes`;
}

function bitmapFrom(reply: RpcReply, trackCount: number): TrackBitmap {
  const s = reply.segments[0];
  if (s?.kind !== 'data') throw new TidemarkError(ErrorCode.Protocol, 'expected a bitmap from the peer');
  return TrackBitmap.fromBytes(trackCount, s.data.slice());
}

function trackList(value: unknown, trackCount: number): number[] {
  if (!Array.isArray(value) || value.length > 1024 || !value.every((t) => Number.isSafeInteger(t) && t >= 0 && t < trackCount)) {
    throw invalidArgument('bad track list');
  }
  return value as number[];
}

/** A consistency group member must leave its group before it stops being an async R1. */
function refuseIfGrouped(r: PairRuntime, what: string): void {
  if (r.group) {
    throw new TidemarkError(ErrorCode.InvalidState,
      `pair ${r.record.name} is in consistency group ${r.group.name}: remove it from the group before you ${what}`, { group: r.group.name });
  }
}

/** On R2: its protection clone holds R2's last consistent image; refreshed only when R1 has seen R2 whole since. */
const protectHeldKey = (pairId: string): string => `protect-held/${pairId}`;

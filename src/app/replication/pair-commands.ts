// The pair commands of SPEC §4 as given on this array: create, establish, suspend, resume, split,
// failover, failback, restore, swap, mode changes and delete. R1 drives a pair; a command given on
// R2's array is forwarded to R1, except a failover with the link down (the disaster case), which
// R2 takes alone. Which intent and generation a command leads to is decided in the core
// (pair-rules.ts intentChange); here the halves are changed in the order it says.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument } from '../../core/errors.js';
import {
  DEFAULT_CYCLE_MEMORY_BYTES, DEFAULT_SPILL_LIMIT_BYTES, LINK_FAILURE_POLICIES, MAX_MIN_AGE_MS, MIN_CYCLE_MEMORY_BYTES, PAIR_MODES,
  type LinkFailurePolicy, type PairMode, type PairRecord,
} from '../../core/replication/pair-record.js';
import { checkCommand, intentChange, type IntentChange, type PairCommand } from '../../core/replication/pair-rules.js';
import { checkNewR1, checkR1VolumeState, checkSiblings, choosePairName, combinedVolumeState } from '../../core/replication/pair-set.js';
import { validateExtents, type ByteExtent } from '../../core/replication/pair-extents.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import { DEFAULT_CYCLE_MS, MIN_CYCLE_MS } from './async-cycles.js';
import type { PairRuntime } from './pair-runtime.js';
import type { RpcReply } from './peer-rpc.js';
import { CONTROL_TIMEOUT_MS, protectHeldKey, refuseIfGrouped, type PairContext } from './pair-context.js';
import { pairStatus, showPair } from './pair-status.js';
import type { PairStatusView as PairStatus } from '../../adapters/http/replication-routes.js';

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
  /** adaptive mode: a change ships no sooner than this long after it was made. */
  readonly minAgeMs?: number;
}

export class PairCommands {
  constructor(private readonly context: PairContext) {}

  private statusOf(pair: string): PairStatus {
    return pairStatus(this.context, this.context.runtime(pair));
  }

  private showOf(pair: string): Promise<PairStatus> {
    return showPair(this.context, this.context.runtime(pair));
  }

  async create(options: PairCreateOptions): Promise<PairStatus> {
    const { volume: name, peer, remoteVolume, mode, onLinkFailure } = options;
    const protectWith = options.protectWith ?? null;
    if (!PAIR_MODES.includes(mode)) throw invalidArgument(`mode must be one of ${PAIR_MODES.join(', ')}`);
    if (!LINK_FAILURE_POLICIES.includes(onLinkFailure)) throw invalidArgument(`on-link-failure must be one of ${LINK_FAILURE_POLICIES.join(', ')}`);
    const volume = this.context.host.volume(name);
    this.context.host.checkPeer(peer);
    const siblings = this.context.recordsOn(name);
    const pairName = choosePairName(name, options.name, siblings, (n) => this.context.hasPair(n));
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
    const minAgeMs = options.minAgeMs ?? 0;
    if (!Number.isSafeInteger(minAgeMs) || minAgeMs < 0 || minAgeMs > MAX_MIN_AGE_MS) {
      throw invalidArgument(`--min-age must be from 0 to ${MAX_MIN_AGE_MS / 1000} s`);
    }
    if (minAgeMs > 0 && mode !== 'adaptive') throw invalidArgument('--min-age applies to adaptive mode only');
    const id = `${this.context.host.arrayName}.${pairName}.${this.context.host.randomId()}`;
    const record: PairRecord = {
      id, name: pairName, role: 'R1', localVolume: name, peer, remoteVolume, mode, intent: 'replicating', onLinkFailure,
      generation: 1, diverged: false, protectWith, extents, cycleMs, cycleMemoryBytes, spillLimitBytes, minAgeMs, createdAtMs: Math.floor(this.context.host.nowMs()),
    };
    // R2 first: a crash after it leaves a half R1 does not know (refused later, deletable on R2),
    // never an R1 shipping to a volume that was not made a replica.
    await this.context.rpc.request(peer, {
      op: 'pair.create', record: { ...record, role: 'R2', localVolume: remoteVolume, peer: this.context.host.arrayName, remoteVolume: name },
      sizeBytes: volume.geometry.sizeBytes, trackBytes: volume.geometry.trackBytes,
    }, [], CONTROL_TIMEOUT_MS);
    const runtime = this.context.attach(record, volume);
    await this.context.save(runtime, record);
    this.context.host.onEvent('pair created', { pair: pairName, id, volume: name, peer, remoteVolume, mode });
    runtime.kickPush();
    return this.statusOf(pairName);
  }

  async command(pair: string, command: PairCommand): Promise<PairStatus> {
    const r = this.context.runtime(pair);
    if (r.record.role === 'R2') return this.commandOnR2(r, command);
    checkCommand(command, r.record);
    checkSiblings(command, r.record, this.context.recordsOn(r.volume.name));
    if (command === 'swap') refuseIfGrouped(r, 'swap it');
    const change = intentChange(command, r.record);
    switch (command) {
      case 'establish': await this.establish(r, change.generation); break;
      case 'resume': await this.resume(r); break;
      case 'suspend': case 'split': await this.setBoth(r, change); break;
      case 'failover': await this.failover(r, change.generation); break;
      case 'failback': case 'restore': await this.startRestore(r, change.generation); break;
      case 'swap': await this.swap(r, change.generation); break;
    }
    this.context.host.onEvent(`pair ${command}`, { pair: r.record.id, state: r.state(), generation: r.record.generation });
    return this.statusOf(pair);
  }

  /**
   * A consistency group let this R1 go (evicted, or its coordinator vanished mid-switch): the cycles
   * fall back to the bitmaps and the pair suspends at once — no resync starts, so R2 keeps the last
   * cycle boundary it holds. The caller may release a write window as soon as this returns.
   */
  suspendForGroup(pair: string, reason: string): Promise<void> {
    const r = this.context.runtime(pair);
    r.lastError = reason;
    r.group = undefined;
    if (r.record.role !== 'R1' || r.record.intent !== 'replicating') return Promise.resolve();
    // save() stops the cycles before its first await: no write after this point is captured.
    const saved = this.context.save(r, { ...r.record, intent: 'suspended' });
    this.context.host.onEvent('pair suspended by its consistency group', { pair: r.record.id, reason });
    return (async () => {
      await saved;
      await this.context.applyAccess(r);
      try {
        await this.context.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent: 'suspended', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
      } catch {
        // R2 learns it when the link returns; it takes nothing from a suspended R1 meanwhile.
      }
    })();
  }

  private async commandOnR2(r: PairRuntime, command: PairCommand): Promise<PairStatus> {
    if (r.linkUp) {
      await this.context.rpc.request(r.record.peer, { op: 'pair.command', pair: r.record.id, command }, [], CONTROL_TIMEOUT_MS * 4);
      return this.showOf(r.record.name);
    }
    if (command !== 'failover') {
      throw new TidemarkError(ErrorCode.LinkDown,
        `the link to R1 (${r.record.peer}) is down; only 'failover' can be given on R2 alone`, { pair: r.record.id });
    }
    checkCommand(command, { ...r.record, role: 'R1' });
    // The disaster case: R2 takes over alone. A newer generation tells R1 when the link returns.
    await this.context.save(r, { ...r.record, intent: 'failed-over', generation: intentChange(command, r.record).generation });
    await this.context.applyAccess(r);
    this.context.host.onEvent('pair failover (R1 unreachable)', { pair: r.record.id, generation: r.record.generation });
    return this.statusOf(r.record.name);
  }

  /** Sets the intent on both halves, in the order the change says (never both writable). */
  private async setBoth(r: PairRuntime, { intent, generation, r2First }: IntentChange): Promise<void> {
    const tellR2 = (): Promise<RpcReply> =>
      this.context.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent, generation }, [], CONTROL_TIMEOUT_MS);
    if (r2First) {
      try {
        await tellR2();
      } catch (error) {
        // Suspending with the link down is still a suspend: R2 stays write-disabled.
        if (!(intent === 'suspended' && (error as TidemarkError).code === ErrorCode.LinkDown)) throw error;
      }
    }
    await this.context.save(r, { ...r.record, intent, generation });
    await this.context.applyAccess(r);
    if (!r2First) await tellR2();
  }

  private async resume(r: PairRuntime): Promise<void> {
    const reply = await this.context.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation: r.record.generation }, [], CONTROL_TIMEOUT_MS);
    if (typeof reply.header.ownTracks === 'number' && reply.header.ownTracks > 0) {
      throw new TidemarkError(ErrorCode.PairDiverged,
        `R2 (${r.record.peer}) holds host writes R1 has not got; 'pair establish' keeps R1's data, 'pair restore' keeps R2's`, { pair: r.record.id });
    }
    await this.context.save(r, { ...r.record, intent: 'replicating' });
    await this.context.applyAccess(r);
    this.context.startResync(r);
  }

  /** R1's image wins: R2 is write-disabled and every track either side changed is shipped. */
  private async establish(r: PairRuntime, generation: number): Promise<void> {
    const reply = await this.context.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'replicating', generation, returnOwn: true }, [], CONTROL_TIMEOUT_MS);
    const own = bitmapFrom(reply, r.volume.geometry.trackCount);
    r.bits.or(own);
    r.owed.markWholeBitmap(own, this.context.host.nowMs());
    await this.context.save(r, { ...r.record, intent: 'replicating', generation, diverged: false });
    await this.context.rpc.request(r.record.peer, { op: 'pair.clear-own', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    await this.context.applyAccess(r);
    this.context.startResync(r);
  }

  private async failover(r: PairRuntime, generation: number): Promise<void> {
    if (!r.linkUp) {
      throw new TidemarkError(ErrorCode.LinkDown,
        `the link to R2 (${r.record.peer}) is down; give 'pair failover' on R2's array to take over there`, { pair: r.record.id });
    }
    // R1 stops taking writes before R2 starts: never both writable through a failover.
    await this.context.save(r, { ...r.record, intent: 'failed-over', generation });
    await this.context.applyAccess(r);
    await this.context.rpc.request(r.record.peer, { op: 'pair.set-intent', pair: r.record.id, intent: 'failed-over', generation }, [], CONTROL_TIMEOUT_MS);
  }

  /** R2's image wins (failback, restore): both write-disabled, R1 pulls what differs, then replication resumes. */
  private async startRestore(r: PairRuntime, generation: number): Promise<void> {
    if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to ${r.record.peer} is down`, { pair: r.record.id });
    await this.context.save(r, { ...r.record, intent: 'restoring', generation, diverged: false });
    await this.context.applyAccess(r);
    const reply = await this.context.rpc.request(r.record.peer,
      { op: 'pair.set-intent', pair: r.record.id, intent: 'restoring', generation, returnOwn: true }, [], CONTROL_TIMEOUT_MS);
    const pull = bitmapFrom(reply, r.volume.geometry.trackCount).or(r.bits);
    const existing = r.volume.findPosition(r.ids.pull);
    if (existing) existing.invalid.or(pull);
    else r.volume.addPosition({ id: r.ids.pull, kind: 'remote-own', marksOn: 'never', invalid: pull });
    r.pull = r.volume.findPosition(r.ids.pull)!.invalid;
    await r.volume.persistBitmaps();
    await this.context.rpc.request(r.record.peer, { op: 'pair.clear-own', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
    r.owed.clearAll();
    this.context.kickRestore(r);
  }


  /** Roles exchange over the same link: R2 becomes R1 (taking what the old R1 had not shipped), then R1 becomes R2. */
  private async swap(r: PairRuntime, generation: number): Promise<void> {
    if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to ${r.record.peer} is down`, { pair: r.record.id });
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
        await this.context.rpc.request(r.record.peer, { op: 'pair.swap', pair: r.record.id, generation },
          [{ kind: 'data', offset: 0, data: r.bits.toBytes() }], CONTROL_TIMEOUT_MS);
      } catch (error) {
        // Refused (the peer's volume is the R1 of too many pairs) or lost: hosts keep this side.
        await r.volume.setState(combinedVolumeState(this.context.recordsOn(r.volume.name)));
        throw error;
      }
      await this.context.becomeR2(r, generation);
    } finally {
      release();
    }
  }


  async setMode(pair: string, mode: PairMode): Promise<PairStatus> {
    if (!PAIR_MODES.includes(mode)) throw invalidArgument(`mode must be one of ${PAIR_MODES.join(', ')}`);
    const r = this.context.runtime(pair);
    if (r.record.role === 'R2') {
      if (!r.linkUp) throw new TidemarkError(ErrorCode.LinkDown, `the link to R1 (${r.record.peer}) is down`);
      await this.context.rpc.request(r.record.peer, { op: 'pair.set-mode', pair: r.record.id, mode }, [], CONTROL_TIMEOUT_MS);
      return this.showOf(pair);
    }
    if (mode !== 'async') refuseIfGrouped(r, `switch to ${mode} mode`);
    await this.context.save(r, { ...r.record, mode });
    if (r.linkUp) await this.context.rpc.request(r.record.peer, { op: 'pair.set-mode', pair: r.record.id, mode }, [], CONTROL_TIMEOUT_MS).catch(() => undefined);
    this.context.host.onEvent('pair mode set', { pair: r.record.id, mode });
    return this.statusOf(pair);
  }

  /** Deletes this half, and the peer's when the link is up; both volumes end up ready to hosts. */
  async delete(pair: string): Promise<{ peerDeleted: boolean }> {
    const r = this.context.runtime(pair);
    refuseIfGrouped(r, 'delete it');
    let peerDeleted = false;
    if (r.linkUp) {
      await this.context.rpc.request(r.record.peer, { op: 'pair.delete', pair: r.record.id }, [], CONTROL_TIMEOUT_MS);
      peerDeleted = true;
    }
    await this.deleteLocal(r);
    this.context.host.onEvent('pair deleted', { pair: r.record.id, peerDeleted });
    return { peerDeleted };
  }

  async deleteLocal(r: PairRuntime): Promise<void> {
    this.context.detach(r);
    await this.context.host.meta.delete(protectHeldKey(r.record.id));
    await r.volume.persistBitmaps();
    const release = await r.volume.holdWrites();
    try {
      // The volume's other pairs still decide its access (e.g. it stays an R2 of another pair).
      await r.volume.setState(combinedVolumeState(this.context.recordsOn(r.volume.name)));
    } finally {
      release();
    }
  }
}

function bitmapFrom(reply: { readonly segments: readonly Segment[] }, trackCount: number): TrackBitmap {
  const s = reply.segments[0];
  if (s?.kind !== 'data') throw new TidemarkError(ErrorCode.Protocol, 'expected a bitmap from the peer');
  return TrackBitmap.fromBytes(trackCount, s.data.slice());
}

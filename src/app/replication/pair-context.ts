// What the parts of the pair manager share: the array they run on (PairHost) and the registry of
// pair halves with the operations every part needs (PairContext). PairManager implements it;
// the commands (pair-commands.ts), the peer requests (pair-peer-handlers.ts) and the status
// (pair-status.ts) see only this, so none of them imports another or the manager.
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import type { PairIntent, PairRecord } from '../../core/replication/pair-record.js';
import type { Volume } from '../volume/volume.js';
import type { MetaStore } from '../../ports/meta-store.js';
import type { SpillStore } from '../../ports/spill-store.js';
import type { Timers } from '../../ports/timers.js';
import type { PairRuntime } from './pair-runtime.js';
import type { PeerRpc } from './peer-rpc.js';
import type { R2AsyncHost } from './async-cycles.js';

/** How long a control request to the peer may take (most commands). */
export const CONTROL_TIMEOUT_MS = 15_000;

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

export interface PairContext {
  readonly host: PairHost;
  readonly rpc: PeerRpc;
  /** Whether this array has a pair half named `name`. */
  hasPair(name: string): boolean;
  /** The pair half named `pair` (or the only pair of the volume named `pair`). */
  runtime(pair: string): PairRuntime;
  /** Every pair half on this array. */
  halves(): PairRuntime[];
  /** The half of pair `pairId` paired with `peer` (and in `role`, when given); not found otherwise. */
  halfFor(peer: string, pairId: string, role?: 'R1' | 'R2'): PairRuntime;
  recordsOn(volume: string): PairRecord[];
  /** Takes a pair half into the registry; `live`: made in an exchange with the peer just now. */
  attach(record: PairRecord, volume: Volume, live?: boolean): PairRuntime;
  detach(runtime: PairRuntime): void;
  /** Persists a changed record with the volume's bitmaps. */
  save(runtime: PairRuntime, record: PairRecord): Promise<void>;
  /** Sets the volume's host access for the pair's role and intent (in a write window). */
  applyAccess(runtime: PairRuntime, intent?: PairIntent): Promise<void>;
  /** Owed tracks are to ship: the lifecycle decides whether R2 is protected first. */
  startResync(runtime: PairRuntime): void;
  /** Continues (or starts) a restore's pull from R2. */
  kickRestore(runtime: PairRuntime): void;
  becomeR2(runtime: PairRuntime, generation: number): Promise<void>;
  /** R2: apply every cycle it committed, then drop the cycles. */
  stopR2Cycles(runtime: PairRuntime): Promise<void>;
  r2CyclesHost(runtime: PairRuntime): R2AsyncHost;
}

/** A consistency group member must leave its group before it stops being an async R1. */
export function refuseIfGrouped(r: PairRuntime, what: string): void {
  if (r.group) {
    throw new TidemarkError(ErrorCode.InvalidState,
      `pair ${r.record.name} is in consistency group ${r.group.name}: remove it from the group before you ${what}`, { group: r.group.name });
  }
}

/** On R2: its protection clone holds R2's last consistent image; refreshed only when R1 has seen R2 whole since. */
export const protectHeldKey = (pairId: string): string => `protect-held/${pairId}`;

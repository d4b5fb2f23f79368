// The pair's rules as pure functions: which host access each side allows, what state users see,
// and which commands are allowed from which intent. The app performs; these decide.
import { ErrorCode, TidemarkError } from '../errors.js';
import type { VolumeState } from '../volume/state.js';
import type { PairIntent, PairRecord, PairRole } from './pair-record.js';

export type PairState =
  | 'synchronizing' | 'synchronized' | 'partitioned' | 'suspended' | 'split' | 'failed-over' | 'restoring' | 'diverged';

/** R1 serves hosts unless R2 is the live side; R2 only while split or failed over. */
export function volumeStateFor(role: PairRole, intent: PairIntent): VolumeState {
  if (role === 'R1') return intent === 'failed-over' || intent === 'restoring' ? 'write-disabled' : 'ready';
  return intent === 'split' || intent === 'failed-over' ? 'ready' : 'write-disabled';
}

/**
 * The volume state the pair sets. An R2 that replicates only some extents stays ready (its hosts
 * use the rest); writes into its extents are refused range by range instead.
 */
export function pairVolumeState(record: PairRecord, intent: PairIntent = record.intent): VolumeState {
  if (record.role === 'R2' && record.extents !== null) return 'ready';
  return volumeStateFor(record.role, intent);
}

export interface PairFacts {
  readonly linkUp: boolean;
  /** Tracks R1 still has to ship (R1) or R1 still has to pull (restoring). */
  readonly tracksOwed: number;
}

export function pairState(record: PairRecord, facts: PairFacts): PairState {
  if (record.diverged) return 'diverged';
  switch (record.intent) {
    case 'replicating':
      if (!facts.linkUp) return 'partitioned';
      return facts.tracksOwed > 0 ? 'synchronizing' : 'synchronized';
    case 'suspended':
    case 'split':
    case 'failed-over':
    case 'restoring':
      return record.intent;
  }
}

export type PairCommand = 'establish' | 'resume' | 'suspend' | 'split' | 'failover' | 'failback' | 'restore' | 'swap';

const ALLOWED: Record<PairCommand, readonly PairIntent[]> = {
  // Establish ships R1's image over R2's changes: the explicit choice of R1 after a split or failover.
  establish: ['suspended', 'split', 'failed-over', 'replicating'],
  // Resume never overwrites R2's host writes: only from intents in which R2 was write-disabled.
  resume: ['suspended', 'replicating'],
  suspend: ['replicating'],
  split: ['replicating', 'suspended'],
  failover: ['replicating', 'suspended', 'split'],
  failback: ['failed-over'],
  // Restore copies R2's image over R1's changes: the explicit choice of R2.
  restore: ['suspended', 'split', 'failed-over'],
  swap: ['replicating', 'failed-over'],
};

/** Throws TM_ERR_INVALID_STATE / TM_ERR_PAIR_DIVERGED when the command is not allowed now. */
export function checkCommand(command: PairCommand, record: PairRecord): void {
  const allowed = ALLOWED[command];
  if (!allowed.includes(record.intent)) {
    throw new TidemarkError(ErrorCode.InvalidState,
      `pair ${record.name}: '${command}' is not allowed while ${record.intent} (allowed while ${allowed.join(', ')})`,
      { pair: record.name, id: record.id, intent: record.intent, command });
  }
  if (record.diverged && (command === 'resume' || command === 'failback' || command === 'swap')) {
    throw new TidemarkError(ErrorCode.PairDiverged,
      `pair ${record.name}: both sides were written after they parted; choose the surviving side: ` +
      `'pair establish' keeps R1's data, 'pair restore' keeps R2's`,
      { pair: record.id });
  }
}

/** What a command makes of the pair's intent and generation, and which half learns it first. */
export interface IntentChange {
  readonly intent: PairIntent;
  readonly generation: number;
  /**
   * R2's record changes before R1's: when R2 becomes or stays write-disabled (it must stop taking
   * host writes before R1 goes on); otherwise R1 first, so the halves are never both writable.
   */
  readonly r2First: boolean;
}

const CHANGES: Record<PairCommand, { readonly intent: PairIntent; readonly newGeneration: boolean; readonly r2First: boolean }> = {
  suspend: { intent: 'suspended', newGeneration: false, r2First: true },
  resume: { intent: 'replicating', newGeneration: false, r2First: true },
  // The images part (split, failover) or one side's image wins (restore, establish): a new
  // generation, so a half that missed the change learns it from the number when the link returns.
  split: { intent: 'split', newGeneration: true, r2First: false },
  establish: { intent: 'replicating', newGeneration: true, r2First: true },
  failover: { intent: 'failed-over', newGeneration: true, r2First: false },
  failback: { intent: 'restoring', newGeneration: true, r2First: false },
  restore: { intent: 'restoring', newGeneration: true, r2First: false },
  // Roles exchange: the new R1 (today's R2) takes the new generation first.
  swap: { intent: 'replicating', newGeneration: true, r2First: true },
};

/** The intent and generation a command (allowed: see checkCommand) leads to, from R1's record. */
export function intentChange(command: PairCommand, record: PairRecord): IntentChange {
  const change = CHANGES[command];
  // Establishing a pair that already replicates re-ships R2's own changes: the lineage goes on.
  const newGeneration = change.newGeneration && !(command === 'establish' && record.intent === 'replicating');
  return { intent: change.intent, generation: record.generation + (newGeneration ? 1 : 0), r2First: change.r2First };
}

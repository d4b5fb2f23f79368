// Online migration of a volume onto another volume's storage (SPEC §8; docs/design/migration.md),
// as a pure machine: which state the migration is in, what the volume's writes do to the other
// storage in that state, which background work is due, and which commands are allowed. The app
// (src/app/migration/migration-manager.ts) executes what it asks; the simulator drives the same class.
//
//   copying ──(all tracks copied; auto, or `cutover` with manual cutover)──▶ cut-over
//   cut-over ──detach──▶ detached ──reattach (replays the tracks written meanwhile)──▶ cut-over
//   cut-over | detached ──finish──▶ finished (the old storage is dropped)
//
// "The other storage" is the target volume's storage while copying and VOL's old storage after
// the cutover (the two volumes exchange stores then), so one tracks-left bitmap serves both.
import { ErrorCode, TidemarkError } from '../errors.js';
import type { MarksOn } from '../volume/mirror-positions.js';

export const MIGRATION_STATES = ['copying', 'cut-over', 'detached', 'finished'] as const;
export type MigrationState = (typeof MIGRATION_STATES)[number];

/** What is persisted (checksummed JSON under `migration/VOL`). */
export interface MigrationRecord {
  readonly volume: string;
  /** The volume whose storage VOL moves to (after the cutover it holds VOL's old storage). */
  readonly target: string;
  readonly state: MigrationState;
  readonly manualCutover: boolean;
  readonly startedAtMs: number;
  readonly cutOverAtMs: number | null;
  readonly detachedAtMs: number | null;
  /** Tracks the last reattach had to replay (0 before any). */
  readonly tracksReplayed: number;
  /** Finished, and the stores are settled: VOL's storage carries VOL's name again, the old one is gone. */
  readonly settled: boolean;
}

export type MigrationEvent =
  | { readonly kind: 'cut-over' }
  | { readonly kind: 'detach' }
  /** `tracksLeft`: what the other storage lacks now (the tracks written while detached). */
  | { readonly kind: 'reattach'; readonly tracksLeft: number }
  | { readonly kind: 'finish' }
  | { readonly kind: 'settled' };

/** The work the app should do next. */
export type MigrationAction =
  /** Copy (or replay) tracks of the bitmap to the other storage. */
  | { readonly kind: 'copy' }
  /** Every track is copied and the cutover is automatic: cut over now (in a write window). */
  | { readonly kind: 'cut-over' }
  /** Finished, stores not yet settled: give VOL's storage VOL's name and drop the old storage. */
  | { readonly kind: 'settle' }
  | { readonly kind: 'none' };

const refuse = (record: MigrationRecord, command: string, why: string): TidemarkError =>
  new TidemarkError(ErrorCode.InvalidState, `cannot ${command} the migration of ${record.volume}: ${why}`,
    { volume: record.volume, state: record.state });

export function newMigration(volume: string, target: string, manualCutover: boolean, nowMs: number): MigrationRecord {
  return {
    volume, target, state: 'copying', manualCutover, startedAtMs: Math.floor(nowMs), cutOverAtMs: null, detachedAtMs: null,
    tracksReplayed: 0, settled: false,
  };
}

export class MigrationMachine {
  private current: MigrationRecord;

  constructor(record: MigrationRecord) {
    this.current = record;
  }

  get record(): MigrationRecord {
    return this.current;
  }

  get state(): MigrationState {
    return this.current.state;
  }

  /** VOL is served from the target's storage (and the target volume holds VOL's old storage). */
  get storesExchanged(): boolean {
    return this.current.state === 'cut-over' || this.current.state === 'detached' ||
      (this.current.state === 'finished' && !this.current.settled);
  }

  /** VOL's writes also go to the other storage (those to tracks it already holds: the rest the copy takes). */
  get mirroring(): boolean {
    return this.current.state === 'copying' || this.current.state === 'cut-over';
  }

  /**
   * How VOL's writes mark the tracks-left bitmap. Mirrored, a write marks nothing (it reaches the
   * other storage, or its track is still to be copied), but a crash may have left the two storages
   * apart in the activity log's hot extents. Detached, every write is a change to replay.
   */
  get marksOn(): MarksOn {
    switch (this.current.state) {
      case 'copying':
      case 'cut-over':
        return 'recovery';
      case 'detached':
        return 'all';
      case 'finished':
        return 'never';
    }
  }

  /** The next background work, given how many tracks the other storage lacks. */
  poll(tracksLeft: number): MigrationAction {
    const r = this.current;
    if (r.state === 'finished') return r.settled ? { kind: 'none' } : { kind: 'settle' };
    if (!this.mirroring) return { kind: 'none' };
    if (tracksLeft > 0) return { kind: 'copy' };
    if (r.state === 'copying' && !r.manualCutover) return { kind: 'cut-over' };
    return { kind: 'none' };
  }

  /** Checks a command is allowed now (before the app opens a write window for it). */
  check(event: MigrationEvent, tracksLeft: number): void {
    const r = this.current;
    switch (event.kind) {
      case 'cut-over':
        if (r.state !== 'copying') throw refuse(r, 'cut over', `it is ${r.state}`);
        if (tracksLeft > 0) throw refuse(r, 'cut over', `${tracksLeft} tracks are still to be copied`);
        return;
      case 'detach':
        if (r.state !== 'cut-over') throw refuse(r, 'detach', r.state === 'copying' ? 'it has not cut over yet' : `it is ${r.state}`);
        return;
      case 'reattach':
        if (r.state !== 'detached') throw refuse(r, 'reattach', `it is ${r.state}, not detached`);
        return;
      case 'finish':
        if (r.state === 'copying') throw refuse(r, 'finish', 'it has not cut over yet (VOL still lives on its old storage)');
        if (r.state === 'finished') throw refuse(r, 'finish', 'it is already finished');
        return;
      case 'settled':
        if (r.state !== 'finished' || r.settled) throw refuse(r, 'settle', `it is ${r.state}`);
        return;
    }
  }

  /** Applies an event (checked first); returns the record to persist before anyone relies on it. */
  handle(event: MigrationEvent, nowMs: number, tracksLeft: number): MigrationRecord {
    this.check(event, tracksLeft);
    const r = this.current;
    switch (event.kind) {
      case 'cut-over':
        this.current = { ...r, state: 'cut-over', cutOverAtMs: Math.floor(nowMs) };
        break;
      case 'detach':
        this.current = { ...r, state: 'detached', detachedAtMs: Math.floor(nowMs) };
        break;
      case 'reattach':
        this.current = { ...r, state: 'cut-over', detachedAtMs: null, tracksReplayed: event.tracksLeft };
        break;
      case 'finish':
        this.current = { ...r, state: 'finished' };
        break;
      case 'settled':
        this.current = { ...r, settled: true };
        break;
    }
    return this.current;
  }
}

/** A stored record, checked field by field (refuse to run on a record that does not make sense). */
export function parseMigrationRecord(value: unknown, key: string): MigrationRecord {
  const bad = (why: string): TidemarkError => new TidemarkError(ErrorCode.MetadataCorrupt, `migration record ${key}: ${why}`);
  if (value === null || typeof value !== 'object') throw bad('not an object');
  const r = value as Record<string, unknown>;
  const str = (k: string): string => {
    if (typeof r[k] !== 'string' || (r[k] as string).length === 0) throw bad(`${k} is not a name`);
    return r[k] as string;
  };
  const num = (k: string, nullable: boolean): number | null => {
    if (nullable && r[k] === null) return null;
    if (typeof r[k] !== 'number' || !Number.isSafeInteger(r[k]) || (r[k] as number) < 0) throw bad(`${k} is not a count`);
    return r[k] as number;
  };
  const bool = (k: string): boolean => {
    if (typeof r[k] !== 'boolean') throw bad(`${k} is not a boolean`);
    return r[k] as boolean;
  };
  const state = r.state as MigrationState;
  if (!MIGRATION_STATES.includes(state)) throw bad(`unknown state ${String(r.state)}`);
  return {
    volume: str('volume'), target: str('target'), state, manualCutover: bool('manualCutover'),
    startedAtMs: num('startedAtMs', false)!, cutOverAtMs: num('cutOverAtMs', true), detachedAtMs: num('detachedAtMs', true),
    tracksReplayed: num('tracksReplayed', false)!, settled: bool('settled'),
  };
}

// What the HTTP API needs from the array. The composition root (src/app/daemon.ts) provides it, so
// this adapter depends on no app code.
import type { VolumeState } from '../../core/volume/state.js';
import type { ArrayInfo, VolumeView } from './schemas.js';
import type { CloneBackend } from './clone-routes.js';
import type { ReplicationBackend } from './replication-routes.js';
import type { GroupBackend } from './group-routes.js';
import type { MigrationBackend } from './migration-routes.js';
import type { ImportBackend } from './import-routes.js';
import type { JournalBackend } from './journal-routes.js';
import type { CascadeBackend } from './cascade-routes.js';
import type { RoutingBackend } from './routing-routes.js';
import type { ObserveBackend } from './observe-routes.js';

export interface ChangeBitmap {
  count(): number;
  /** First set track at or after `from`, or -1. */
  nextSet(from: number): number;
  /** First clear track at or after `from`, or -1. */
  nextClear(from: number): number;
}

export interface ApiBackend {
  info(): ArrayInfo;
  volumeNames(): string[];
  summary(name: string): VolumeView;
  createVolume(name: string, sizeBytes: number, trackBytes?: number): Promise<VolumeView>;
  deleteVolume(name: string): Promise<void>;
  setVolumeState(name: string, state: VolumeState): Promise<VolumeView>;
  setVolumeAccess(name: string, allowedClients: readonly string[]): Promise<VolumeView>;
  changeTracker(name: string): { trackBytes: number; trackCount: number; bitmap: ChangeBitmap };
  /** Clears the tracker. Must clear synchronously before its first await (the API snapshots then resets). */
  resetChanges(name: string): Promise<void>;
  metrics(): Promise<{ contentType: string; body: string }>;
  readonly clones: CloneBackend;
  readonly replication: ReplicationBackend;
  readonly groups: GroupBackend;
  readonly migrations: MigrationBackend;
  readonly imports: ImportBackend;
  readonly journals: JournalBackend;
  readonly cascades: CascadeBackend;
  /** Requests routed to other arrays over the links (`/v1/via/…`). */
  readonly routing: RoutingBackend;
  /** The event timeline and the last hour's samples. */
  readonly observe: ObserveBackend;
}

export interface ApiLogger {
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  debug(object: object, message?: string): void;
  error(object: object, message?: string): void;
}

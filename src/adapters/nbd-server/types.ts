// What the NBD server needs from the array. src/app's Volume and ArrayService satisfy these
// structurally, so this adapter does not depend on the composition root.
import type { VolumeState } from '../../core/volume/state.js';

export interface NbdVolume {
  readonly name: string;
  readonly state: VolumeState;
  readonly geometry: { readonly sizeBytes: number };
  readonly canFastZero: boolean;
  /** Client certificate names allowed to use the volume over NBD (empty: any). */
  readonly allowedClients: readonly string[];
  checkAccess(access: 'read' | 'write'): void;
  read(offset: number, length: number, target?: Uint8Array): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array, fua?: boolean): Promise<void>;
  writeZeroes(offset: number, length: number, allocate: boolean, fua?: boolean): Promise<void>;
  trim(offset: number, length: number, fua?: boolean): Promise<void>;
  flush(): Promise<void>;
  allocation(offset: number, length: number, maxExtents?: number): Promise<Array<{ offset: number; length: number; kind: 'hole' | 'data' }>>;
}

export interface ExportCatalog {
  volumeNames(): string[];
  findVolume(name: string): NbdVolume | undefined;
  acquireExport(name: string): { volume: NbdVolume; release: () => void };
}

export interface NbdLogger {
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  debug(object: object, message?: string): void;
  error(object: object, message?: string): void;
}

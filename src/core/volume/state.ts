// Volume states decide host access (SPEC §2).
import { ErrorCode, TidemarkError } from '../errors.js';

export const VOLUME_STATES = ['ready', 'write-disabled', 'not-ready'] as const;
export type VolumeState = (typeof VOLUME_STATES)[number];

export type HostAccess = 'read' | 'write';

/** Throws the stable error for an access the state forbids; returns quietly when allowed. */
export function checkHostAccess(volumeName: string, state: VolumeState, access: HostAccess): void {
  switch (state) {
    case 'ready':
      return;
    case 'write-disabled':
      if (access === 'read') return;
      throw new TidemarkError(ErrorCode.VolumeWriteDisabled, `volume ${volumeName} is write-disabled`, { volume: volumeName });
    case 'not-ready':
      throw new TidemarkError(ErrorCode.VolumeNotReady, `volume ${volumeName} is not ready`, { volume: volumeName });
  }
}

// The durable definition of a volume, validated when read back.
import { ErrorCode, TidemarkError } from '../errors.js';
import { VOLUME_STATES, type VolumeState } from './state.js';

export interface VolumeRecord {
  readonly name: string;
  readonly uuid: string;
  readonly sizeBytes: number;
  readonly trackBytes: number;
  readonly state: VolumeState;
  readonly createdAtMs: number;
}

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function isValidVolumeName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

export const VOLUME_NAME_RULE = 'names are 1-63 characters: letters, digits, ".", "_" and "-", starting with a letter or digit';

export function parseVolumeRecord(value: unknown, what: string): VolumeRecord {
  const v = value as Partial<VolumeRecord> | null;
  const ok = v !== null && typeof v === 'object' &&
    typeof v.name === 'string' && isValidVolumeName(v.name) &&
    typeof v.uuid === 'string' &&
    typeof v.sizeBytes === 'number' && Number.isSafeInteger(v.sizeBytes) && v.sizeBytes > 0 &&
    typeof v.trackBytes === 'number' && Number.isSafeInteger(v.trackBytes) && v.trackBytes > 0 &&
    typeof v.state === 'string' && (VOLUME_STATES as readonly string[]).includes(v.state) &&
    typeof v.createdAtMs === 'number';
  if (!ok) throw new TidemarkError(ErrorCode.MetadataCorrupt, `metadata record ${what} is not a valid volume definition`, { record: what });
  return v as VolumeRecord;
}

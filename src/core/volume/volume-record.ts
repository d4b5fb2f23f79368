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
  /** NBD client certificate names allowed to use the volume; absent or empty: any client. */
  readonly allowedClients?: readonly string[];
}

/** Most names one volume's allow-list holds. */
export const MAX_ALLOWED_CLIENTS = 64;


export const CLIENT_NAME_RULE = 'client names are 1-255 characters without control characters (a certificate CN or subjectAltName)';

export function isValidClientName(name: string): boolean {
  if (name.length === 0 || name.length > 255) return false;
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return false;
  }
  return true;
}

/** A valid allow-list (deduplicated, in the order given), or why not. */
export function checkAllowedClients(names: readonly string[]): { ok: true; names: string[] } | { ok: false; reason: string } {
  const bad = names.find((n) => !isValidClientName(n));
  if (bad !== undefined) return { ok: false, reason: `invalid client name ${JSON.stringify(bad)}: ${CLIENT_NAME_RULE}` };
  const unique = [...new Set(names)];
  if (unique.length > MAX_ALLOWED_CLIENTS) return { ok: false, reason: `at most ${MAX_ALLOWED_CLIENTS} client names per volume` };
  return { ok: true, names: unique };
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
    typeof v.createdAtMs === 'number' &&
    (v.allowedClients === undefined || (Array.isArray(v.allowedClients) &&
      v.allowedClients.every((n) => typeof n === 'string') && checkAllowedClients(v.allowedClients).ok));
  if (!ok) throw new TidemarkError(ErrorCode.MetadataCorrupt, `metadata record ${what} is not a valid volume definition`, { record: what });
  return v as VolumeRecord;
}

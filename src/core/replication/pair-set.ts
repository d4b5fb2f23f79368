// The rules for the several pairs one volume may take part in (SPEC §4: fan-out and chains). A
// volume may be the R1 of up to MAX_R1_PAIRS_PER_VOLUME pairs and, besides, the R2 of at most one
// (a chain: what it receives it forwards). Every change to the volume — host writes, replica
// writes, tracks pulled by a restore — passes every R1 pair's write path, so a command on one pair
// never has to touch the others; what would be ambiguous is refused here.
import { ErrorCode, TidemarkError } from '../errors.js';
import type { VolumeState } from '../volume/state.js';
import { isValidVolumeName, VOLUME_NAME_RULE } from '../volume/volume-record.js';
import type { PairRecord } from './pair-record.js';
import { pairVolumeState, volumeStateFor, type PairCommand } from './pair-rules.js';

export const MAX_R1_PAIRS_PER_VOLUME = 4;

/**
 * The name of a new pair on `volume`: the volume's own name while it has no pair (so scripts that
 * name a volume with one pair keep working), otherwise the one the operator must give.
 */
export function choosePairName(volume: string, requested: string | undefined, onVolume: readonly PairRecord[],
  taken: (name: string) => boolean): string {
  if (requested === undefined && onVolume.length > 0) {
    throw new TidemarkError(ErrorCode.PairNameRequired,
      `volume ${volume} already takes part in pair ${onVolume.map((r) => r.name).join(', ')}; name the new pair with --name`,
      { volume, pairs: onVolume.map((r) => r.name) });
  }
  const name = requested ?? volume;
  if (!isValidVolumeName(name)) throw new TidemarkError(ErrorCode.InvalidArgument, `pair name ${JSON.stringify(name)}: ${VOLUME_NAME_RULE}`);
  if (taken(name)) throw new TidemarkError(ErrorCode.AlreadyExists, `a pair named ${name} already exists on this array`, { pair: name });
  return name;
}

/** A volume may become the R1 of one more pair (fan-out). */
export function checkNewR1(volume: string, onVolume: readonly PairRecord[]): void {
  const r1 = onVolume.filter((r) => r.role === 'R1');
  if (r1.length >= MAX_R1_PAIRS_PER_VOLUME) {
    throw new TidemarkError(ErrorCode.LimitExceeded,
      `volume ${volume} is already the R1 of ${r1.length} pairs (${r1.map((r) => r.name).join(', ')}); the limit is ${MAX_R1_PAIRS_PER_VOLUME}`,
      { volume, limit: MAX_R1_PAIRS_PER_VOLUME });
  }
}

/** A volume takes replica writes from one source only: it may be the R2 of one pair. */
export function checkNewR2(volume: string, onVolume: readonly PairRecord[]): void {
  const r2 = onVolume.find((r) => r.role === 'R2');
  if (r2) {
    throw new TidemarkError(ErrorCode.PairConflict,
      `volume ${volume} is already the R2 of pair ${r2.name} (from ${r2.peer}); a volume receives from one pair only`,
      { volume, pair: r2.name });
  }
}

/** The host access of a volume in several pairs: the least writable any of them sets. */
export function combinedVolumeState(records: readonly PairRecord[], override?: { readonly record: PairRecord; readonly intent: PairRecord['intent'] }): VolumeState {
  let state: VolumeState = 'ready';
  for (const r of records) {
    const s = override && override.record.id === r.id ? pairVolumeState(r, override.intent) : pairVolumeState(r);
    if (s === 'write-disabled') state = s;
  }
  return state;
}

/** The volume's own state allows it to become an R1: ready, or write-disabled by its pairs (an R2 in a chain). */
export function checkR1VolumeState(volume: string, state: VolumeState, onVolume: readonly PairRecord[]): void {
  if (state === 'ready') return;
  if (state === 'write-disabled' && onVolume.length > 0 && combinedVolumeState(onVolume) === 'write-disabled') return;
  throw new TidemarkError(ErrorCode.InvalidState, `volume ${volume} is ${state}; an R1 must be ready (or the R2 of a pair)`, { volume });
}

/**
 * Commands on a pair whose R1 volume is in other pairs too. Failover, establish, suspend, split and
 * resume act on the one pair (the others keep replicating whatever the volume gets). Refused:
 * - restore/failback into a volume that is the R2 of a pair still write-disabled by it: that volume
 *   must equal its own R1, and R2's image of this pair would make it differ under clean bits;
 * - restore/failback while another pair of the volume is restoring it: two images, one volume;
 * - swap, when the volume is already the R2 of another pair (it would receive from two sources).
 */
export function checkSiblings(command: PairCommand, record: PairRecord, siblings: readonly PairRecord[]): void {
  const others = siblings.filter((s) => s.id !== record.id);
  const upstream = others.find((s) => s.role === 'R2');
  if (command === 'restore' || command === 'failback') {
    if (upstream && volumeStateFor('R2', upstream.intent) === 'write-disabled') {
      throw new TidemarkError(ErrorCode.PairConflict,
        `volume ${record.localVolume} is the R2 of pair ${upstream.name} (${upstream.intent}); '${command}' of pair ${record.name} would overwrite ` +
        `a replica with another image: split or fail over pair ${upstream.name} first`, { pair: record.name, upstream: upstream.name });
    }
    const restoring = others.find((s) => s.role === 'R1' && s.intent === 'restoring');
    if (restoring) {
      throw new TidemarkError(ErrorCode.PairConflict,
        `pair ${restoring.name} is restoring volume ${record.localVolume} already; wait for it before '${command}' of pair ${record.name}`,
        { pair: record.name, restoring: restoring.name });
    }
  }
  if (command === 'swap' && upstream) {
    throw new TidemarkError(ErrorCode.PairConflict,
      `volume ${record.localVolume} is already the R2 of pair ${upstream.name}; swapping pair ${record.name} would make it receive from two pairs`,
      { pair: record.name, upstream: upstream.name });
  }
}

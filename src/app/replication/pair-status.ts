// What `pair show` and `pair list` give: a pair half's status, in the API's shape (the schema in
// adapters/http/replication-routes.ts is its one definition).
import type { PairRuntime } from './pair-runtime.js';
import type { PairContext } from './pair-context.js';
import type { PairCyclesView as CycleStatus, PairStatusView as PairStatus } from '../../adapters/http/replication-routes.js';

/** A pair half's status as the API shows it. */
export function pairStatus(context: PairContext, r: PairRuntime): PairStatus {
  const rec = r.record;
  return {
    pair: rec.name, volume: rec.localVolume, id: rec.id, role: rec.role, mode: rec.mode, state: r.state(), intent: rec.intent,
    localVolume: rec.localVolume, peer: rec.peer, remoteVolume: rec.remoteVolume, onLinkFailure: rec.onLinkFailure,
    protectWith: rec.protectWith, extents: rec.extents ? rec.extents.map((e) => ({ ...e })) : null, protecting: r.needsProtection,
    generation: rec.generation, diverged: rec.diverged,
    invalidTracks: { local: r.bits.count(), remote: r.remoteTracks ?? null, persisted: r.persistedInvalidTracks },
    tracksOwed: rec.role === 'R1' ? r.owed.count : 0,
    tracksToPull: r.pull?.count() ?? 0,
    bytesOwed: rec.role === 'R1' ? r.bytesOwed() : 0,
    lagSeconds: rec.role === 'R1' ? r.lagSeconds() : 0,
    link: { state: context.host.peerLinkState(rec.peer) },
    peerMissing: r.peerMissing,
    lastError: r.lastError ?? null,
    counters: { ...r.counters },
    cycles: cycleStatus(r),
    cycleMs: rec.cycleMs,
    minAgeMs: rec.minAgeMs,
    cycleMemoryBytes: rec.cycleMemoryBytes,
    spillLimitBytes: context.host.spill ? rec.spillLimitBytes : 0,
    cyclesFallback: rec.role === 'R1' && !r.capturing ? r.cyclesFallback ?? null : null,
    group: r.group?.name ?? null,
  };
}

function cycleStatus(r: PairRuntime): CycleStatus | null {
  if (r.capturing) {
    const st = r.asyncR1!.cycles.stats();
    return {
      captureCycle: st.capture.cycle, transmitCycle: st.transmit?.cycle ?? null, appliedCycle: r.asyncR1!.appliedCycle,
      captureRecords: st.capture.records, transmitRecords: st.transmit?.records ?? 0,
      captureBytes: st.capture.bytes, transmitBytes: st.transmit?.bytes ?? 0, memoryBytes: r.asyncR1!.memoryBytes,
      spilledRecords: st.spilledRecords, spilledBytes: st.spilledRecords * r.volume.geometry.recordBytes,
      remoteAppliedCycle: r.remoteAppliedCycle ?? null, recoverableCycle: r.remoteRecoverableCycle ?? null,
    };
  }
  if (r.asyncR2 && !r.asyncR2.stopped) {
    const st = r.asyncR2.cycles.stats();
    return {
      captureCycle: null, transmitCycle: st.receivingCycle, appliedCycle: st.appliedCycle,
      captureRecords: 0, transmitRecords: st.receivedRecords, captureBytes: 0, transmitBytes: 0, memoryBytes: 0, spilledRecords: 0, spilledBytes: 0,
      remoteAppliedCycle: null, recoverableCycle: r.asyncR2.cycles.recoverablePoint.cycle,
    };
  }
  return null;
}

/** Status with the peer's invalid-track count fetched fresh when the link is up. */
export async function showPair(context: PairContext, r: PairRuntime): Promise<PairStatus> {
  if (r.linkUp) {
    try {
      const reply = await context.rpc.request(r.record.peer, { op: 'pair.status', pair: r.record.id }, [], 2000);
      // PeerRpc validated the reply against the pair.status schema: absent or null means unknown.
      r.remoteTracks = reply.header.invalidTracks;
      r.remoteAppliedCycle = reply.header.appliedCycle ?? undefined;
      r.remoteRecoverableCycle = reply.header.recoverableCycle ?? undefined;
    } catch {
      // Shown from the last known figures.
    }
  }
  return pairStatus(context, r);
}

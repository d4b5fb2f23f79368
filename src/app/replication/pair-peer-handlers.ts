// The requests a peer array sends about pairs (see docs/design/peer-protocol.md): R2's side of
// create, apply, flush, digests, reads for a restore, status, intent and mode changes, cycles,
// protection, swap and delete. PeerRpc validated each request against its schema before it gets
// here; what needs local state (the pair exists and belongs to the sender, tracks exist) is
// checked here.
import { TrackBitmap } from '../../core/bitmap/track-bitmap.js';
import { ErrorCode, TidemarkError, invalidArgument } from '../../core/errors.js';
import { parsePairRecord, type PairRecord } from '../../core/replication/pair-record.js';
import { volumeStateFor } from '../../core/replication/pair-rules.js';
import { checkNewR1, checkNewR2 } from '../../core/replication/pair-set.js';
import { validateExtents } from '../../core/replication/pair-extents.js';
import type { Segment } from '../../core/replication/peer-messages.js';
import { trackRange, tracksRange } from '../../core/volume/geometry.js';
import type { Volume } from '../volume/volume.js';
import { R2Async, cycleMessageFromWire } from './async-cycles.js';
import { positionIds } from './pair-runtime.js';
import type { RpcReply } from './peer-rpc.js';
import { digestEqual, isAllZero, recordDigests } from './record-digests.js';
import { holeTracks } from './hole-tracks.js';
import { protectHeldKey, refuseIfGrouped, type PairContext } from './pair-context.js';
import type { PairCommands } from './pair-commands.js';

export function registerPairHandlers(context: PairContext, commands: PairCommands): void {
  const rpc = context.rpc;
  rpc.handle('pair.create', async (peer, h) => {
    // The schema checked the record; parsing copies only its known fields into what is persisted.
    const record = parsePairRecord(h.record, 'pair.create');
    if (record.role !== 'R2' || record.peer !== peer) throw invalidArgument('pair.create must describe an R2 half paired with the sender');
    const volume = context.host.volume(record.localVolume);
    if (volume.geometry.sizeBytes !== h.sizeBytes || volume.geometry.trackBytes !== h.trackBytes) {
      throw invalidArgument(`volume ${record.localVolume} on ${context.host.arrayName} is ${volume.geometry.sizeBytes} bytes with ` +
        `${volume.geometry.trackBytes}-byte tracks; R1 has ${String(h.sizeBytes)} and ${String(h.trackBytes)}`);
    }
    const siblings = context.recordsOn(record.localVolume);
    checkNewR2(record.localVolume, siblings);
    if (siblings.some((s) => s.role === 'R1' && s.peer === peer && s.remoteVolume === record.remoteVolume)) {
      throw new TidemarkError(ErrorCode.PairConflict,
        `volume ${record.localVolume} on ${context.host.arrayName} replicates to ${peer}:${record.remoteVolume}; receiving from it would loop`);
    }
    if (context.hasPair(record.name)) {
      throw new TidemarkError(ErrorCode.AlreadyExists,
        `${context.host.arrayName} already has a pair named ${record.name}; give the new pair another --name`, { pair: record.name });
    }
    context.host.checkPeer(peer);
    if (record.extents !== null) validateExtents(record.extents, volume.geometry);
    if (record.protectWith !== null) {
      if (!context.host.checkProtection) throw invalidArgument('this array cannot protect replicas with clones');
      context.host.checkProtection(record.localVolume, record.protectWith);
    }
    const runtime = context.attach(record, volume);
    runtime.bits.clearAll();
    await context.save(runtime, record);
    await context.applyAccess(runtime);
    context.host.onEvent('pair created (R2)', { pair: record.name, id: record.id, volume: record.localVolume, peer });
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.apply', (peer, h, segments) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    if (r.record.intent !== 'replicating') {
      return Promise.reject(new TidemarkError(ErrorCode.InvalidState,
        `R2 ${r.record.localVolume} is ${r.record.intent}; it takes no replicated writes`));
    }
    // Started synchronously, in link order: overlapping writes apply in the order R1 sent them.
    // Replica writes: new data for R2 (a clone of R2 sees them), not R2's own hosts' changes.
    const options = { source: 'replica' as const, skipPosition: r.ids.own };
    const apply = (): Promise<RpcReply> => {
      // The segments are views of the received message, which is R2's own (the link hands each
      // message over once and never writes it again): written as they are, uncopied.
      const applied = segments.map((s) => (s.kind === 'data'
        ? r.volume.internalWrite(s.offset, s.data, options)
        : r.volume.internalZero(s.offset, s.length, options)));
      return Promise.all(applied).then(async () => {
        if (h.fua) await r.volume.internalFlush();
        return { header: {}, segments: [] };
      });
    };
    // Tracks shipped outside cycles (a resync) must land after every cycle R2 committed.
    if (r.asyncR2 || r.stoppingR2) return context.stopR2Cycles(r).then(apply);
    return apply();
  });
  rpc.handle('pair.flush', async (peer, h) => {
    const r = context.halfFor(peer, h.pair);
    await r.volume.internalFlush();
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.digests', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    const segments: Segment[] = [];
    const tracks = trackList(h.tracks, r.volume.geometry.trackCount);
    // Holes as they are once writes already in flight there have landed (see lockedRead).
    const span = tracks.length > 0 ? tracksRange(r.volume.geometry, Math.min(...tracks), Math.max(...tracks)) : undefined;
    const unlock = span ? await r.volume.lockRange(span.offset, span.length) : undefined;
    let holes: Set<number>;
    try {
      holes = await holeTracks(r.volume, tracks);
    } finally {
      unlock?.();
    }
    for (const t of tracks) {
      if (holes.has(t)) {
        segments.push({ kind: 'zero', offset: t, length: 0 });
        continue;
      }
      const range = trackRange(r.volume.geometry, t);
      const data = await lockedRead(r.volume, range.offset, range.length);
      if (isAllZero(data)) segments.push({ kind: 'zero', offset: t, length: 0 });
      else segments.push({ kind: 'data', offset: t, data: recordDigests(data, r.volume.geometry.recordBytes) });
    }
    return { header: {}, segments };
  });
  rpc.handle('pair.read', async (peer, h, digests) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    const g = r.volume.geometry;
    const tracks = trackList(h.tracks, g.trackCount);
    const segments: Segment[] = [];
    for (let i = 0; i < tracks.length; i++) {
      const range = trackRange(g, tracks[i]!);
      const data = await lockedRead(r.volume, range.offset, range.length);
      const theirs = digests[i];
      const ours = recordDigests(data, g.recordBytes);
      for (let at = 0, rec = 0; at < data.length; at += g.recordBytes, rec++) {
        if (theirs?.kind === 'data' && theirs.data.length === ours.length && digestEqual(ours, theirs.data, rec)) continue;
        const bytes = data.subarray(at, Math.min(data.length, at + g.recordBytes));
        segments.push(isAllZero(bytes) ? { kind: 'zero', offset: range.offset + at, length: bytes.length } : { kind: 'data', offset: range.offset + at, data: bytes });
      }
    }
    return { header: {}, segments };
  });
  rpc.handle('pair.status', async (peer, h) => {
    const r = context.halves().find((x) => x.record.id === h.pair && x.record.peer === peer);
    if (!r) return { header: { exists: false }, segments: [] };
    return {
      header: {
        exists: true, role: r.record.role, intent: r.record.intent, generation: r.record.generation, invalidTracks: r.bits.count(),
        appliedCycle: r.asyncR2 && !r.asyncR2.stopped ? r.asyncR2.appliedCycle : null,
        recoverableCycle: r.asyncR2 && !r.asyncR2.stopped ? r.asyncR2.cycles.recoverablePoint.cycle : null,
        ...(r.record.role === 'R1' ? { tracksOwed: r.backgroundTracks } : {}),
      },
      segments: [],
    };
  });
  rpc.handle('pair.set-intent', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    const generation = Math.max(r.record.generation, h.generation);
    const next: PairRecord = { ...r.record, intent: h.intent, generation };
    // R2 stops being a cycle target at a consistent point: every committed cycle applied.
    if (next.intent !== 'replicating') await context.stopR2Cycles(r);
    // Less writable first (before the bitmap is read), more writable after the record is durable.
    const moreWritable = volumeStateFor('R2', next.intent) === 'ready';
    if (!moreWritable) {
      r.record = next;
      await context.applyAccess(r);
    }
    await context.save(r, next);
    if (moreWritable) await context.applyAccess(r);
    const segments: Segment[] = h.returnOwn === true ? [{ kind: 'data', offset: 0, data: r.bits.toBytes() }] : [];
    return { header: { ownTracks: r.bits.count() }, segments };
  });
  rpc.handle('pair.cycles-start', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    const groupFrom = h.groupFrom;
    if (groupFrom !== null && groupFrom !== h.cycle) throw invalidArgument('bad pair.cycles-start: groupFrom must be null or the first cycle');
    await context.stopR2Cycles(r);
    r.asyncR2 = await R2Async.start(context.r2CyclesHost(r), h.cycle, groupFrom);
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.cycle', async (peer, h, segments) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    if (!r.asyncR2 || r.stoppingR2) throw new TidemarkError(ErrorCode.InvalidState, `R2 ${r.record.localVolume} runs no cycles`);
    r.asyncR2.handle(cycleMessageFromWire(h.msg, segments));
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.cycle-r2', async (peer, h, segments) => {
    const r = context.halfFor(peer, h.pair, 'R1');
    const message = cycleMessageFromWire(h.msg, segments);
    if (r.capturing) r.asyncR1!.receive(message);
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.protect', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    if (r.record.protectWith === null || !context.host.protect) return { header: { protected: false }, segments: [] };
    // The clone already holds R2's last consistent image and R1 has not seen R2 whole since (a
    // resync interrupted, R1 restarted meanwhile): refreshing it now would copy a half-resynced R2.
    if (!h.whole && await context.host.meta.read(protectHeldKey(r.record.id))) return { header: { protected: true, kept: true }, segments: [] };
    // Not held while the clone is refreshed: it is attached (no image) until the split, and a crash
    // meanwhile must not leave a later request believing it holds one (docs/design/cascade.md).
    await context.host.meta.delete(protectHeldKey(r.record.id));
    await context.host.protect(r.record.localVolume, r.record.protectWith);
    await context.host.meta.write(protectHeldKey(r.record.id), new TextEncoder().encode(String(context.host.nowMs())));
    context.host.onEvent('replica protected by a clone split before resync', { pair: r.record.id, clone: r.record.protectWith });
    return { header: { protected: true }, segments: [] };
  });
  rpc.handle('pair.clear-own', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    r.bits.clearAll();
    await r.volume.persistBitmaps();
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.set-mode', async (peer, h) => {
    const r = context.halfFor(peer, h.pair);
    if (r.record.role === 'R1') await commands.setMode(r.record.name, h.mode);
    else await context.save(r, { ...r.record, mode: h.mode });
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.command', async (peer, h) => {
    const r = context.halfFor(peer, h.pair, 'R1');
    await commands.command(r.record.name, h.command);
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.swap', async (peer, h, segments) => {
    const r = context.halfFor(peer, h.pair, 'R2');
    const theirs = segments[0];
    if (theirs?.kind !== 'data') throw invalidArgument('bad pair.swap: the outgoing bitmap segment is missing');
    // Checked before anything changes: R1 takes its volume back if this refuses.
    checkNewR1(r.volume.name, context.recordsOn(r.volume.name).filter((x) => x.id !== r.record.id));
    const out = TrackBitmap.fromBytes(r.volume.geometry.trackCount, theirs.data.slice()).or(r.bits);
    const record: PairRecord = { ...r.record, role: 'R1', intent: 'replicating', generation: h.generation, diverged: false };
    context.detach(r);
    r.volume.addPosition({ id: positionIds(record.id).out, kind: 'remote-out', marksOn: 'all', invalid: out });
    const next = context.attach(record, r.volume);
    next.owed.markWholeBitmap(out, context.host.nowMs());
    await context.save(next, record);
    await context.applyAccess(next);
    context.host.onEvent('pair swapped: now R1', { pair: record.id });
    return { header: {}, segments: [] };
  });
  rpc.handle('pair.delete', async (peer, h) => {
    const r = context.halfFor(peer, h.pair);
    refuseIfGrouped(r, 'delete it');
    await commands.deleteLocal(r);
    context.host.onEvent('pair deleted by peer', { pair: r.record.id });
    return { header: {}, segments: [] };
  });
}

/**
 * Reads a range after every write already in flight to it has landed: an answer about R2's
 * content (digests, a pull) must not predate a write R2 has accepted (found by pair seed 13: a
 * slow replica write landed after R2 had answered that the track was still zeros).
 */
async function lockedRead(volume: Volume, offset: number, length: number): Promise<Uint8Array> {
  const unlock = await volume.lockRange(offset, length);
  try {
    return await volume.internalRead(offset, length);
  } finally {
    unlock();
  }
}

/** The schema bounds the list and its entries; whether each track exists is a fact of the local volume. */
function trackList(tracks: readonly number[], trackCount: number): readonly number[] {
  if (!tracks.every((t) => t < trackCount)) throw invalidArgument(`bad track list: a track is beyond the volume's ${trackCount} tracks`);
  return tracks;
}

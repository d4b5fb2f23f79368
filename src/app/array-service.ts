// The array: its volumes, their durable definitions, and who is using them. The HTTP API, the
// NBD front end and the CLI all reach volumes through this service.
import type { JournalLogStore } from '../ports/journal-log-store.js';
import { randomBytes, randomUUID } from 'node:crypto';
import { REAL_TIMERS } from './real-timers.js';
import { ErrorCode, TidemarkError, invalidArgument, notFound } from '../core/errors.js';
import { decodeJson, encodeJson } from '../core/lib/checksummed-record.js';
import { DEFAULT_TRACK_BYTES, makeGeometry } from '../core/volume/geometry.js';
import {
  VOLUME_NAME_RULE, checkAllowedClients, isValidVolumeName, parseVolumeRecord, type VolumeRecord,
} from '../core/volume/volume-record.js';
import type { VolumeState } from '../core/volume/state.js';
import type { BlockStoreFactory } from '../ports/block-store.js';
import type { MetaStore, SlotJournalFactory } from '../ports/meta-store.js';
import type { SpillStore } from '../ports/spill-store.js';
import type { ActivityLogConfig } from '../core/bitmap/activity-log.js';
import { CHANGES_POSITION, Volume, bitmapsKey, volumeKey, type OpKind, type RecoveryReport } from './volume/volume.js';
import { DEFAULT_ACTIVITY_LOG } from '../core/bitmap/activity-log.js';
import { DEFAULT_DELTA_SLOTS } from '../core/bitmap/bitmap-deltas.js';
import { CloneManager } from './clone/clone-manager.js';
import { NO_LINKS, type PeerLinks } from '../ports/peer-transport.js';
import { PeerRegistry, type PeerRecord } from './replication/peer-registry.js';
import { PeerRpc } from './replication/peer-rpc.js';
import { PairManager } from './replication/pair-manager.js';
import type { PairTimeouts } from './replication/pair-runtime.js';
import { GroupManager } from './group/group-manager.js';
import { MigrationManager } from './migration/migration-manager.js';
import { ImportManager } from './migration/import-manager.js';
import type { ImportSourceConnector } from '../ports/import-source.js';
import type { Timers } from '../ports/timers.js';
import { JournalManager } from './journal/journal-manager.js';
import { CascadeManager } from './cascade/cascade-manager.js';

export interface ArrayDeps {
  readonly name: string;
  readonly meta: MetaStore;
  readonly stores: BlockStoreFactory;
  readonly journals: SlotJournalFactory;
  /**
   * Scratch space for R1's async cycles that outgrow memory (the daemon: <data dir>/spill). Without
   * one, async pairs do not spill: their cycles fall back to bitmaps at the memory budget.
   */
  readonly spill?: SpillStore;
  /** Primary-side journal logs (the daemon: <data dir>/journal-log); without one, a restarted primary does not resume its journals. */
  readonly journalLogs?: JournalLogStore;
  /** This boot of the machine (the sequencer trusts its log after a process restart, not after a reboot). */
  readonly bootId?: string;
  readonly nowMs: () => number;
  readonly activityLog?: Omit<ActivityLogConfig, 'extentTracks'>;
  readonly onOp?: (volume: string, kind: OpKind, bytes: number, startedAtMs: number) => void;
  /** Errors of background work (clone copies) that no request is waiting for. */
  readonly onBackgroundError?: (error: unknown, context: Record<string, unknown>) => void;
  /** Replication links to peer arrays (default: none). */
  readonly links?: PeerLinks;
  readonly pairTimeouts?: PairTimeouts;
  /** How long a group member keeps a write window its coordinator does not close (tests shorten it). */
  readonly groupWindowTimeoutMs?: number;
  /** A coordinated group that has not switched this long reports itself stalled (tests shorten it). */
  readonly groupStallAfterMs?: number;
  /** Timers and pauses of the migration and import copies (default: the event loop's; the simulator: virtual time). */
  readonly copyTimers?: Timers;
  readonly copyPause?: (ms: number) => Promise<void>;
  /** Connects to the NBD servers online imports read from (the daemon: the NBD client adapter). */
  readonly importSources?: ImportSourceConnector;
  /** Notable replication events (pair state changes), for the log. */
  readonly onEvent?: (message: string, fields: Record<string, unknown>) => void;
}

export interface VolumeSummary {
  readonly name: string;
  readonly uuid: string;
  readonly sizeBytes: number;
  readonly trackBytes: number;
  readonly recordBytes: number;
  readonly trackCount: number;
  readonly state: VolumeState;
  readonly createdAt: string;
  readonly exports: number;
  readonly changedTracks: number;
  readonly hotExtents: number;
  readonly lastRecovery: RecoveryReport;
  readonly allowedClients: string[];
}

/** The activity log's slots, then the ring of bitmap deltas its evictions write. */
const AL_SLOTS = DEFAULT_ACTIVITY_LOG.slotCount + DEFAULT_DELTA_SLOTS;
const AL_SLOT_BYTES = DEFAULT_ACTIVITY_LOG.slotBytes;

export class ArrayService {
  private readonly volumes = new Map<string, Volume>();
  private readonly exportCounts = new Map<string, number>();
  /** Names with a create or delete in progress: a second command on the same name is refused. */
  private readonly busyNames = new Set<string>();
  readonly clones: CloneManager;
  readonly migrations: MigrationManager;
  readonly imports: ImportManager;
  readonly peers: PeerRegistry;
  readonly pairs: PairManager;
  /** Cascade sessions this array runs as the middle site (SPEC §7). */
  readonly cascades: CascadeManager;
  /** Consistency groups: the ones this array coordinates and its pairs' memberships. Set by open(). */
  groups!: GroupManager;
  /** Journals (SPEC §6): sequencer, primary positions and secondary queues on this array. Set by open(). */
  journals!: JournalManager;
  private readonly links: PeerLinks;
  /** Requests between arrays; routed commands (app/routing) register their operation on it too. */
  readonly rpc: PeerRpc;

  private constructor(readonly deps: ArrayDeps) {
    this.links = deps.links ?? NO_LINKS;
    this.peers = new PeerRegistry(deps.meta);
    const onError = (error: unknown, context: Record<string, unknown>): void => deps.onBackgroundError?.(error, context);
    this.rpc = new PeerRpc(this.links, onError);
    this.pairs = new PairManager({
      arrayName: deps.name,
      volume: (name) => this.volume(name),
      findVolume: (name) => this.findVolume(name),
      checkPeer: (name) => { this.peers.get(name); },
      peerLinkState: (name) => this.links.peerState(name),
      nowMs: deps.nowMs,
      onError,
      onEvent: (message, fields) => deps.onEvent?.(message, fields),
      timers: REAL_TIMERS,
      meta: deps.meta,
      ...(deps.spill ? { spill: deps.spill } : {}),
      randomId: () => randomBytes(6).toString('hex'),
      checkProtection: (std, clone) => { this.clones.show(std, clone); },
      protect: (std, clone) => this.protectWithClone(std, clone),
    }, this.rpc, deps.pairTimeouts);
    this.links.onPeerUp((peer) => { void this.pairs.peerUp(peer); });
    this.links.onPeerUp((peer) => this.cascades.peerUp(peer));
    this.links.onPeerDown((peer) => this.pairs.peerDown(peer));
    this.links.onSessionReset((peer) => this.pairs.sessionReset(peer));
    this.rpc.handle('peer.ping', async () => ({ header: {}, segments: [] }));
    this.clones = new CloneManager({
      volume: (name) => this.volume(name),
      findVolume: (name) => this.findVolume(name),
      exportCount: (name) => this.exportCounts.get(name) ?? 0,
      nowMs: deps.nowMs,
      onError: (error, context) => deps.onBackgroundError?.(error, context),
    });
    this.migrations = new MigrationManager({
      meta: deps.meta, stores: deps.stores, nowMs: deps.nowMs,
      volume: (name) => this.volume(name),
      findVolume: (name) => this.findVolume(name),
      exportCount: (name) => this.exportCounts.get(name) ?? 0,
      checkVolumeFree: (name, what) => {
        this.clones.checkDeletable(name);
        this.pairs.checkVolumeChange(name, what);
        this.imports.checkVolumeChange(name, what);
      },
      forgetVolume: (name) => this.forgetVolume(name),
      timers: deps.copyTimers ?? REAL_TIMERS, pause: deps.copyPause ?? pauseOnEventLoop,
      onError,
      onEvent: (message, fields) => deps.onEvent?.(message, fields),
    });
    this.imports = new ImportManager({
      meta: deps.meta, connect: deps.importSources, nowMs: deps.nowMs,
      createVolume: (name, sizeBytes, trackBytes) => this.createVolume(name, sizeBytes, trackBytes),
      volume: (name) => this.volume(name),
      findVolume: (name) => this.findVolume(name),
      timers: deps.copyTimers ?? REAL_TIMERS, pause: deps.copyPause ?? pauseOnEventLoop,
      onError,
      onEvent: (message, fields) => deps.onEvent?.(message, fields),
    });
    this.cascades = new CascadeManager({
      meta: deps.meta, timers: REAL_TIMERS, clones: this.clones, pairs: this.pairs, rpc: this.rpc,
      volume: (name) => this.volume(name), checkPeer: (name) => { this.peers.get(name); },
      peerLinkUp: (name) => this.links.peerState(name) === 'up', exportCount: (name) => this.exportCounts.get(name) ?? 0,
      nowMs: deps.nowMs, randomId: () => randomBytes(6).toString('hex'), onError,
      onEvent: (message, fields) => deps.onEvent?.(message, fields),
    });
  }

  /** Opens every volume found in the metadata store, recovering bitmaps after a crash. */
  static async open(deps: ArrayDeps): Promise<ArrayService> {
    const service = new ArrayService(deps);
    // A migration's cutover exchanged two volumes' stores (and a finish may need completing).
    const storeOf = await MigrationManager.recoverStores(deps.meta, deps.stores, deps.journals);
    for (const key of await deps.meta.list('volume/')) {
      const bytes = await deps.meta.read(key);
      if (!bytes) continue;
      const record = parseVolumeRecord(decodeJson(bytes, key), key);
      service.volumes.set(record.name, await service.openVolume(record, storeOf.get(record.name)));
    }
    await service.clones.load(service.volumeNames());
    await service.migrations.load(service.volumeNames());
    await service.imports.load();
    await service.peers.load();
    await service.pairs.load(service.volumeNames());
    await service.cascades.load();
    service.groups = await GroupManager.open({
      arrayName: deps.name, pairs: service.pairs, rpc: service.rpc, meta: deps.meta, timers: REAL_TIMERS, nowMs: deps.nowMs,
      peers: () => service.peers.list().map((p) => p.name),
      ...(deps.groupWindowTimeoutMs !== undefined ? { windowTimeoutMs: deps.groupWindowTimeoutMs } : {}),
      ...(deps.groupStallAfterMs !== undefined ? { stallAfterMs: deps.groupStallAfterMs } : {}),
      onEvent: (message, fields) => deps.onEvent?.(message, fields),
    });
    service.journals = await JournalManager.open({
      self: deps.name, rpc: service.rpc, meta: deps.meta, timers: REAL_TIMERS, nowMs: deps.nowMs,
      volume: (name) => service.volume(name), findVolume: (name) => service.findVolume(name),
      checkPeer: (name) => { service.peers.get(name); },
      ...(deps.journalLogs ? { logs: deps.journalLogs } : {}),
      ...(deps.bootId !== undefined ? { bootId: deps.bootId } : {}),
      onError: (error, context) => deps.onBackgroundError?.(error, context),
    });
    // The links get their peers last: a peer may ask something the moment its link comes up (a
    // restarted R2 is asked for its half of the pair at once), and the answer must come from the
    // loaded state, not from an array still reading its records ("no half of this pair" left the
    // source's pair partitioned for good). Relays before the peers reached through them: the link
    // checks a relay is a direct peer.
    const peers = service.peers.list();
    for (const p of [...peers.filter((x) => x.via === undefined), ...peers.filter((x) => x.via !== undefined)]) service.links.addPeer(linkPeer(p));
    return service;
  }

  private async openVolume(record: VolumeRecord, storeName = record.name): Promise<Volume> {
    const { deps } = this;
    const geometry = makeGeometry(record.sizeBytes, record.trackBytes);
    const store = await deps.stores.open(storeName, record.sizeBytes);
    const journal = await deps.journals.open(record.name, AL_SLOTS, AL_SLOT_BYTES);
    return Volume.open(record, {
      store, meta: deps.meta, journal, nowMs: deps.nowMs,
      activityLog: {
        ...DEFAULT_ACTIVITY_LOG, ...deps.activityLog,
        extentTracks: Math.max(1, Math.floor((4 * 1024 * 1024) / geometry.trackBytes)),
      },
      onOp: deps.onOp ? (kind, bytes, started) => deps.onOp!(record.name, kind, bytes, started) : undefined,
    });
  }

  volumeNames(): string[] {
    return [...this.volumes.keys()].sort();
  }

  /** The volume, or TM_ERR_NOT_FOUND. */
  volume(name: string): Volume {
    const v = this.volumes.get(name);
    if (!v) throw notFound(`no volume named ${JSON.stringify(name)}`, { volume: name });
    return v;
  }

  findVolume(name: string): Volume | undefined {
    return this.volumes.get(name);
  }

  summary(name: string): VolumeSummary {
    const v = this.volume(name);
    const g = v.geometry;
    return {
      name: v.name,
      uuid: v.definition.uuid,
      sizeBytes: g.sizeBytes,
      trackBytes: g.trackBytes,
      recordBytes: g.recordBytes,
      trackCount: g.trackCount,
      state: v.state,
      createdAt: new Date(v.definition.createdAtMs).toISOString(),
      exports: this.exportCounts.get(name) ?? 0,
      changedTracks: v.position(CHANGES_POSITION).invalid.count(),
      hotExtents: v.hotExtents,
      lastRecovery: v.recovery,
      allowedClients: [...v.allowedClients],
    };
  }

  async createVolume(name: string, sizeBytes: number, trackBytes = DEFAULT_TRACK_BYTES): Promise<VolumeSummary> {
    if (!isValidVolumeName(name)) throw invalidArgument(`invalid volume name ${JSON.stringify(name)}: ${VOLUME_NAME_RULE}`);
    makeGeometry(sizeBytes, trackBytes);
    if (this.volumes.has(name) || this.busyNames.has(name)) {
      throw new TidemarkError(ErrorCode.AlreadyExists, `volume ${name} already exists`, { volume: name });
    }
    this.busyNames.add(name);
    try {
      const record: VolumeRecord = {
        name, uuid: randomUUID(), sizeBytes, trackBytes, state: 'ready', createdAtMs: this.deps.nowMs(),
      };
      // The file first, then the record: a crash in between leaves an orphan file, never a record without data.
      await this.deps.stores.remove(name);
      const store = await this.deps.stores.create(name, sizeBytes);
      await store.close();
      await this.deps.journals.remove(name);
      await this.deps.meta.delete(bitmapsKey(name));
      await this.deps.meta.write(volumeKey(name), encodeJson(record));
      this.volumes.set(name, await this.openVolume(record));
    } finally {
      this.busyNames.delete(name);
    }
    return this.summary(name);
  }

  async deleteVolume(name: string): Promise<void> {
    const v = this.volume(name);
    this.cascades.checkDeletable(name);
    this.clones.checkDeletable(name);
    this.pairs.checkVolumeChange(name, 'deleting it');
    this.migrations.checkVolumeChange(name, 'deleting it');
    this.imports.checkVolumeChange(name, 'deleting it');
    this.journals.checkVolumeChange(name, 'deleting it');
    const uses = this.exportCounts.get(name) ?? 0;
    if (uses > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${name} is exported to ${uses} NBD connection(s)`, { volume: name, exports: uses });
    }
    if (this.busyNames.has(name)) throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${name} is busy`, { volume: name });
    this.busyNames.add(name);
    try {
      this.volumes.delete(name);
      await v.close();
      // The record goes first: a crash after it leaves only an orphan file, never a record without data.
      await this.deps.meta.delete(volumeKey(name));
      await this.deps.meta.delete(bitmapsKey(name));
      await this.deps.journals.remove(name);
      await this.deps.stores.remove(name);
    } finally {
      this.busyNames.delete(name);
    }
  }

  /**
   * Closes a volume and drops its record, bitmaps and activity log, but not its storage file (a
   * finished migration: the file is VOL's storage, renamed next).
   */
  private async forgetVolume(name: string): Promise<void> {
    const v = this.volume(name);
    this.volumes.delete(name);
    await v.close();
    await this.deps.meta.delete(volumeKey(name));
    await this.deps.meta.delete(bitmapsKey(name));
    await this.deps.journals.remove(name);
  }

  async setVolumeState(name: string, state: VolumeState): Promise<VolumeSummary> {
    const volume = this.volume(name);
    this.clones.checkDeletable(name);
    this.pairs.checkVolumeChange(name, 'setting its state by hand');
    this.migrations.checkVolumeChange(name, 'setting its state by hand');
    this.journals.checkVolumeChange(name, 'setting its state by hand');
    await volume.setState(state);
    return this.summary(name);
  }

  /**
   * Limits NBD access to clients whose verified certificate carries one of `names` (CN or
   * subjectAltName); an empty list lets any client in. Connections already serving the volume
   * keep it; new handshakes see the list at once.
   */
  async setVolumeAccess(name: string, names: readonly string[]): Promise<VolumeSummary> {
    const volume = this.volume(name);
    const checked = checkAllowedClients(names);
    if (!checked.ok) throw invalidArgument(checked.reason);
    await volume.setAllowedClients(checked.names);
    return this.summary(name);
  }

  /** An NBD connection starts using the volume; the returned function ends that use. */
  acquireExport(name: string): { volume: Volume; release: () => void } {
    const volume = this.volume(name);
    if (this.busyNames.has(name)) throw new TidemarkError(ErrorCode.VolumeBusy, `volume ${name} is busy`, { volume: name });
    this.exportCounts.set(name, (this.exportCounts.get(name) ?? 0) + 1);
    let released = false;
    return {
      volume,
      release: () => {
        if (released) return;
        released = true;
        const n = (this.exportCounts.get(name) ?? 1) - 1;
        if (n <= 0) this.exportCounts.delete(name);
        else this.exportCounts.set(name, n);
      },
    };
  }

  /** Clean shutdown: every volume flushed, bitmaps persisted, activity logs emptied. */
  exportCount(name: string): number {
    return this.exportCounts.get(name) ?? 0;
  }

  /**
   * A crash without the process dying (for tests): background work stops, nothing is flushed or
   * persisted, files stay open. Another ArrayService may then open the same stores.
   */
  /**
   * Makes CLONE hold STD's image of now: reattaches it if it was split (copying only what changed),
   * waits until synchronized, and splits it.
   */
  private async protectWithClone(std: string, clone: string): Promise<void> {
    let session = this.clones.show(std, clone);
    if (session.state === 'split') session = await this.clones.reestablish(std, clone);
    while (session.state === 'synchronizing') {
      await new Promise((resolve) => setTimeout(resolve, 50));
      session = this.clones.show(std, clone);
    }
    if (session.state !== 'synchronized') {
      throw new TidemarkError(ErrorCode.InvalidState, `clone session ${std} → ${clone} is ${session.state}; it cannot protect the replica`,
        { std, clone });
    }
    await this.clones.split(std, clone, false);
  }

  /** `to`: the peer's link address (HOST:PORT), or `{ via: RELAY }` for a peer reached through one of this array's peers. */
  async addPeer(name: string, to: string | { address: string } | { via: string }, secret: Uint8Array): Promise<PeerRecord> {
    const record = await this.peers.add(name, typeof to === 'string' ? { address: to } : to, secret, this.deps.name, this.deps.nowMs());
    this.links.addPeer(linkPeer(record));
    return record;
  }

  async removePeer(name: string): Promise<void> {
    const used = this.pairs.list().filter((p) => p.peer === name);
    if (used.length > 0) {
      throw new TidemarkError(ErrorCode.VolumeBusy, `peer ${name} has ${used.length} pair(s); delete them first`, { peer: name });
    }
    await this.peers.remove(name);
    this.links.removePeer(name);
  }

  peerLinkState(name: string): string {
    return this.links.peerState(name);
  }

  /** One request/response round trip to a peer over its link (peer.ping), in milliseconds. */
  async pingPeer(name: string, timeoutMs: number): Promise<number> {
    const started = this.deps.nowMs();
    await this.rpc.request(name, { op: 'peer.ping' }, [], timeoutMs);
    return this.deps.nowMs() - started;
  }

  peerLinkCounters(name: string): { bytesSent: number; bytesReceived: number; retransmittedPackets: number } {
    return this.links.peerCounters(name);
  }

  peerLinkLastError(name: string): string | null {
    return this.links.peerLastError(name);
  }

  async abandon(): Promise<void> {
    this.journals.close();
    this.groups.close();
    this.cascades.stop();
    await this.pairs.close();
    this.rpc.close();
    await this.clones.abandon();
    await this.migrations.close();
    await this.imports.close();
    for (const v of this.volumes.values()) v.abandon();
    this.volumes.clear();
  }

  /** Answers every API request waiting for a state, as things are now (before the API closes). */
  answerLongPolls(): void {
    this.clones.answerLongPolls();
  }

  async close(): Promise<void> {
    this.journals.close(true);
    this.groups.close();
    this.cascades.stop();
    await this.pairs.close();
    this.rpc.close();
    await this.clones.close();
    await this.migrations.close();
    await this.imports.close();
    const all = [...this.volumes.values()];
    this.volumes.clear();
    await Promise.all(all.map((v) => v.close()));
  }
}

/** Background copies yield to host I/O: one turn of the event loop, or `ms` when pacing. */
const pauseOnEventLoop = (ms: number): Promise<void> =>
  new Promise((resolve) => (ms > 0 ? setTimeout(resolve, ms) : setImmediate(resolve)));

function linkPeer(p: PeerRecord): { name: string; address: string; secret: Uint8Array } {
  return { name: p.name, address: p.address, secret: new Uint8Array(Buffer.from(p.secretBase64, 'base64')) };
}

// The composition root of one array process: the data directory and its lock, metadata, volumes,
// the NBD listeners, the HTTP API and metrics.
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { ErrorCode, TidemarkError, invalidArgument } from '../core/errors.js';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArrayService, type VolumeSummary } from './array-service.js';
import { ArrayMetrics } from './metrics.js';
import { registerJournalMetrics } from './journal/journal-metrics.js';
import type { Logger } from './logger.js';
import { CHANGES_POSITION } from './volume/volume.js';
import { FileBlockStoreFactory } from '../adapters/fs/file-block-store.js';
import { connectNbdSource } from '../adapters/nbd-client/nbd-client.js';
import { FileMetaStore, FileSlotJournalFactory } from '../adapters/fs/file-meta-store.js';
import { FileSpillStore } from '../adapters/fs/file-spill-store.js';
import { FileJournalLogStore, bootId } from '../adapters/fs/file-journal-log-store.js';
import { startNbdServer, type NbdServer } from '../adapters/nbd-server/nbd-server.js';
import { BusyPoll } from '../adapters/net/busy-poll.js';
import type { NbdTlsMode } from '../core/nbd/connection.js';
import type { SessionTls } from '../adapters/nbd-server/nbd-session.js';
import { startApiServer, type ApiServer } from '../adapters/http/api-server.js';
import type { ApiBackend } from '../adapters/http/types.js';
import type { VolumeView } from '../adapters/http/schemas.js';
import { lockDataDir } from '../adapters/lock/data-dir-lock.js';
import { API_READ_TOKEN_FILE, API_TOKEN_FILE, ensureTokenFile } from '../adapters/fs/api-token.js';
import { PRIVATE_DIR_MODE } from '../adapters/fs/private-modes.js';
import { DEFAULT_ACTIVITY_LOG } from '../core/bitmap/activity-log.js';
import { cleanRoundAfter } from '../core/replication/clean-round.js';
import { DEFAULT_PAIR_TIMEOUTS } from './replication/pair-runtime.js';
import { installCrc32c } from '../core/lib/crc32c.js';
import { nativeFs } from '../adapters/fs/native.js';
import { LinkNetwork } from '../adapters/net/link-network.js';
import { linksOver } from './replication/link-peers.js';
import { replicationBackend } from './replication/replication-backend.js';
import { groupBackend } from './group/group-backend.js';
import { CommandRouter } from './routing/command-router.js';
import type { RoutingBackend } from '../adapters/http/routing-routes.js';
import { Observatory } from './observe/observatory.js';
import type { RoutedCommandPolicy } from '../core/routing/route-decision.js';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface DaemonOptions {
  readonly dataDir: string;
  readonly name: string;
  readonly api: HostPort;
  /** PEM files: the API is served over HTTPS with them. */
  readonly apiTls?: { readonly certFile: string; readonly keyFile: string } | undefined;
  /** Host names the API answers to besides IP literals and localhost (DNS rebinding protection); `*`: any. */
  readonly apiHosts?: readonly string[];
  readonly nbd: HostPort | undefined;
  readonly nbdSocket: string | undefined;
  /** STARTTLS on NBD with the --tls-cert/--tls-key pair (default off). */
  readonly nbdTls?: NbdTlsMode | undefined;
  /** PEM CA file: NBD clients must present a certificate it signed (names for volume allow-lists). */
  readonly tlsCaFile?: string | undefined;
  /** NBD connections in transmission silent this long with nothing executing are closed. */
  readonly nbdIdleTimeoutMs?: number | undefined;
  /** NBD reply bytes buffered across connections before backpressure and refusal of new ones. */
  readonly nbdReplyBufferBytes?: number | undefined;
  /** Replication link listener; without it the array can still dial peers whose names sort higher. */
  readonly link?: HostPort | undefined;
  /** Parallel TCP connections per peer link. */
  readonly linkStreams?: number;
  /** What commands routed here from peers may do (default allow). */
  readonly routedCommands?: RoutedCommandPolicy | undefined;
  /** Busy polling after NBD or link input, in µs (0 or absent: the loop sleeps when idle). */
  readonly pollUs?: number | undefined;
  /** A pair's R1 runs a flush round once data R2 acknowledged has waited this long unflushed (default 1 s). */
  readonly flushRoundAfterMs?: number | undefined;
  readonly alExtents: number;
  readonly version: string;
  readonly logger: Logger;
}

export interface RunningArray {
  readonly api: HostPort;
  /** The API is served over HTTPS. */
  readonly apiTls: boolean;
  readonly nbd: HostPort | undefined;
  readonly nbdSocket: string | undefined;
  readonly nbdTls: NbdTlsMode;
  readonly link: HostPort | undefined;
  /** Stops listeners, flushes volumes and persists bitmaps, releases the data directory. Idempotent. */
  stop(): Promise<void>;
}

export const hostPort = (a: HostPort): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

// The API serializes volumes through its schema, which drops unknown fields: a field added to
// VolumeSummary must be added to VolumeSchema too, or this stops compiling.
type SameKeys<A, B> = [keyof A] extends [keyof B] ? ([keyof B] extends [keyof A] ? true : false) : false;
const summaryMatchesApi: SameKeys<VolumeSummary, VolumeView> = true;
void summaryMatchesApi;

/** Wall-clock milliseconds with sub-millisecond resolution, so metrics can time 20 µs operations. */
const nowMs = (): number => performance.timeOrigin + performance.now();

function apiBackend(service: ArrayService, metrics: ArrayMetrics, logger: Logger,
  info: () => ReturnType<ApiBackend['info']>, routing: RoutingBackend, observatory: Observatory): ApiBackend {
  return {
    info,
    volumeNames: () => service.volumeNames(),
    summary: (name) => service.summary(name),
    async createVolume(name, sizeBytes, trackBytes) {
      const volume = await service.createVolume(name, sizeBytes, trackBytes);
      logger.info({ volume: name, sizeBytes, trackBytes: volume.trackBytes }, 'volume created');
      return volume;
    },
    async deleteVolume(name) {
      await service.deleteVolume(name);
      metrics.forgetVolume(name);
      observatory.io.forget(name);
      logger.info({ volume: name }, 'volume deleted');
    },
    async setVolumeAccess(name, allowedClients) {
      const volume = await service.setVolumeAccess(name, allowedClients);
      logger.info({ volume: name, allowedClients: volume.allowedClients }, 'volume NBD access changed');
      return volume;
    },
    async setVolumeState(name, state) {
      const volume = await service.setVolumeState(name, state);
      logger.info({ volume: name, state }, 'volume state changed');
      return volume;
    },
    changeTracker(name) {
      const v = service.volume(name);
      return { trackBytes: v.geometry.trackBytes, trackCount: v.geometry.trackCount, bitmap: v.position(CHANGES_POSITION).invalid };
    },
    async resetChanges(name) {
      await service.volume(name).resetChanges();
      logger.info({ volume: name }, 'change tracker reset');
    },
    metrics: () => metrics.render(),
    clones: service.clones,
    replication: replicationBackend(service),
    groups: groupBackend(() => service.groups),
    migrations: service.migrations,
    imports: service.imports,
    journals: service.journals,
    cascades: service.cascades,
    routing,
    observe: observatory.backend(),
  };
}

async function readTlsFiles(certFile: string, keyFile: string): Promise<{ cert: Buffer; key: Buffer }> {
  const read = async (path: string, what: string): Promise<Buffer> => {
    try {
      const info = await stat(path);
      if (!info.isFile() || info.size > MAX_PEM_BYTES) throw new Error(`not a regular file of at most ${MAX_PEM_BYTES} bytes`);
      return await readFile(path);
    } catch (error) {
      throw invalidArgument(`cannot read the TLS ${what} ${path}: ${(error as Error).message}`);
    }
  };
  const [cert, key] = [await read(certFile, 'certificate'), await read(keyFile, 'key')];
  try {
    createSecureContext({ cert, key }); // a mismatched or malformed pair fails here, with the reason
  } catch (error) {
    throw invalidArgument(`the TLS certificate ${certFile} and key ${keyFile} cannot be used together: ${(error as Error).message}`);
  }
  return { cert, key };
}

async function readCaFile(path: string): Promise<{ pem: Buffer; certificates: X509Certificate[] }> {
  let ca: Buffer;
  try {
    const info = await stat(path);
    if (!info.isFile() || info.size > MAX_PEM_BYTES) throw new Error(`not a regular file of at most ${MAX_PEM_BYTES} bytes`);
    ca = await readFile(path);
  } catch (error) {
    throw invalidArgument(`cannot read the TLS CA file ${path}: ${(error as Error).message}`);
  }
  if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw invalidArgument(`the TLS CA file ${path} holds no PEM certificate`);
  try {
    createSecureContext({ ca });
    const blocks = ca.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    const certificates = blocks.map((pem) => new X509Certificate(pem));
    if (!certificates.some((c) => c.ca)) throw new Error('no certificate in it is a CA (basicConstraints CA:TRUE)');
    return { pem: ca, certificates };
  } catch (error) {
    throw invalidArgument(`the TLS CA file ${path} cannot be used: ${(error as Error).message}`);
  }
}

/** A certificate chain or key in PEM is a few KiB; a bigger file is the wrong one. */
const MAX_PEM_BYTES = 1024 * 1024;

export async function startArray(options: DaemonOptions): Promise<RunningArray> {
  const { logger } = options;
  if (!installCrc32c(nativeFs.crc32c)) logger.warn({}, 'native CRC-32C disagrees with the reference; using the JavaScript one');
  const dataDir = resolve(options.dataDir);
  await mkdir(join(dataDir, 'volumes'), { recursive: true, mode: PRIVATE_DIR_MODE });
  const lock = await lockDataDir(dataDir, { name: options.name, pid: process.pid });
  let tokens: { admin: string; read: string };
  let tls: { cert: Buffer; key: Buffer } | undefined;
  let nbdTls: SessionTls | undefined;
  try {
    if (options.apiTls) tls = await readTlsFiles(options.apiTls.certFile, options.apiTls.keyFile);
    const nbdTlsMode = options.nbdTls ?? 'off';
    if (nbdTlsMode !== 'off') {
      if (!tls) throw invalidArgument(`--nbd-tls ${nbdTlsMode} needs the certificate and key: give --tls-cert and --tls-key`);
      const ca = options.tlsCaFile === undefined ? undefined : await readCaFile(options.tlsCaFile);
      nbdTls = {
        mode: nbdTlsMode,
        context: createSecureContext({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', ...(ca ? { ca: ca.pem } : {}) }),
        ...(ca ? { clientCas: ca.certificates } : {}),
      };
    } else if (options.tlsCaFile !== undefined) {
      throw invalidArgument('--tls-ca verifies NBD client certificates: it needs --nbd-tls optional or require');
    }
    // Whatever created the directory (an operator, an older version, a package), only the array's
    // user may look inside: it holds host data, peer secrets and the API tokens.
    if (((await stat(dataDir)).mode & 0o777) !== PRIVATE_DIR_MODE) {
      await chmod(dataDir, PRIVATE_DIR_MODE);
      logger.info({ data: dataDir }, 'data directory made private (mode 700)');
    }
    tokens = { admin: await ensureTokenFile(dataDir, API_TOKEN_FILE), read: await ensureTokenFile(dataDir, API_READ_TOKEN_FILE) };
  } catch (error) {
    await lock.release();
    throw error;
  }
  const startedAtMs = Date.now();
  let service: ArrayService | undefined;
  let nbd: NbdServer | undefined;
  let api: ApiServer | undefined;
  let links: LinkNetwork | undefined;
  let spill: FileSpillStore | undefined;
  const busyPoll = new BusyPoll(options.pollUs ?? 0);
  const observatory = new Observatory({
    nowMs, onError: (error) => logger.warn({ err: (error as Error).message }, 'event timeline / history sampling failed'),
  });
  try {
    // Spill files never outlive the process that wrote them: whatever an earlier one left goes now.
    spill = await FileSpillStore.open(join(dataDir, 'spill'));
    const linkLogger = logger.child({ component: 'link' });
    links = await LinkNetwork.start({
      arrayName: options.name,
      onInput: busyPoll.enabled ? busyPoll.activity : undefined,
      ...(options.link ? { listen: options.link } : {}),
      ...(options.linkStreams !== undefined ? { streams: options.linkStreams } : {}),
      // Peer messages start with 0 or 1 (peer-messages.ts): the link's relay tunnels can share the sessions.
      carryTunnels: true,
      log: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => linkLogger[level](fields ?? {}, message),
    });
    observatory.watchLinks(links);
    const stats = (): Array<{ name: string; changedTracks: number; exports: number }> =>
      (service?.volumeNames() ?? []).map((name) => service!.summary(name));
    const metrics = new ArrayMetrics(nowMs, stats,
      () => (service?.pairs.list() ?? []).map((p) => ({
        pair: p.pair, peer: p.peer, role: p.role, state: p.state, tracksOwed: p.tracksOwed, bytesOwed: p.bytesOwed,
        lagSeconds: p.lagSeconds, generation: p.generation, bytesShipped: p.counters.bytesShipped,
        writesForwarded: p.counters.writesForwarded, bytesPulled: p.counters.bytesPulled,
        cycleMemoryBytes: p.cycles?.memoryBytes ?? 0, cycleSpilledBytes: p.cycles?.spilledBytes ?? 0, cycleFallbacks: p.counters.cycleFallbacks,
      })),
      () => (service?.peers.list() ?? []).map((p) => ({
        peer: p.name, up: service!.peerLinkState(p.name) === 'up', ...service!.peerLinkCounters(p.name),
      })),
      () => service?.groups.stats() ?? []);
    service = await ArrayService.open({
      name: options.name,
      meta: await FileMetaStore.open(join(dataDir, 'meta')),
      stores: new FileBlockStoreFactory(join(dataDir, 'volumes')),
      journals: new FileSlotJournalFactory(join(dataDir, 'volumes')),
      spill,
      journalLogs: await FileJournalLogStore.open(join(dataDir, 'journal-log')),
      ...await bootId(),
      nowMs,
      activityLog: { ...DEFAULT_ACTIVITY_LOG, maxActiveExtents: options.alExtents },
      ...(options.flushRoundAfterMs === undefined ? {} : { pairTimeouts: { ...DEFAULT_PAIR_TIMEOUTS, cleanRound: cleanRoundAfter(options.flushRoundAfterMs) } }),
      onOp: (volume, kind, bytes, startedAtMs) => {
        metrics.onOp(volume, kind, bytes, startedAtMs);
        observatory.io.onOp(volume, kind, bytes);
      },
      links: linksOver(links),
      importSources: connectNbdSource,
      onEvent: (message, fields) => {
        logger.info(fields, message);
        observatory.onEvent(message, fields);
      },
      onBackgroundError: (error, context) => logger.warn({ ...context, err: (error as Error).message }, 'background error'),
    });
    for (const name of service.volumeNames()) {
      const { lastRecovery } = service.summary(name);
      if (lastRecovery.crashed) {
        logger.warn({ volume: name, tracksMarked: lastRecovery.tracksMarked },
          'volume was not shut down cleanly: tracks of hot extents marked changed');
      }
    }
    const watched = service;
    observatory.watchEstate({
      pairs: () => watched.pairs.list(),
      peers: () => watched.peers.list().map((p) => ({ name: p.name, ...watched.peerLinkCounters(p.name), rttMs: observatory.rttMs(p.name) })),
      volumes: () => watched.volumeNames(),
      io: (volume) => observatory.io.totals(volume),
      clones: () => watched.clones.list(),
    }, {
      peers: () => watched.peers.list().map((p) => p.name),
      isUp: (peer) => watched.peerLinkState(peer) === 'up',
      ping: (peer, timeoutMs) => watched.pingPeer(peer, timeoutMs),
    });
    observatory.timeline.record('array', `array ${options.name} started`, options.name, { version: options.version });
    nbd = await startNbdServer({
      catalog: service,
      logger: logger.child({ component: 'nbd' }),
      ...(options.nbd ? { tcp: options.nbd } : {}),
      ...(options.nbdSocket ? { socketPath: resolve(options.nbdSocket) } : {}),
      onConnection: metrics.onConnection,
      tls: nbdTls,
      idleTimeoutMs: options.nbdIdleTimeoutMs,
      replyBufferCapBytes: options.nbdReplyBufferBytes,
      onInput: busyPoll.enabled ? busyPoll.activity : undefined,
    });
    metrics.registerNbd(nbd.budget);
    registerJournalMetrics(metrics.registry, () => service?.journals.list() ?? []);
    const relayLinks = links;
    metrics.registerRelay(() => relayLinks.tunnels.stats());
    metrics.registerCascades(() => service?.cascades.records() ?? []);
    const svc = service;
    const nbdServer = nbd;
    let apiAddress: HostPort = options.api;
    // A routed command runs through this array's own API, with its own tokens: the peer that sent
    // it was authenticated by the link, and the origin checked its caller's token.
    const routed: { api?: ApiServer } = {};
    const routeLogger = logger.child({ component: 'routing' });
    const router = new CommandRouter({
      selfName: options.name,
      rpc: svc.rpc,
      isPeer: (name) => svc.peers.find(name) !== undefined,
      policy: options.routedCommands ?? 'allow',
      execute: (request) => {
        const apiForRoutes = routed.api;
        if (!apiForRoutes) throw new TidemarkError(ErrorCode.Unavailable, `${options.name} is still starting`);
        const readOnly = request.method === 'GET';
        return apiForRoutes.inject({
          method: request.method, url: request.path, body: request.body,
          headers: { authorization: `Bearer ${readOnly ? tokens.read : tokens.admin}`, ...(readOnly && request.body === undefined ? {} : { 'content-type': 'application/json' }) },
        });
      },
      log: (level, message, fields) => routeLogger[level](fields, message),
    });
    api = await startApiServer({
      host: options.api.host,
      port: options.api.port,
      version: options.version,
      logger: logger.child({ component: 'api' }),
      tls,
      dashboardDir: fileURLToPath(new URL('../../ui/', import.meta.url)),
      access: {
        tokens: [{ token: tokens.admin, scope: 'admin' }, { token: tokens.read, scope: 'read' }],
        // The name it listens on is one it serves (an IP literal is accepted anyway).
        hosts: new Set([options.api.host, ...(options.apiHosts ?? [])].map((h) => h.toLowerCase())),
      },
      backend: apiBackend(svc, metrics, logger, () => ({
        name: options.name,
        version: options.version,
        startedAt: new Date(startedAtMs).toISOString(),
        uptimeSeconds: Math.max(0, (Date.now() - startedAtMs) / 1000),
        api: apiAddress,
        nbd: { tcp: nbdServer.tcpAddress ?? null, socket: nbdServer.socketPath ?? null },
        volumeCount: svc.volumeNames().length,
      }), router, observatory),
    });
    apiAddress = api.address;
    routed.api = api;
  } catch (error) {
    busyPoll.stop();
    observatory.stop();
    await api?.close().catch(() => undefined);
    await nbd?.close().catch(() => undefined);
    await service?.close().catch(() => undefined);
    await links?.close().catch(() => undefined);
    await spill?.close().catch(() => undefined);
    await lock.release();
    throw error;
  }
  const [svc, nbdServer, apiServer, linkNetwork, spillStore] = [service, nbd, api, links, spill];
  let stopping: Promise<void> | undefined;
  return {
    api: apiServer.address,
    apiTls: options.apiTls !== undefined,
    nbdTls: nbdTls?.mode ?? 'off',
    nbd: nbdServer.tcpAddress,
    nbdSocket: nbdServer.socketPath,
    link: linkNetwork.address,
    // NBD first so hosts stop writing, then the API, then volumes flush and persist their bitmaps.
    stop: () => (stopping ??= (async () => {
      try {
        busyPoll.stop();
        await nbdServer.close();
        svc.answerLongPolls(); // the API closes once its requests are answered
        observatory.stop(); // answers waiting event readers, so the API can close at once
        await apiServer.close();
        await svc.close();
        await linkNetwork.close();
        await spillStore.close();
      } finally {
        await lock.release();
      }
    })()),
  };
}

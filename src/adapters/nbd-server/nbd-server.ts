// NBD listeners (TCP and Unix socket) serving the array's volumes as exports.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import { NbdSession, type SessionTls } from './nbd-session.js';
import { ReplyBudget } from './reply-budget.js';
import { PayloadPool } from './payload-pool.js';
import type { ExportCatalog, NbdLogger } from './types.js';

export type { ExportCatalog, NbdLogger, NbdVolume } from './types.js';

export interface NbdServerOptions {
  readonly catalog: ExportCatalog;
  readonly logger: NbdLogger;
  /** Port 0 picks an ephemeral port; see NbdServer.tcpAddress. */
  readonly tcp?: { host: string; port: number };
  readonly socketPath?: string;
  /** Called with +1 / -1 as connections open and close (for the connections gauge). */
  readonly onConnection?: (delta: 1 | -1) => void;
  /** A client must finish option haggling within this time (default 30 s). */
  readonly handshakeTimeoutMs?: number;
  /** In transmission, a client silent this long with nothing executing is disconnected (default: never). */
  readonly idleTimeoutMs?: number | undefined;
  /** STARTTLS (mode optional or require) with this context; absent: no TLS. */
  readonly tls?: SessionTls | undefined;
  /** Reply bytes buffered across all connections before backpressure and refusal of new connections (default 256 MiB). */
  readonly replyBufferCapBytes?: number | undefined;
  /** Called whenever a connection receives bytes (busy polling, see adapters/net/busy-poll.ts). */
  readonly onInput?: (() => void) | undefined;
}

export interface NbdServer {
  readonly tcpAddress: { host: string; port: number } | undefined;
  readonly socketPath: string | undefined;
  /** The shared reply budget (bytes buffered now, peak, refused connections) for metrics and tests. */
  readonly budget: ReplyBudget;
  /** Stops accepting; lets in-flight requests finish (bounded wait), then closes every connection. */
  close(): Promise<void>;
}

/** How long shutdown waits for in-flight requests before closing connections anyway. */
const SHUTDOWN_WAIT_MS = 5000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
/** Connections per listener; more are refused by the kernel backlog rather than served. */
const MAX_CONNECTIONS = 1024;
/**
 * Socket buffer thresholds. Writing: write() returns false (and the session takes no new requests
 * until 'drain') once this much reply data is queued; large enough that a single 256 KiB READ reply
 * does not stall the pipeline. Reading: at most this much is read ahead while the session is paused.
 */
const SOCKET_HIGH_WATER_BYTES = 1024 * 1024;
export const DEFAULT_REPLY_BUFFER_CAP_BYTES = 256 * 1024 * 1024;

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const sessions = new Set<NbdSession>();
  const limits = { handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, idleTimeoutMs: options.idleTimeoutMs };
  const budget = new ReplyBudget(options.replyBufferCapBytes ?? DEFAULT_REPLY_BUFFER_CAP_BYTES);
  const payloads = new PayloadPool();
  let nextId = 1;
  const accept = (socket: Socket): void => {
    const id = nextId++;
    // At the cap the connection is still greeted, so the client hears why: every option gets
    // ERR_SHUTDOWN with this message (QEMU and libnbd print it).
    const refusal = budget.full
      ? `server busy: NBD reply buffers are at their cap of ${budget.capBytes} bytes (clients not reading); try again later`
      : undefined;
    if (refusal) {
      budget.countRefusal();
      options.logger.warn({ connection: id, bufferedBytes: budget.bufferedBytes, capBytes: budget.capBytes },
        'nbd connection refused: reply buffers at their cap');
    }
    let session: NbdSession | undefined = undefined;
    const onClosed = (): void => {
      if (session) sessions.delete(session);
      options.onConnection?.(-1);
    };
    options.onConnection?.(1);
    session = new NbdSession(socket, {
      catalog: options.catalog, logger: options.logger, limits, tls: options.tls, budget, payloads, refusal, onClosed,
      onInput: options.onInput,
    }, id);
    sessions.add(session);
  };
  const newServer = (): Server => {
    // allowHalfOpen: a client that half-closes after DISC must still receive the outstanding replies.
    // pauseOnConnect: the session reads the connection into its own buffers (withOwnBufferReads).
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, highWaterMark: SOCKET_HIGH_WATER_BYTES }, accept);
    server.maxConnections = MAX_CONNECTIONS;
    return server;
  };
  const listen = (server: Server, target: { port: number; host: string } | string): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        server.on('error', (error) => options.logger.error({ err: error.message }, 'nbd listener error'));
        resolve();
      };
      if (typeof target === 'string') server.listen(target, done);
      else server.listen(target.port, target.host, done);
    });

  const servers: Server[] = [];
  let tcpAddress: { host: string; port: number } | undefined;
  try {
    if (options.tcp) {
      const server = newServer();
      await listen(server, options.tcp);
      servers.push(server);
      const address = server.address();
      if (address && typeof address === 'object') tcpAddress = { host: address.address, port: address.port };
    }
    if (options.socketPath) {
      await removeStaleSocket(options.socketPath);
      const server = newServer();
      await listen(server, options.socketPath);
      servers.push(server);
    }
  } catch (error) {
    for (const server of servers) server.close();
    throw error;
  }
  options.logger.info({ tcp: tcpAddress, socket: options.socketPath }, 'nbd server listening');

  let closing: Promise<void> | undefined;
  return {
    tcpAddress,
    socketPath: options.socketPath,
    budget,
    close(): Promise<void> {
      closing ??= (async () => {
        const stopped = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
        await Promise.all([...sessions].map((s) => s.shutdown(SHUTDOWN_WAIT_MS)));
        await Promise.all(stopped);
      })();
      return closing;
    },
  };
}

/**
 * A socket file left by a killed daemon makes listen fail with EADDRINUSE, so remove it — but only
 * a socket nobody answers on; a live one (or a regular file) is left for listen to report.
 */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (!stat?.isSocket()) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
  if (!live) await unlink(path);
}

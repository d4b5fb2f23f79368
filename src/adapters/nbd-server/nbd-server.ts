// NBD listeners (TCP and Unix socket) serving the array's volumes as exports.
import { createServer, type Server, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import { NbdSession } from './nbd-session.js';
import type { ExportCatalog, NbdLogger } from './types.js';

export type { ExportCatalog, NbdLogger, NbdVolume } from './types.js';

export interface NbdServerOptions {
  readonly catalog: ExportCatalog;
  readonly logger: NbdLogger;
  readonly tcp?: { host: string; port: number };
  readonly socketPath?: string;
  readonly onConnection?: (delta: 1 | -1) => void;
}

export interface NbdServer {
  readonly tcpAddress: { host: string; port: number } | undefined;
  readonly socketPath: string | undefined;
  /** Stops accepting; lets in-flight requests finish (bounded wait), then closes every connection. */
  close(): Promise<void>;
}

/** How long shutdown waits for in-flight requests before closing connections anyway. */
const SHUTDOWN_WAIT_MS = 5000;

export async function startNbdServer(options: NbdServerOptions): Promise<NbdServer> {
  const sessions = new Set<NbdSession>();
  let nextId = 1;
  const accept = (socket: Socket): void => {
    const session = new NbdSession(socket, options.catalog, options.logger, nextId++);
    sessions.add(session);
    options.onConnection?.(1);
    socket.once('close', () => {
      sessions.delete(session);
      options.onConnection?.(-1);
    });
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
      const server = createServer({ allowHalfOpen: true }, accept);
      await listen(server, options.tcp);
      servers.push(server);
      const address = server.address();
      if (address && typeof address === 'object') tcpAddress = { host: address.address, port: address.port };
    }
    if (options.socketPath) {
      // A socket file left by a killed daemon would make listen fail with EADDRINUSE.
      await unlink(options.socketPath).catch(() => undefined);
      const server = createServer({ allowHalfOpen: true }, accept);
      await listen(server, options.socketPath);
      servers.push(server);
    }
  } catch (error) {
    for (const server of servers) server.close();
    throw error;
  }

  return {
    tcpAddress,
    socketPath: options.socketPath,
    async close(): Promise<void> {
      const closing = servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
      await Promise.all([...sessions].map((s) => s.shutdown(SHUTDOWN_WAIT_MS)));
      await Promise.all(closing);
    },
  };
}

// One array per data directory. The lock is a listening Unix socket in Linux's abstract namespace,
// named after the directory's device and inode: binding is atomic, the kernel releases it when the
// process dies (even by kill -9), so there is no stale lock file to guess about. A daemon that finds
// the name taken connects to it and learns who holds it, for a clear error message.
import { createConnection, createServer, type Server } from 'node:net';
import { stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, TidemarkError } from '../../core/errors.js';

export interface DataDirLock {
  release(): Promise<void>;
}

/** Longest owner description a refused daemon reads back. */
const OWNER_INFO_MAX_BYTES = 4096;
const OWNER_QUERY_TIMEOUT_MS = 1000;

async function lockAddress(directory: string): Promise<{ address: string; file: boolean }> {
  if (process.platform === 'linux') {
    const { dev, ino } = await stat(directory);
    return { address: `\0tidemark-data-${dev}-${ino}`, file: false };
  }
  // Elsewhere (development machines only) a socket file in the directory stands in; it is racy
  // when two daemons start at the same instant after a crash, which Linux's abstract names are not.
  return { address: join(directory, '.tidemark-lock.sock'), file: true };
}

function listen(server: Server, address: string): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const onError = (error: NodeJS.ErrnoException): void => resolve(error);
    server.once('error', onError);
    server.listen(address, () => {
      server.off('error', onError);
      resolve(undefined);
    });
  });
}

function queryOwner(address: string): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection(address);
    let text = '';
    const done = (value: Record<string, unknown> | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(undefined), OWNER_QUERY_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > OWNER_INFO_MAX_BYTES) done(undefined);
    });
    socket.on('error', () => done(undefined));
    socket.on('end', () => {
      try {
        const parsed: unknown = JSON.parse(text);
        done(typeof parsed === 'object' && parsed !== null ? parsed as Record<string, unknown> : undefined);
      } catch {
        done(undefined);
      }
    });
  });
}

/** Takes the data directory's lock or throws TM_ERR_INVALID_STATE naming the array holding it. */
export async function lockDataDir(directory: string, owner: Record<string, unknown>): Promise<DataDirLock> {
  const { address, file } = await lockAddress(directory);
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.end(JSON.stringify(owner));
  });
  let error = await listen(server, address);
  if (error?.code === 'EADDRINUSE') {
    const holder = await queryOwner(address);
    if (holder || !file) {
      const who = holder ? ` (array ${JSON.stringify(holder.name)}, pid ${String(holder.pid)})` : '';
      throw new TidemarkError(ErrorCode.InvalidState,
        `data directory ${directory} is in use by another tidemark array${who}; stop it first`,
        { dataDir: directory, holder: holder ?? null });
    }
    // Socket file left behind by a dead process.
    await unlink(address).catch(() => undefined);
    error = await listen(server, address);
  }
  if (error) throw error;
  // The lock must never be what keeps a finished process alive.
  server.unref();
  return {
    release: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
    }),
  };
}

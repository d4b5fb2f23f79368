// The API's view of replication: peers and pairs of one array.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { invalidArgument } from '../../core/errors.js';
import type { ReplicationBackend } from '../../adapters/http/replication-routes.js';
import type { ArrayService } from '../array-service.js';
import type { PeerRecord } from './peer-registry.js';
import type { LinkFailurePolicy, PairMode } from '../../core/replication/pair-record.js';

/** A link secret is a key, not a document: a bigger "secret file" is the wrong file. */
export const MAX_SECRET_FILE_BYTES = 4096;

/**
 * A secret file's bytes, without the line ending an editor or `echo` adds. Only a regular file (a
 * symlink to one is fine) of at most MAX_SECRET_FILE_BYTES is read: checked on the open descriptor,
 * so nothing can swap the file in between, and opened non-blocking, so a FIFO or a device cannot
 * hang the API or feed it without end.
 */
async function readSecret(path: string): Promise<Uint8Array> {
  let bytes: Buffer;
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    throw invalidArgument(`cannot read the secret file ${path}: ${(error as Error).message}`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw invalidArgument(`the secret file ${path} is not a regular file`);
    if (info.size > MAX_SECRET_FILE_BYTES) {
      throw invalidArgument(`the secret file ${path} is ${info.size} bytes: a link secret file holds at most ${MAX_SECRET_FILE_BYTES}`);
    }
    bytes = await handle.readFile();
  } finally {
    await handle.close();
  }
  // It may have grown since the stat.
  if (bytes.length > MAX_SECRET_FILE_BYTES) throw invalidArgument(`the secret file ${path} is larger than ${MAX_SECRET_FILE_BYTES} bytes`);
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
  return new Uint8Array(bytes.subarray(0, end));
}

export function replicationBackend(service: ArrayService): ReplicationBackend {
  const view = (p: PeerRecord): ReturnType<ReplicationBackend['showPeer']> => ({
    name: p.name, address: p.address, via: p.via ?? null, link: service.peerLinkState(p.name), ...service.peerLinkCounters(p.name), lastError: service.peerLinkLastError(p.name), createdAt: new Date(p.createdAtMs).toISOString(),
  });
  return {
    addPeer: async (name, to, secretFile) => view(await service.addPeer(name, to, await readSecret(secretFile))),
    listPeers: () => service.peers.list().map(view),
    showPeer: (name) => view(service.peers.get(name)),
    removePeer: (name) => service.removePeer(name),
    createPair: (b) => service.pairs.create({
      volume: b.volume, ...(b.name !== undefined ? { name: b.name } : {}), peer: b.peer, remoteVolume: b.remoteVolume, mode: b.mode as PairMode,
      onLinkFailure: (b.onLinkFailure ?? 'continue') as LinkFailurePolicy,
      ...(b.protectWith !== undefined ? { protectWith: b.protectWith } : {}),
      ...(b.extents !== undefined ? { extents: b.extents } : {}),
      ...(b.cycleMs !== undefined ? { cycleMs: b.cycleMs } : {}),
      ...(b.cycleMemoryBytes !== undefined ? { cycleMemoryBytes: b.cycleMemoryBytes } : {}),
      ...(b.spillLimitBytes !== undefined ? { spillLimitBytes: b.spillLimitBytes } : {}),
      ...(b.minAgeMs !== undefined ? { minAgeMs: b.minAgeMs } : {}),
    }),
    listPairs: () => service.pairs.list(),
    showPair: (pair) => service.pairs.show(pair),
    pairCommand: (pair, command) => service.pairs.command(pair, command),
    setPairMode: (pair, mode) => service.pairs.setMode(pair, mode),
    deletePair: (pair) => service.pairs.delete(pair),
  };
}

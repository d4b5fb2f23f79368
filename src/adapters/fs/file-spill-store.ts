// Spill files of async cycles (see ports/spill-store.ts): DIR/<pair>/<cycle>, sparse, written and
// read with positional I/O through one FileHandle per file. Nothing is fsynced (the files never
// outlive the process that wrote them) and open() deletes whatever an earlier process left.
import { mkdir, open, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { SpillPiece, SpillStore } from '../../ports/spill-store.js';
import { nativeFs } from './native.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from './private-modes.js';

export class FileSpillStore implements SpillStore {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private closed = false;

  private constructor(readonly directory: string) {}

  /** Starts empty: spill files of an earlier process are of cycles that no longer exist. */
  static async open(directory: string): Promise<FileSpillStore> {
    await rm(directory, { recursive: true, force: true });
    await mkdir(directory, { recursive: true, mode: PRIVATE_DIR_MODE });
    return new FileSpillStore(directory);
  }

  /** The directory of a pair's spill files (pair ids are array.volume.suffix; encoded anyway). */
  pairDirectory(pair: string): string {
    return join(this.directory, encodeURIComponent(pair));
  }

  private path(pair: string, cycle: number): string {
    return join(this.pairDirectory(pair), String(cycle));
  }

  private key(pair: string, cycle: number): string {
    return `${pair}/${cycle}`;
  }

  private handle(pair: string, cycle: number): Promise<FileHandle> {
    if (this.closed) return Promise.reject(new Error('the spill store is closed'));
    const key = this.key(pair, cycle);
    let handle = this.handles.get(key);
    if (!handle) {
      handle = (async () => {
        await mkdir(this.pairDirectory(pair), { recursive: true, mode: PRIVATE_DIR_MODE });
        return open(this.path(pair, cycle), 'w+', PRIVATE_FILE_MODE);
      })();
      this.handles.set(key, handle);
      handle.catch(() => this.handles.delete(key));
    }
    return handle;
  }

  async write(pair: string, cycle: number, pieces: readonly SpillPiece[]): Promise<void> {
    const handle = await this.handle(pair, cycle);
    const buffers: Uint8Array[] = [];
    const offsets: number[] = [];
    for (const p of pieces) {
      if (p.data.length === 0) continue;
      buffers.push(p.data);
      offsets.push(p.offset);
    }
    // One thread-pool job for the whole batch (pwrite per piece, short writes continued).
    if (buffers.length > 0) await nativeFs.writeBatch(handle.fd, buffers, offsets);
  }

  async read(pair: string, cycle: number, offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (!this.handles.has(this.key(pair, cycle))) return out; // never written: zeros
    const handle = await this.handle(pair, cycle);
    // One native pread job (zeros past the end of the file: the rest was never written).
    if (length > 0) await nativeFs.readBatch(handle.fd, [out], [offset]);
    return out;
  }

  async removeCycle(pair: string, cycle: number): Promise<void> {
    const key = this.key(pair, cycle);
    const handle = this.handles.get(key);
    if (!handle) return;
    this.handles.delete(key);
    await (await handle.catch(() => undefined))?.close();
    await unlink(this.path(pair, cycle)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  /** Closes every file and deletes them all (the array stops; nothing here is needed again). */
  async close(): Promise<void> {
    this.closed = true;
    const handles = [...this.handles.values()];
    this.handles.clear();
    for (const handle of handles) await (await handle.catch(() => undefined))?.close();
    await rm(this.directory, { recursive: true, force: true });
    await mkdir(this.directory, { recursive: true, mode: PRIVATE_DIR_MODE });
  }
}

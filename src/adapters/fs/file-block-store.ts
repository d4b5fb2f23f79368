// A volume backed by one sparse file, with positional I/O through a FileHandle.
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { AllocationExtent, BlockStore, BlockStoreFactory } from '../../ports/block-store.js';
import { nativeFs } from './native.js';
import { fsyncDirectory } from './fsync-directory.js';
import { IoBatcher } from './io-batcher.js';
import { PRIVATE_FILE_MODE } from './private-modes.js';

/** Zero buffer shared by every fallback zero write; never written to. */
const ZEROES = Buffer.alloc(1024 * 1024);

export class FileBlockStore implements BlockStore {
  private punchSupported = true;
  private readonly reads: IoBatcher;
  private readonly writes: IoBatcher;

  private constructor(private readonly handle: FileHandle, readonly sizeBytes: number, readonly path: string) {
    this.reads = new IoBatcher(handle.fd, 'read');
    this.writes = new IoBatcher(handle.fd, 'write', { direct: true });
  }

  get canPunchHoles(): boolean {
    return this.punchSupported;
  }

  static async open(path: string, sizeBytes: number, create: boolean): Promise<FileBlockStore> {
    const handle = await open(path, create ? 'wx+' : 'r+', PRIVATE_FILE_MODE);
    try {
      if (create) {
        await handle.truncate(sizeBytes);
        await handle.sync();
      } else {
        const { size } = await handle.stat();
        if (size !== sizeBytes) throw new Error(`volume file ${path} is ${size} bytes, metadata says ${sizeBytes}`);
      }
      return new FileBlockStore(handle, sizeBytes, path);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  readInto(offset: number, length: number, target: Uint8Array, targetOffset = 0): Promise<void> {
    return this.reads.submit(target.subarray(targetOffset, targetOffset + length), offset);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.writes.submit(data, offset);
  }

  async writeZeroes(offset: number, length: number, allocate: boolean): Promise<void> {
    if (this.punchSupported) {
      try {
        if (allocate) await nativeFs.zeroRange(this.handle.fd, offset, length);
        else await nativeFs.punchHole(this.handle.fd, offset, length);
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EOPNOTSUPP') throw error;
        if (!allocate) this.punchSupported = false;
      }
    }
    for (let done = 0; done < length; done += ZEROES.length) {
      await this.write(offset + done, ZEROES.subarray(0, Math.min(ZEROES.length, length - done)));
    }
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length, false);
  }

  async flush(): Promise<void> {
    await this.handle.datasync();
  }

  async allocation(offset: number, length: number, maxExtents = Infinity): Promise<AllocationExtent[]> {
    const end = offset + length;
    const out: AllocationExtent[] = [];
    let pos = offset;
    // Two seeks per data extent: on a fragmented file an unbounded scan costs thousands of
    // thread-pool round trips per request.
    while (pos < end && out.length < maxExtents) {
      const data = await nativeFs.seekData(this.handle.fd, pos);
      if (data === -1 || data >= end) {
        out.push({ offset: pos, length: end - pos, kind: 'hole' });
        break;
      }
      if (data > pos) out.push({ offset: pos, length: data - pos, kind: 'hole' });
      if (out.length >= maxExtents) break;
      const hole = await nativeFs.seekHole(this.handle.fd, data);
      const dataEnd = hole === -1 ? end : Math.min(hole, end);
      out.push({ offset: data, length: dataEnd - data, kind: 'data' });
      pos = dataEnd;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

export class FileBlockStoreFactory implements BlockStoreFactory {
  constructor(private readonly directory: string) {}

  private pathOf(name: string): string {
    return join(this.directory, `${name}.vol`);
  }

  async create(name: string, sizeBytes: number): Promise<BlockStore> {
    const store = await FileBlockStore.open(this.pathOf(name), sizeBytes, true);
    await fsyncDirectory(this.directory);
    return store;
  }

  open(name: string, sizeBytes: number): Promise<BlockStore> {
    return FileBlockStore.open(this.pathOf(name), sizeBytes, false);
  }

  async remove(name: string): Promise<void> {
    await unlink(this.pathOf(name)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await fsyncDirectory(this.directory);
  }

  async rename(from: string, to: string): Promise<void> {
    // An open handle on either file keeps working: it names the inode, not the path.
    await rename(this.pathOf(from), this.pathOf(to)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await fsyncDirectory(this.directory);
  }
}

// Metadata records as one file each: write to a temporary file, fdatasync, rename over the old
// record, fsync the directory. Reads verify the checksummed envelope. Every write has its own
// temporary file and the writes and deletes of one key run one at a time, in the order issued, so
// concurrent changes to a record never mix bytes or finish out of order (the last issued wins).
import { open, readFile, readdir, rename, unlink, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { MetaStore, SlotJournal, SlotJournalFactory, SlotWrite } from '../../ports/meta-store.js';
import { decodeRecord, encodeRecord } from '../../core/lib/checksummed-record.js';
import { fsyncDirectory } from './fsync-directory.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from './private-modes.js';

const fileOf = (key: string): string => `${encodeURIComponent(key)}.rec`;
const keyOf = (file: string): string => decodeURIComponent(file.slice(0, -'.rec'.length));

export class FileMetaStore implements MetaStore {
  /** The last queued change of each key with one in progress. */
  private readonly tails = new Map<string, Promise<void>>();
  private temporaries = 0;

  private constructor(private readonly directory: string) {}

  static async open(directory: string): Promise<FileMetaStore> {
    await mkdir(directory, { recursive: true, mode: PRIVATE_DIR_MODE });
    // Leftover temporaries are writes that never completed their rename: the old record stands.
    for (const file of await readdir(directory)) {
      if (file.endsWith('.tmp')) {
        await unlink(join(directory, file)).catch((error: NodeJS.ErrnoException) => {
          if (error.code !== 'ENOENT') throw error;
        });
      }
    }
    return new FileMetaStore(directory);
  }

  async read(key: string): Promise<Uint8Array | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(this.directory, fileOf(key)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    return decodeRecord(bytes, key);
  }

  /** Runs `change` after every change of `key` issued before it, whether they failed or not. */
  private serialized(key: string, change: () => Promise<void>): Promise<void> {
    const result = (this.tails.get(key) ?? Promise.resolve()).then(change);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  write(key: string, data: Uint8Array): Promise<void> {
    const record = encodeRecord(data); // the caller may reuse `data` once this returns
    return this.serialized(key, async () => {
      const final = join(this.directory, fileOf(key));
      const temporary = `${final}.${process.pid}.${this.temporaries++}.tmp`;
      const handle = await open(temporary, 'wx', PRIVATE_FILE_MODE);
      try {
        try {
          await handle.writeFile(record);
          await handle.datasync();
        } finally {
          await handle.close();
        }
        await rename(temporary, final);
      } catch (error) {
        await unlink(temporary).catch(() => undefined);
        throw error;
      }
      await fsyncDirectory(this.directory);
    });
  }

  delete(key: string): Promise<void> {
    return this.serialized(key, () => this.deleteNow(key));
  }

  private async deleteNow(key: string): Promise<void> {
    try {
      await unlink(join(this.directory, fileOf(key)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    await fsyncDirectory(this.directory);
  }

  async list(prefix: string): Promise<string[]> {
    const files = await readdir(this.directory);
    return files.filter((f) => f.endsWith('.rec')).map(keyOf).filter((k) => k.startsWith(prefix)).sort();
  }
}

export class FileSlotJournal implements SlotJournal {
  private constructor(
    private readonly handle: Awaited<ReturnType<typeof open>>,
    readonly slotCount: number,
    readonly slotBytes: number,
  ) {}

  static async open(path: string, slotCount: number, slotBytes: number): Promise<FileSlotJournal> {
    const handle = await open(path, 'a+', PRIVATE_FILE_MODE).then(async (h) => {
      await h.close();
      return open(path, 'r+');
    });
    const { size } = await handle.stat();
    if (size < slotCount * slotBytes) {
      await handle.truncate(slotCount * slotBytes);
      await handle.sync();
    }
    return new FileSlotJournal(handle, slotCount, slotBytes);
  }

  writeSlot(index: number, data: Uint8Array): Promise<void> {
    return this.writeSlots([{ index, data }]);
  }

  async writeSlots(writes: readonly SlotWrite[]): Promise<void> {
    for (const { index, data } of writes) {
      if (data.length !== this.slotBytes || !Number.isInteger(index) || index < 0 || index >= this.slotCount) {
        throw new RangeError(`slot ${index} write of ${data.length} bytes`);
      }
    }
    for (const { index, data } of writes) await this.handle.write(data, 0, data.length, index * this.slotBytes);
    await this.handle.datasync();
  }

  async readAll(): Promise<Uint8Array[]> {
    const all = Buffer.alloc(this.slotCount * this.slotBytes);
    await this.handle.read(all, 0, all.length, 0);
    const slots: Uint8Array[] = [];
    for (let i = 0; i < this.slotCount; i++) slots.push(all.subarray(i * this.slotBytes, (i + 1) * this.slotBytes));
    return slots;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

export class FileSlotJournalFactory implements SlotJournalFactory {
  constructor(private readonly directory: string) {}

  async open(name: string, slotCount: number, slotBytes: number): Promise<SlotJournal> {
    const journal = await FileSlotJournal.open(join(this.directory, `${name}.al`), slotCount, slotBytes);
    await fsyncDirectory(this.directory);
    return journal;
  }

  async remove(name: string): Promise<void> {
    await unlink(join(this.directory, `${name}.al`)).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
}

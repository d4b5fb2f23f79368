// Metadata records as one file each: write to a temporary file, fdatasync, rename over the old
// record, fsync the directory. Reads verify the checksummed envelope.
import { open, readFile, readdir, rename, unlink, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { MetaStore, SlotJournal, SlotJournalFactory } from '../../ports/meta-store.js';
import { decodeRecord, encodeRecord } from '../../core/lib/checksummed-record.js';
import { fsyncDirectory } from './fsync-directory.js';

const fileOf = (key: string): string => `${encodeURIComponent(key)}.rec`;
const keyOf = (file: string): string => decodeURIComponent(file.slice(0, -'.rec'.length));

export class FileMetaStore implements MetaStore {
  private constructor(private readonly directory: string) {}

  static async open(directory: string): Promise<FileMetaStore> {
    await mkdir(directory, { recursive: true });
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

  async write(key: string, data: Uint8Array): Promise<void> {
    const final = join(this.directory, fileOf(key));
    const temporary = `${final}.tmp`;
    const handle = await open(temporary, 'w');
    try {
      await handle.writeFile(encodeRecord(data));
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(temporary, final);
    await fsyncDirectory(this.directory);
  }

  async delete(key: string): Promise<void> {
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
    const handle = await open(path, 'a+').then(async (h) => {
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

  async writeSlot(index: number, data: Uint8Array): Promise<void> {
    if (data.length !== this.slotBytes || index < 0 || index >= this.slotCount) {
      throw new RangeError(`slot ${index} write of ${data.length} bytes`);
    }
    await this.handle.write(data, 0, data.length, index * this.slotBytes);
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

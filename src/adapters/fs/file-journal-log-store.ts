// Primary-side journal log segments (ports/journal-log-store.ts): DIR/<journal>/<segment>, appended
// with pwrite(2) at the tracked end (synchronous: a few KiB into the page cache, and the record must
// be there before the request or write it covers goes on), made durable by fdatasync on `sync`.
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { JournalLogStore } from '../../ports/journal-log-store.js';
import { fsyncDirectory } from './fsync-directory.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from './private-modes.js';

const datasync = promisify(fdatasync);

interface Open { readonly fd: number; end: number; dirty: boolean; entryDurable: boolean }

export class FileJournalLogStore implements JournalLogStore {
  private readonly open = new Map<string, Open>();

  private constructor(readonly directory: string) {}

  static async open(directory: string): Promise<FileJournalLogStore> {
    await mkdir(directory, { recursive: true, mode: PRIVATE_DIR_MODE });
    return new FileJournalLogStore(directory);
  }

  private dir(journal: string): string {
    return join(this.directory, encodeURIComponent(journal));
  }

  async load(journal: string): Promise<Array<{ segment: number; bytes: Uint8Array }>> {
    const names = await readdir(this.dir(journal)).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return []; throw e; });
    const segments = names.filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
    const out: Array<{ segment: number; bytes: Uint8Array }> = [];
    for (const segment of segments) out.push({ segment, bytes: new Uint8Array(await readFile(join(this.dir(journal), String(segment)))) });
    return out;
  }

  append(journal: string, segment: number, bytes: Uint8Array): void {
    const key = `${journal}/${segment}`;
    let f = this.open.get(key);
    if (!f) {
      mkdirSync(this.dir(journal), { recursive: true, mode: PRIVATE_DIR_MODE });
      // 'w': a segment number is appended to by one process only (a restart starts a new one).
      f = { fd: openSync(join(this.dir(journal), String(segment)), 'w', PRIVATE_FILE_MODE), end: 0, dirty: true, entryDurable: false };
      this.open.set(key, f);
    }
    let done = 0;
    while (done < bytes.length) done += writeSync(f.fd, bytes, done, bytes.length - done, f.end + done);
    f.end += bytes.length;
    f.dirty = true;
  }

  /**
   * The journal's segments written since their last sync (taken as synced now), and whether one of
   * them is new: a new segment's directory entry must be made durable too.
   */
  private takeDirty(journal: string): { fds: number[]; created: boolean } {
    const fds: number[] = [];
    let created = false;
    for (const [key, f] of this.open) {
      if (!key.startsWith(`${journal}/`) || !f.dirty) continue;
      f.dirty = false;
      created ||= !f.entryDurable;
      f.entryDurable = true;
      fds.push(f.fd);
    }
    return { fds, created };
  }

  async sync(journal: string): Promise<void> {
    const { fds, created } = this.takeDirty(journal);
    for (const fd of fds) await datasync(fd);
    if (created) await fsyncDirectory(this.dir(journal));
  }

  syncNow(journal: string): void {
    const { fds, created } = this.takeDirty(journal);
    for (const fd of fds) fdatasyncSync(fd);
    if (created) {
      const fd = openSync(this.dir(journal), 'r');
      try { fsyncSync(fd); } finally { closeSync(fd); }
    }
  }

  async removeSegment(journal: string, segment: number): Promise<void> {
    const key = `${journal}/${segment}`;
    const f = this.open.get(key);
    if (f) { this.open.delete(key); closeSync(f.fd); }
    await unlink(join(this.dir(journal), String(segment))).catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
  }

  async removeJournal(journal: string): Promise<void> {
    for (const [key, f] of [...this.open]) if (key.startsWith(`${journal}/`)) { this.open.delete(key); closeSync(f.fd); }
    await rm(this.dir(journal), { recursive: true, force: true });
  }

  close(): Promise<void> {
    for (const f of this.open.values()) closeSync(f.fd);
    this.open.clear();
    return Promise.resolve();
  }
}

/** This boot of the machine (Linux), or nothing where the kernel does not say. */
export async function bootId(): Promise<{ bootId?: string }> {
  const id = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '');
  return id.trim() === '' ? {} : { bootId: id.trim() };
}

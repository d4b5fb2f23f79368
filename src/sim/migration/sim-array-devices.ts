// The devices of one simulated array that migrates or imports volumes: a named disk per storage file
// (renamed as files are), a slot journal per volume, a metadata store, and a flaky NBD source. They
// survive crashes; each incarnation of the array reaches them through fenced factories, so a dead
// incarnation's late calls have no effect.
import { ErrorCode, TidemarkError } from '../../core/errors.js';
import type { Prng } from '../../core/lib/prng.js';
import type { BlockStore, BlockStoreFactory } from '../../ports/block-store.js';
import type { ImportSource, ImportSourceConnector } from '../../ports/import-source.js';
import type { MetaStore, SlotJournal, SlotJournalFactory } from '../../ports/meta-store.js';
import { fenced } from '../fenced-ports.js';
import type { Scheduler } from '../scheduler.js';
import { SimDisk } from '../sim-disk.js';
import { SimMetaStore, SimSlotJournal } from '../sim-meta-store.js';

const never = <T>(): Promise<T> => new Promise<T>(() => undefined);

export class SimArrayDevices {
  readonly disks = new Map<string, SimDisk>();
  readonly journals = new Map<string, SimSlotJournal>();
  readonly meta: SimMetaStore;

  constructor(private readonly scheduler: Scheduler, private readonly prng: Prng) {
    this.meta = new SimMetaStore(scheduler, prng.fork());
  }

  /** The factories one incarnation uses; calls after it died never complete. */
  incarnation(alive: () => boolean): { stores: BlockStoreFactory; journals: SlotJournalFactory; meta: MetaStore } {
    const gate = <T>(call: () => Promise<T>): Promise<T> => (alive() ? call() : never<T>());
    const fence = (store: BlockStore, journal?: SlotJournal): { store: BlockStore; journal: SlotJournal } => {
      const ports = fenced({ store, meta: this.meta, journal: journal ?? (undefined as unknown as SlotJournal) }, alive);
      return { store: ports.store, journal: ports.journal };
    };
    const anyDisk = (): SimDisk => new SimDisk(4096, this.scheduler, this.prng.fork());
    const stores: BlockStoreFactory = {
      create: (name, sizeBytes) => gate(async () => {
        const disk = new SimDisk(sizeBytes, this.scheduler, this.prng.fork());
        this.disks.set(name, disk);
        return fence(disk).store;
      }),
      open: (name) => gate(async () => {
        const disk = this.disks.get(name);
        if (!disk) throw new TidemarkError(ErrorCode.NotFound, `no storage named ${name}`);
        disk.reopen();
        return fence(disk).store;
      }),
      remove: (name) => gate(async () => { this.disks.delete(name); }),
      rename: (from, to) => gate(async () => {
        const disk = this.disks.get(from);
        if (!disk) return;
        this.disks.set(to, disk);
        this.disks.delete(from);
      }),
    };
    const journals: SlotJournalFactory = {
      open: (name, slotCount, slotBytes) => gate(async () => {
        let journal = this.journals.get(name);
        if (!journal || journal.slotCount !== slotCount || journal.slotBytes !== slotBytes) {
          journal = new SimSlotJournal(slotCount, slotBytes, this.scheduler, this.prng.fork());
          this.journals.set(name, journal);
        }
        journal.reopen();
        return fence(anyDisk(), journal).journal;
      }),
      remove: (name) => gate(async () => { this.journals.delete(name); }),
    };
    return { stores, journals, meta: fenced({ store: anyDisk(), meta: this.meta, journal: undefined as unknown as SlotJournal }, alive).meta };
  }

  /** Power loss: every device loses what was not durable. */
  crash(): void {
    for (const disk of this.disks.values()) disk.crash();
    for (const journal of this.journals.values()) journal.crash();
    this.meta.crash();
  }
}

/** Another array's NBD export, over a network that drops connections and has outages. */
export class FlakySourceServer {
  up = true;
  /** Chance that a request breaks the connection (it fails; the client must reconnect). */
  dropChance = 0;
  connections = 0;
  readsServed = 0;

  constructor(readonly image: Uint8Array, private readonly scheduler: Scheduler, private readonly prng: Prng) {}

  readonly connect: ImportSourceConnector = (url) => new Promise((resolve, reject) => {
    this.scheduler.at(0.2 + this.prng.next(), () => {
      if (!this.up) {
        reject(new TidemarkError(ErrorCode.Unavailable, `source ${url}: connection refused`));
        return;
      }
      this.connections++;
      resolve(new FakeSource(this, this.scheduler, this.prng));
    });
  });

  /** Whether a request on a connection gets through now. */
  serves(): boolean {
    return this.up && !this.prng.chance(this.dropChance);
  }
}

class FakeSource implements ImportSource {
  private dead = false;

  constructor(private readonly server: FlakySourceServer, private readonly scheduler: Scheduler, private readonly prng: Prng) {}

  get sizeBytes(): number {
    return this.server.image.length;
  }

  readonly writable = true;

  get alive(): boolean {
    return !this.dead;
  }

  private request<T>(work: () => T): Promise<T> {
    if (this.dead) return Promise.reject(new TidemarkError(ErrorCode.Unavailable, 'source connection closed'));
    return new Promise<T>((resolve, reject) => {
      this.scheduler.at(0.05 + this.prng.next() * 0.5, () => {
        if (this.dead || !this.server.serves()) {
          this.dead = true;
          reject(new TidemarkError(ErrorCode.Unavailable, 'source connection lost'));
          return;
        }
        resolve(work());
      });
    });
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.request(() => {
      this.server.readsServed++;
      return this.server.image.slice(offset, offset + length);
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    const copy = data.slice();
    return this.request(() => { this.server.image.set(copy, offset); });
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.request(() => { this.server.image.fill(0, offset, offset + length); });
  }

  flush(): Promise<void> {
    return this.request(() => undefined);
  }

  close(): void {
    this.dead = true;
  }
}

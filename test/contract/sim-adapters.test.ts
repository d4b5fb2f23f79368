// Runs the port contracts against the simulator's devices, so the fakes the simulator drives the
// volume with behave like the real adapters (crash-free: the scheduler fires events on its own).
import { Prng } from '../../src/core/lib/prng.js';
import { Scheduler } from '../../src/sim/scheduler.js';
import { SimDisk } from '../../src/sim/sim-disk.js';
import { SimMetaStore, SimSlotJournal } from '../../src/sim/sim-meta-store.js';
import { SimSpillStore } from '../../src/sim/sim-spill-store.js';
import { blockStoreContract } from './block-store-contract.js';
import { spillStoreContract } from './spill-store-contract.js';
import { metaStoreContract, slotJournalContract } from './meta-store-contract.js';

function drivenScheduler(): Scheduler {
  const scheduler = new Scheduler();
  scheduler.autoRun();
  return scheduler;
}

blockStoreContract('SimDisk', async () => {
  const scheduler = drivenScheduler();
  const prng = new Prng(1);
  return {
    create: async (size) => new SimDisk(size, scheduler, prng.fork()),
    cleanup: async () => undefined,
  };
});

metaStoreContract('SimMetaStore', async () => ({
  store: new SimMetaStore(drivenScheduler(), new Prng(2)),
  cleanup: async () => undefined,
}));

slotJournalContract('SimSlotJournal', async () => ({
  journal: new SimSlotJournal(4, 512, drivenScheduler(), new Prng(3)),
  cleanup: async () => undefined,
}));

spillStoreContract('SimSpillStore', async () => ({
  store: new SimSpillStore(drivenScheduler(), new Prng(4)),
  cleanup: async () => undefined,
}));

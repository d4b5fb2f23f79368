// Runs the port contracts against the real file-backed adapters.
import { mkdtemp, rm, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileBlockStoreFactory } from '../../src/adapters/fs/file-block-store.js';
import { FileMetaStore, FileSlotJournal } from '../../src/adapters/fs/file-meta-store.js';
import { blockStoreContract } from './block-store-contract.js';
import { metaStoreConcurrencyContract, metaStoreContract, slotJournalContract } from './meta-store-contract.js';
import { isTidemarkError } from '../../src/core/errors.js';
import { FileSpillStore } from '../../src/adapters/fs/file-spill-store.js';
import { spillStoreContract } from './spill-store-contract.js';
import { readdir, mkdir } from 'node:fs/promises';

const tempDir = (): Promise<string> => mkdtemp(join(tmpdir(), 'tidemark-contract-'));

blockStoreContract('FileBlockStore', async () => {
  const dir = await tempDir();
  const factory = new FileBlockStoreFactory(dir);
  let n = 0;
  return {
    create: (size) => factory.create(`v${n++}`, size),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

metaStoreContract('FileMetaStore', async () => {
  const dir = await tempDir();
  return { store: await FileMetaStore.open(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

metaStoreConcurrencyContract('FileMetaStore', async () => {
  const dir = await tempDir();
  return { store: await FileMetaStore.open(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

slotJournalContract('FileSlotJournal', async () => {
  const dir = await tempDir();
  const journal = await FileSlotJournal.open(join(dir, 'x.al'), 4, 512);
  return { journal, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

test('FileMetaStore reports a damaged record as corrupt instead of returning it', async () => {
  const dir = await tempDir();
  try {
    const store = await FileMetaStore.open(dir);
    await store.write('volume/x', new TextEncoder().encode('{"ok":true}'));
    const path = join(dir, 'volume%2Fx.rec');
    const bytes = await readFile(path);
    bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 0x20;
    await writeFile(path, bytes);
    await assert.rejects(store.read('volume/x'), (e) => isTidemarkError(e, 'TM_ERR_METADATA_CORRUPT'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('FileMetaStore drops temporaries left by an interrupted write and keeps the old record', async () => {
  const dir = await tempDir();
  try {
    const store = await FileMetaStore.open(dir);
    await store.write('volume/x', new Uint8Array([1]));
    await writeFile(join(dir, 'volume%2Fx.rec.tmp'), 'half-written');
    const reopened = await FileMetaStore.open(dir);
    assert.deepEqual(new Uint8Array((await reopened.read('volume/x'))!), new Uint8Array([1]));
    assert.deepEqual(await reopened.list(''), ['volume/x']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

spillStoreContract('FileSpillStore', async () => {
  const dir = await tempDir();
  return { store: await FileSpillStore.open(join(dir, 'spill')), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

test('FileSpillStore: one sparse file per (pair, cycle) under its directory; leftovers of an earlier process go at open', async () => {
  const dir = await tempDir();
  try {
    const leftover = join(dir, 'spill', 'old.pair');
    await mkdir(leftover, { recursive: true });
    await writeFile(join(leftover, '7'), 'from a process that is gone');
    const store = await FileSpillStore.open(join(dir, 'spill'));
    assert.deepEqual(await readdir(join(dir, 'spill')), [], 'leftover spill files are deleted at open');
    await store.write('east.db.x1', 12, [{ offset: 1024 * 4096, data: new Uint8Array(4096).fill(1) }]);
    assert.deepEqual(await readdir(store.pairDirectory('east.db.x1')), ['12']);
    await store.removeCycle('east.db.x1', 12);
    assert.deepEqual(await readdir(store.pairDirectory('east.db.x1')), []);
    await store.write('east.db.x1', 13, [{ offset: 0, data: new Uint8Array(10) }]);
    await store.close();
    assert.deepEqual(await readdir(join(dir, 'spill')), [], 'close deletes everything');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the file adapters create private files and directories whatever the umask', async () => {
  const dir = await tempDir();
  const umask = process.umask(0o000);
  const mode = async (path: string): Promise<string> => ((await stat(path)).mode & 0o777).toString(8);
  try {
    const spill = await FileSpillStore.open(join(dir, 'spill'));
    await spill.write('a.v.1', 7, [{ offset: 0, data: new Uint8Array(4096).fill(1) }]);
    assert.equal(await mode(join(dir, 'spill')), '700');
    assert.equal(await mode(spill.pairDirectory('a.v.1')), '700');
    assert.equal(await mode(join(spill.pairDirectory('a.v.1'), '7')), '600');
    await spill.close();
    const meta = await FileMetaStore.open(join(dir, 'meta', 'deep'));
    await meta.write('peer/x', new Uint8Array([1, 2, 3]));
    assert.equal(await mode(join(dir, 'meta')), '700');
    assert.equal(await mode(join(dir, 'meta', 'deep', 'peer%2Fx.rec')), '600');
    const journal = await FileSlotJournal.open(join(dir, 'x.al'), 4, 512);
    await journal.close();
    assert.equal(await mode(join(dir, 'x.al')), '600');
    const volume = await new FileBlockStoreFactory(dir).create('v', 65536);
    await volume.close();
    assert.equal(await mode(join(dir, 'v.vol')), '600');
  } finally {
    process.umask(umask);
    await rm(dir, { recursive: true, force: true });
  }
});

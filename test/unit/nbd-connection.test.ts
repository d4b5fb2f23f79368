import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbdConnection, type ExportDirectory, type NbdAction } from '../../src/core/nbd/connection.js';
import { ByteQueue } from '../../src/core/nbd/byte-queue.js';
import { statusExtents } from '../../src/core/nbd/block-status.js';

const directory: ExportDirectory = {
  list: () => [{ name: 'a', sizeBytes: 1 << 20, readOnly: false, canFastZero: true, description: 'A' }],
  lookup: (name) => (name === 'a'
    ? { kind: 'found', info: { name: 'a', sizeBytes: 1 << 20, readOnly: false, canFastZero: true, description: 'A' } }
    : name === 'b' ? { kind: 'refused', message: 'not ready' } : { kind: 'unknown' }),
};

function option(opt: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const v = new DataView(out.buffer);
  out.set(new TextEncoder().encode('IHAVEOPT'));
  v.setUint32(8, opt);
  v.setUint32(12, data.length);
  out.set(data, 16);
  return out;
}

function goData(name: string): Uint8Array {
  const n = new TextEncoder().encode(name);
  const out = new Uint8Array(4 + n.length + 2);
  new DataView(out.buffer).setUint32(0, n.length);
  out.set(n, 4);
  return out;
}

function request(type: number, cookie: number, offset: number, length: number, flags = 0): Uint8Array {
  const out = new Uint8Array(28);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0x25609513);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setUint32(12, cookie);
  v.setBigUint64(16, BigInt(offset));
  v.setUint32(24, length);
  return out;
}

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

const summary = (actions: NbdAction[]): string[] => actions.map((a) => {
  switch (a.kind) {
    case 'send': return `send:${a.bytes.length}`;
    case 'command': return `command:${a.command.type}`;
    case 'transmission': return `transmission:${a.export.name}:${a.structured}`;
    default: return a.kind;
  }
});

const session = concat(
  new Uint8Array([0, 0, 0, 3]),
  option(8, new Uint8Array(0)),
  option(7, goData('a')),
  request(1, 1, 0, 8), new Uint8Array(8).fill(5),
  request(0, 2, 0, 8),
  request(3, 3, 0, 0),
  request(2, 4, 0, 0),
);

test('a session parses identically whole, byte by byte and in random splits', () => {
  const whole = new NbdConnection(directory);
  whole.start();
  const expected = summary(whole.receive(session));
  assert.deepEqual(expected, [
    'send:20', 'send:32', 'send:34', 'send:20', 'transmission:a:true',
    'command:write', 'command:read', 'command:flush', 'disconnect',
  ]);
  const bytewise = new NbdConnection(directory);
  bytewise.start();
  const got: NbdAction[] = [];
  for (let i = 0; i < session.length; i++) got.push(...bytewise.receive(session.subarray(i, i + 1)));
  assert.deepEqual(summary(got), expected);
  const write = got.find((a) => a.kind === 'command' && a.command.type === 'write');
  assert.ok(write && write.kind === 'command' && write.command.type === 'write');
  assert.deepEqual([...write.command.data], new Array(8).fill(5));
});

test('GO for a refused export gets ERR_POLICY and an unknown one ERR_UNKNOWN; the session goes on', () => {
  const c = new NbdConnection(directory);
  c.start();
  const actions = c.receive(concat(new Uint8Array([0, 0, 0, 3]), option(7, goData('b')), option(7, goData('zz')), option(7, goData('a'))));
  const types = actions.filter((a) => a.kind === 'send').map((a) => new DataView((a as { bytes: Uint8Array }).bytes.buffer).getUint32(12));
  assert.equal(types[0], 0x80000002);
  assert.equal(types[1], 0x80000006);
  assert.ok(actions.some((a) => a.kind === 'transmission'));
});

test('EXPORT_NAME of an unknown export closes; without NO_ZEROES the reply is padded to 134 bytes', () => {
  const bad = new NbdConnection(directory);
  bad.start();
  assert.deepEqual(summary(bad.receive(concat(new Uint8Array([0, 0, 0, 1]), option(1, new TextEncoder().encode('zz'))))), ['close']);
  const good = new NbdConnection(directory);
  good.start();
  assert.deepEqual(summary(good.receive(concat(new Uint8Array([0, 0, 0, 1]), option(1, new TextEncoder().encode('a'))))),
    ['send:134', 'transmission:a:false']);
});

test('ByteQueue takes views within a chunk and copies across chunks', () => {
  const q = new ByteQueue();
  q.push(new Uint8Array([1, 2, 3]));
  q.push(new Uint8Array([4, 5]));
  assert.deepEqual([...q.take(2)], [1, 2]);
  assert.deepEqual([...q.take(2)], [3, 4]);
  assert.equal(q.skip(10), 1);
  assert.equal(q.length, 0);
});

test('block status merges equal neighbours and honours REQ_ONE', () => {
  const runs = [
    { offset: 0, length: 4096, kind: 'data' as const },
    { offset: 4096, length: 4096, kind: 'data' as const },
    { offset: 8192, length: 8192, kind: 'hole' as const },
  ];
  assert.deepEqual(statusExtents(runs, false, 16384), [{ length: 8192, status: 0 }, { length: 8192, status: 3 }]);
  assert.deepEqual(statusExtents(runs, true, 4096), [{ length: 4096, status: 0 }]);
});

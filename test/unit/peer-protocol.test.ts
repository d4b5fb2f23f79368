// The peer protocol's one decoder: every operation round-trips through the codec; a header that
// does not match its operation is refused naming the operation and the field; and PeerRpc answers
// unknown, malformed and undecodable requests with error replies without running any handler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, TidemarkError } from '../../src/core/errors.js';
import { decodeMessage, encodeMessage, type Segment } from '../../src/core/replication/peer-messages.js';
import {
  decodeReply, decodeRequest, PEER_OPERATIONS, PEER_OPS, type PeerOp, type ReplyOf, type RequestOf,
} from '../../src/core/replication/peer-protocol.js';
import { PeerRpc } from '../../src/app/replication/peer-rpc.js';
import { inProcessLinks } from '../../src/sim/sim-links.js';

const member = { array: 'east', volume: 'db', pairId: 'east.db.1a2b', r2Array: 'west', r2Volume: 'db-r' };
const table = { group: 'g', coordinator: 'east', epoch: 1, version: 3, cycleMs: 1000, tag: 7, members: [member] };
const record = {
  id: 'east.db.1a2b', name: 'db', role: 'R2' as const, localVolume: 'db-r', peer: 'east', remoteVolume: 'db', mode: 'async' as const,
  intent: 'replicating' as const, onLinkFailure: 'continue' as const, generation: 1, diverged: false, protectWith: null,
  extents: [{ offset: 0, length: 65536 }], cycleMs: 1000, cycleMemoryBytes: 64 << 20, spillLimitBytes: 1 << 30, createdAtMs: 1_700_000_000_000,
};
const pair = 'east.db.1a2b';
const jrecord = { name: 'j', sequencer: 'east', intervalMs: 100, batchBytes: 1 << 20, tokens: 'sync' as const, createdAtMs: 1_700_000_000_000 };
const jtoken = { pair: 'j.db.west', volume: 'db', offset: 4096, length: 4096, secondary: 'west', sequence: 17, timeMs: 1_700_000_000_123 };

/** One valid request per operation: the type makes this list complete. */
const REQUESTS: { [Op in PeerOp]: RequestOf<Op> } = {
  'pair.create': { op: 'pair.create', record, sizeBytes: 1 << 30, trackBytes: 65536 },
  'pair.apply': { op: 'pair.apply', pair, fua: true },
  'pair.flush': { op: 'pair.flush', pair },
  'pair.digests': { op: 'pair.digests', pair, tracks: [0, 5, 17] },
  'pair.read': { op: 'pair.read', pair, tracks: [3] },
  'pair.status': { op: 'pair.status', pair },
  'pair.set-intent': { op: 'pair.set-intent', pair, intent: 'restoring', generation: 4, returnOwn: true },
  'pair.cycles-start': { op: 'pair.cycles-start', pair, cycle: 12, groupFrom: null },
  'pair.cycle': { op: 'pair.cycle', pair, msg: { kind: 'records', cycle: 3, records: [{ record: 9, version: 2, ranges: [{ start: 0, end: 512 }] }] } },
  'pair.cycle-r2': { op: 'pair.cycle-r2', pair, msg: { kind: 'records-ack', cycle: 3, records: [{ record: 9, version: 2 }] } },
  'pair.protect': { op: 'pair.protect', pair, whole: false },
  'pair.clear-own': { op: 'pair.clear-own', pair },
  'pair.set-mode': { op: 'pair.set-mode', pair, mode: 'semisync' },
  'pair.command': { op: 'pair.command', pair, command: 'failback' },
  'pair.swap': { op: 'pair.swap', pair, generation: 5 },
  'pair.delete': { op: 'pair.delete', pair },
  'group.command': { op: 'group.command', group: 'g', volume: 'db', command: { kind: 'store-table', table } },
  'group.member-info': { op: 'group.member-info', volume: 'db', group: 'g' },
  'group.member-status': { op: 'group.member-status', volume: 'db' },
  'group.r2-table': { op: 'group.r2-table', pair, table, groupFrom: 4 },
  'group.r2-state': { op: 'group.r2-state', member, force: true },
  'group.r2-resolve': { op: 'group.r2-resolve', member, action: 'release' },
  'group.show': { op: 'group.show', group: 'g' },
  'group.locate': { op: 'group.locate', group: 'g' },
  'group.is-member': { op: 'group.is-member', group: 'g', member: 'east/db' },
  'group.add': { op: 'group.add', group: 'g', volume: 'db' },
  'group.remove': { op: 'group.remove', group: 'g', volume: 'db' },
  'journal.create': { op: 'journal.create', record: jrecord },
  'journal.join': { op: 'journal.join', journal: 'j', secondary: 'west' },
  'journal.members': { op: 'journal.members', journal: 'j', secondaries: ['west', 'north'] },
  'journal.pair-create': { op: 'journal.pair-create', record: jrecord, base: 4, secondaries: ['west'],
    pair: { id: 'j.db.west', primaryArray: 'east', primaryVolume: 'db', secondaryArray: 'west', secondaryVolume: 'db-r', extents: null } },
  'journal.request': { op: 'journal.request', journal: 'j', incarnation: 3, requestId: 9, specs: [{ pair: 'j.db.west', volume: 'db', offset: 0, length: 512, secondary: 'west' }] },
  'journal.message': { op: 'journal.message', journal: 'j', message: { from: 'east', role: 'primary', type: 'data', continuity: 5, tokens: [jtoken], entries: [jtoken] } },
  'journal.watermark': { op: 'journal.watermark', journal: 'j', completeUpTo: 40 },
  'journal.queue-state': { op: 'journal.queue-state', journal: 'j' },
  'journal.recover': { op: 'journal.recover', journal: 'j', point: 40 },
  'journal.delete': { op: 'journal.delete', journal: 'j' },
  'route.request': { op: 'route.request', method: 'POST', path: '/v1/volumes?x=1', hops: ['north'], trail: ['east'], timeoutMs: 54_000 },
  'peer.ping': { op: 'peer.ping' },
};

const REPLIES: { [Op in PeerOp]: ReplyOf<Op> } = {
  'pair.create': {},
  'pair.apply': {},
  'pair.flush': {},
  'pair.digests': {},
  'pair.read': {},
  'pair.status': { exists: true, role: 'R2', intent: 'replicating', generation: 2, invalidTracks: 0, appliedCycle: 4, recoverableCycle: null },
  'pair.set-intent': { ownTracks: 3 },
  'pair.cycles-start': {},
  'pair.cycle': {},
  'pair.cycle-r2': {},
  'pair.protect': { protected: true, kept: true },
  'pair.clear-own': {},
  'pair.set-mode': {},
  'pair.command': {},
  'pair.swap': {},
  'pair.delete': {},
  'group.command': { answer: { kind: 'switch-failed', tag: 9, reason: 'window closed', windowClosed: true } },
  'group.member-info': { member },
  'group.member-status': { status: { captureTag: 3, lagSeconds: 0.5 } },
  'group.r2-table': {},
  'group.r2-state': { input: { member: 'east/db', committedTag: 4, received: { tag: null, complete: false } } },
  'group.r2-resolve': { appliedCycle: 10, appliedTag: null },
  'group.show': { view: { name: 'g', members: [] } },
  'group.locate': { coordinates: false },
  'group.is-member': { member: null },
  'group.add': { view: { name: 'g' } },
  'group.remove': { view: { name: 'g' } },
  'journal.create': {},
  'journal.join': { base: 12, secondaries: ['west'] },
  'journal.members': {},
  'journal.pair-create': {},
  'journal.request': { first: 18, count: 3, timeMs: 1_700_000_000_124 },
  'journal.message': { ackUpTo: 5 },
  'journal.watermark': {},
  'journal.queue-state': { tokens: 'sync', state: { secondary: 'west', appliedUpTo: 3, appliedTimeMs: 1, tokens: [jtoken], dataSequences: [17], primaryTokens: [17], lastMessageMs: null } },
  'journal.recover': { appliedUpTo: 40 },
  'journal.delete': {},
  'route.request': { status: 201, contentType: 'application/json; charset=utf-8', answeredBy: 'north', trail: ['east', 'west', 'north'] },
  'peer.ping': {},
};

const segments: Segment[] = [{ kind: 'data', offset: 0, data: Uint8Array.of(1, 2, 3) }, { kind: 'zero', offset: 4096, length: 4096 }];

test('every operation round-trips through the codec and the decoder, request and reply', () => {
  assert.equal(PEER_OPS.length, 39);
  for (const op of PEER_OPS) {
    const bytes = encodeMessage({ type: 'request', id: 7, header: { ...REQUESTS[op], rpc: 'x' }, segments });
    const message = decodeMessage(bytes);
    const decoded = decodeRequest(message.header);
    assert.ok(decoded.ok, `${op}: ${decoded.ok ? '' : decoded.error.message}`);
    assert.deepEqual(decoded.value, { ...REQUESTS[op], rpc: 'x' }, op);
    assert.equal(decoded.value.op, op);
    const reply = decodeMessage(encodeMessage({ type: 'response', id: 7, header: { ...REPLIES[op], ok: true, rpc: 'x' }, segments: [] }));
    const decodedReply = decodeReply(op, reply.header);
    assert.ok(decodedReply.ok, `${op} reply: ${decodedReply.ok ? '' : decodedReply.error.message}`);
    assert.deepEqual(decodedReply.value, { ...REPLIES[op], ok: true, rpc: 'x' }, op);
  }
});

/** A value of the wrong type for whatever the field holds. */
const wrong = (value: unknown): unknown => (typeof value === 'string' ? 42 : 'wrong');

test('segment offsets round-trip up to 2^53 - 1 through memory not zeroed; larger ones are refused either way', () => {
  const offsets = [0, 4096, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER - 4096];
  const segments: Segment[] = offsets.map((offset, i) => (i % 2 === 0
    ? { kind: 'data', offset, data: new Uint8Array(16).fill(i + 1) }
    : { kind: 'zero', offset, length: 4096 }));
  // Memory full of garbage: every byte of the message must be written by the encoder.
  const dirty = (bytes: number): Uint8Array => new Uint8Array(bytes).fill(0xa5);
  const bytes = encodeMessage({ type: 'request', id: 3, header: { op: 'x' }, segments }, dirty);
  assert.deepEqual(bytes, encodeMessage({ type: 'request', id: 3, header: { op: 'x' }, segments }));
  const back = decodeMessage(bytes);
  assert.deepEqual(back.segments.map((s) => s.offset), offsets);
  assert.throws(() => encodeMessage({ type: 'request', id: 3, header: {}, segments: [{ kind: 'zero', offset: -1, length: 1 }] }));
  assert.throws(() => encodeMessage({ type: 'request', id: 3, header: {}, segments: [{ kind: 'zero', offset: 0.5, length: 1 }] }));
  // A peer's offset of 2^53 (high word 0x200000): a protocol error, as any offset past MAX_SAFE_INTEGER.
  const tooFar = encodeMessage({ type: 'request', id: 3, header: {}, segments: [{ kind: 'zero', offset: 2 ** 52, length: 1 }] });
  const at = tooFar.length - 13 + 1;
  new DataView(tooFar.buffer, tooFar.byteOffset).setUint32(at, 0x20_0000);
  assert.throws(() => decodeMessage(tooFar), /offset too large/);
  new DataView(tooFar.buffer, tooFar.byteOffset).setUint32(at, 0x1f_ffff);
  assert.equal(decodeMessage(tooFar).segments[0]!.offset, 2 ** 53 - 2 ** 32);
});

test('every required field of every request, missing or of the wrong type, is refused naming the operation and the field', () => {
  let checked = 0;
  for (const op of PEER_OPS) {
    const valid = REQUESTS[op] as unknown as Record<string, unknown>;
    const required = (PEER_OPERATIONS[op].request.required ?? []) as string[];
    for (const field of Object.keys(valid).filter((f) => f !== 'op')) {
      for (const variant of ['missing', 'wrong type'] as const) {
        if (variant === 'missing' && !required.includes(field)) continue;
        const header: Record<string, unknown> = { ...valid };
        if (variant === 'missing') delete header[field];
        else header[field] = wrong(valid[field]);
        const decoded = decodeRequest(header);
        assert.ok(!decoded.ok, `${op} with ${field} ${variant} was accepted`);
        assert.equal(decoded.error.code, ErrorCode.Protocol, `${op} ${field} ${variant}`);
        assert.equal(decoded.error.details.op, op);
        assert.equal(String(decoded.error.details.field).split('.')[0], field, `${op} ${field} ${variant}: ${decoded.error.message}`);
        assert.match(decoded.error.message, new RegExp(`^bad ${op.replace('.', '\\.')} request: field ${field}`));
        checked++;
      }
    }
  }
  assert.ok(checked > 80, `${checked} cases`);
});

test('nested fields, bounds and enumerations are checked too, and named by their path', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ ...REQUESTS['pair.digests'], tracks: Array.from({ length: 1025 }, (_, i) => i) }, 'tracks'],
    [{ ...REQUESTS['pair.digests'], tracks: [1, -1] }, 'tracks.1'],
    [{ ...REQUESTS['pair.read'], tracks: [1.5] }, 'tracks.0'],
    [{ ...REQUESTS['pair.set-intent'], intent: 'everything' }, 'intent'],
    [{ ...REQUESTS['pair.set-intent'], generation: 2 ** 60 }, 'generation'],
    [{ ...REQUESTS['pair.cycles-start'], cycle: 0 }, 'cycle'],
    [{ ...REQUESTS['pair.command'], command: 'format' }, 'command'],
    [{ ...REQUESTS['pair.cycle'], msg: { kind: 'explode', cycle: 1 } }, 'msg'],
    [{ ...REQUESTS['pair.create'], record: { ...record, name: 'bad name' } }, 'record.name'],
    [{ ...REQUESTS['pair.create'], record: { ...record, generation: 0 } }, 'record.generation'],
    [{ ...REQUESTS['group.r2-resolve'], action: 'format' }, 'action'],
    [{ ...REQUESTS['group.r2-state'], member: { ...member, pairId: '' } }, 'member.pairId'],
  ];
  for (const [header, field] of cases) {
    const decoded = decodeRequest(header);
    assert.ok(!decoded.ok, `accepted ${JSON.stringify(header).slice(0, 80)}`);
    assert.equal(decoded.error.code, ErrorCode.Protocol);
    assert.equal(decoded.error.details.field, field, decoded.error.message);
  }
});

test('an unknown operation, a header without op and a header that is not an object are refused with stable codes', () => {
  const unknown = decodeRequest({ op: 'pair.format-disk', pair });
  assert.ok(!unknown.ok);
  assert.equal(unknown.error.code, ErrorCode.Unsupported);
  assert.match(unknown.error.message, /unknown peer operation "pair\.format-disk"/);
  for (const header of [{ pair }, { op: 42 }, null, [1, 2], 'pair.status']) {
    const decoded = decodeRequest(header);
    assert.ok(!decoded.ok);
    assert.equal(decoded.error.code, ErrorCode.Protocol, JSON.stringify(header));
  }
  const badReply = decodeReply('pair.set-intent', { ok: true, ownTracks: 'many' });
  assert.ok(!badReply.ok);
  assert.equal(badReply.error.code, ErrorCode.Protocol);
  assert.equal(badReply.error.details.field, 'ownTracks');
});

// ---- PeerRpc at the boundary ----

function rig(): {
  rpc: PeerRpc; errors: Array<{ error: unknown; context: Record<string, unknown> }>; calls: string[];
  send(bytes: Uint8Array): void; replies: Array<ReturnType<typeof decodeMessage>>; raw: Uint8Array[];
} {
  const hub = inProcessLinks();
  const west = hub.endpoint('west');
  west.addPeer({ name: 'east', address: '-', secret: new Uint8Array(16) });
  const errors: Array<{ error: unknown; context: Record<string, unknown> }> = [];
  const rpc = new PeerRpc(west, (error, context) => errors.push({ error, context }));
  const calls: string[] = [];
  rpc.handle('pair.status', async (_peer, h) => { calls.push(`status ${h.pair}`); return { header: { exists: false }, segments: [] }; });
  rpc.handle('pair.apply', (_peer, h) => {
    calls.push(`apply ${h.pair}`);
    throw new TidemarkError(ErrorCode.NotFound, `no pair ${h.pair}`);
  });
  rpc.handle('pair.flush', () => { calls.push('flush'); throw new Error('a bug'); });
  const east = hub.endpoint('east');
  east.addPeer({ name: 'west', address: '-', secret: new Uint8Array(16) });
  const replies: Array<ReturnType<typeof decodeMessage>> = [];
  const raw: Uint8Array[] = [];
  east.onMessage((_peer, bytes) => { raw.push(bytes); replies.push(decodeMessage(bytes)); });
  return { rpc, errors, calls, send: (bytes) => void east.send('west', bytes), replies, raw };
}

/** Waits until `count` replies arrived (then a little longer, so a reply that should not come would be seen). */
async function replies(r: { replies: unknown[] }, count: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (r.replies.length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise((resolve) => setTimeout(resolve, 30));
}

const request = (id: number, header: Record<string, unknown>): Uint8Array =>
  encodeMessage({ type: 'request', id, header: { ...header, rpc: 'client' }, segments: [] });

test('PeerRpc: unknown and malformed requests get error replies and one log line each; no handler runs', async () => {
  const r = rig();
  r.send(request(1, { op: 'pair.format-disk', pair }));
  r.send(request(2, { op: 'pair.status', pair: 17 }));
  r.send(request(3, { op: 'pair.status' }));
  // Valid: proves the rig does answer, and runs the handler.
  r.send(request(4, { op: 'pair.status', pair }));
  await replies(r, 4);
  const byId = new Map(r.replies.map((m) => [m.id, m]));
  const codeOf = (id: number): unknown => (byId.get(id)?.header.error as { code?: string } | undefined)?.code;
  assert.equal(byId.get(1)?.header.ok, false);
  assert.equal(codeOf(1), ErrorCode.Unsupported);
  assert.equal(codeOf(2), ErrorCode.Protocol);
  assert.match((byId.get(2)!.header.error as { message: string }).message, /bad pair\.status request: field pair/);
  assert.equal(codeOf(3), ErrorCode.Protocol);
  assert.equal(byId.get(2)?.header.rpc, 'client', 'the requester can match the error to its request');
  assert.equal(byId.get(4)?.header.ok, true);
  assert.deepEqual(r.calls, [`status ${pair}`]);
  assert.equal(r.errors.length, 3);
  assert.deepEqual(r.errors.map((e) => e.context.id), [1, 2, 3]);
});

test('PeerRpc: a handler that throws synchronously is answered with its error code, never thrown into the link', async () => {
  const r = rig();
  r.send(request(5, { op: 'pair.apply', pair, fua: false }));
  r.send(request(6, { op: 'pair.flush', pair }));
  await replies(r, 2);
  const byId = new Map(r.replies.map((m) => [m.id, m]));
  assert.equal((byId.get(5)?.header.error as { code?: string }).code, ErrorCode.NotFound);
  assert.equal((byId.get(6)?.header.error as { code?: string }).code, ErrorCode.Internal);
  assert.deepEqual(r.calls, [`apply ${pair}`, 'flush']);
  assert.deepEqual(r.errors.map((e) => e.context.thrown), ['synchronously', 'synchronously']);
});

test('PeerRpc: a header that is not JSON is answered when its id is readable; a message too short for an id is logged and dropped', async () => {
  const r = rig();
  const good = request(8, { op: 'pair.status', pair });
  // Same framing, header bytes replaced by text that is not JSON.
  const notJson = good.slice();
  notJson.fill(0x7b, 9, 12);
  r.send(notJson);
  // Framing cut short after the id: the header length points past the end.
  r.send(good.subarray(0, 20));
  // Too short to hold an id.
  r.send(Uint8Array.of(0, 0, 0));
  await replies(r, 2);
  const byId = new Map(r.replies.map((m) => [m.id, m]));
  assert.equal(r.replies.length, 2, 'one reply per message with a readable id');
  assert.equal((byId.get(8)?.header.error as { code?: string }).code, ErrorCode.Protocol);
  assert.deepEqual(r.calls, []);
  assert.equal(r.errors.length, 3);
  assert.equal(r.errors[2]!.context.dropped, true);
});

test('PeerRpc: a reply that does not match its operation fails the request with TM_ERR_PROTOCOL', async () => {
  const hub = inProcessLinks();
  const west = hub.endpoint('west');
  west.addPeer({ name: 'east', address: '-', secret: new Uint8Array(16) });
  const east = hub.endpoint('east');
  east.addPeer({ name: 'west', address: '-', secret: new Uint8Array(16) });
  const errors: unknown[] = [];
  const westRpc = new PeerRpc(west, (error) => errors.push(error));
  // East answers like a broken peer would: ownTracks is not a count.
  east.onMessage((_peer, bytes) => {
    const m = decodeMessage(bytes);
    void east.send('west', encodeMessage({ type: 'response', id: m.id, header: { ok: true, rpc: m.header.rpc, ownTracks: -1 }, segments: [] }));
  });
  await assert.rejects(westRpc.request('east', { op: 'pair.set-intent', pair, intent: 'suspended', generation: 1 }),
    (e: unknown) => e instanceof TidemarkError && e.code === ErrorCode.Protocol && /bad pair\.set-intent reply: field ownTracks/.test(e.message));
  assert.equal(errors.length, 1);
});

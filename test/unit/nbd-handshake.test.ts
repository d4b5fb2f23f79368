// The core NBD machine's fixed-newstyle handshake, byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NbdConnection, type ExportDirectory, type ExportInfo } from '../../src/core/nbd/connection.js';
import {
  clientFlags, concat, drain, feed, hex, infoData, metaData, option, optionReplies, request, summary, text, u32,
} from '../helpers/nbd-frames.js';

const MiB = 1024 * 1024;
const disk0: ExportInfo = { name: 'disk0', sizeBytes: 64 * MiB, readOnly: false, canFastZero: true, description: 'first' };
const other: ExportInfo = { name: 'other', sizeBytes: MiB, readOnly: true, canFastZero: false, description: 'second' };

/** Two exports, one refused by policy; "" is the default export disk0. */
const directory: ExportDirectory = {
  list: () => [disk0, other],
  lookup: (name) => {
    if (name === 'disk0' || name === '') return { kind: 'found', info: disk0 };
    if (name === 'other') return { kind: 'found', info: other };
    if (name === 'sleepy') return { kind: 'refused', message: 'volume sleepy is not ready' };
    return { kind: 'unknown' };
  },
};

const OPT_MAGIC = 0x0003e889045565a9n;
const ACK = 1;
const SERVER = 2;
const INFO = 3;
const META = 4;
const ERR_UNSUP = 0x80000001;
const ERR_POLICY = 0x80000002;
const ERR_INVALID = 0x80000003;
const ERR_UNKNOWN = 0x80000006;

function connected(): NbdConnection {
  const c = new NbdConnection(directory);
  drain(c); // greeting
  return c;
}

test('the greeting is NBDMAGIC, IHAVEOPT and flags FIXED_NEWSTYLE|NO_ZEROES', () => {
  const actions = drain(new NbdConnection(directory));
  assert.deepEqual(summary(actions), ['send:4e42444d41474943' + '49484156454f5054' + '0003']);
});

test('QEMU 7.2 negotiation: structured replies, base:allocation, GO with BLOCK_SIZE — exact bytes', () => {
  const c = connected();
  const actions = feed(c, concat(
    clientFlags(3),
    option(8),
    option(10, metaData('disk0', ['base:allocation'])),
    option(7, infoData('disk0', [3])),
  ));
  const sends = actions.filter((a) => a.kind === 'send').map((a) => hex((a as { bytes: Uint8Array }).bytes));
  assert.deepEqual(sends, [
    '0003e889045565a9' + '00000008' + '00000001' + '00000000',
    '0003e889045565a9' + '0000000a' + '00000004' + '00000013' + '00000001' + hex(text('base:allocation')),
    '0003e889045565a9' + '0000000a' + '00000001' + '00000000',
    // INFO_EXPORT: size 64 MiB, flags 0x0ded (HAS_FLAGS FLUSH FUA TRIM WRITE_ZEROES DF MULTI_CONN CACHE FAST_ZERO)
    '0003e889045565a9' + '00000007' + '00000003' + '0000000c' + '0000' + '0000000004000000' + '0ded',
    // INFO_BLOCK_SIZE: min 1, preferred 4096, max 32 MiB
    '0003e889045565a9' + '00000007' + '00000003' + '0000000e' + '0003' + '00000001' + '00001000' + '02000000',
    '0003e889045565a9' + '00000007' + '00000001' + '00000000',
  ]);
  const last = actions[actions.length - 1]!;
  assert.ok(last.kind === 'transmission');
  assert.equal(last.export.name, 'disk0');
  assert.equal(last.structured, true);
  assert.equal(last.flags, 0x0ded);
  // base:allocation is usable: BLOCK_STATUS decodes to a command with context id 1.
  const bs = feed(c, request(7, 5n, 0, 4096, 8));
  assert.ok(bs[0]?.kind === 'command' && bs[0].command.type === 'block-status' && bs[0].command.contextId === 1);
});

test('without structured replies DF is not advertised; a read-only export adds READ_ONLY and drops FAST_ZERO', () => {
  const c = connected();
  const actions = feed(c, concat(clientFlags(3), option(7, infoData('other'))));
  const last = actions[actions.length - 1]!;
  assert.ok(last.kind === 'transmission');
  assert.equal(last.flags, 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0100 | 0x0400);
  assert.equal(last.structured, false);
});

test('a session parses the same whole, byte by byte and in any split', () => {
  const bytes = concat(clientFlags(3), option(8), option(99, text('junk')), option(3), option(6, infoData('disk0', [1, 2])),
    option(9, metaData('disk0', [])), option(7, infoData('', [3])));
  const whole = summary(feed(connected(), bytes));
  assert.equal(whole[whole.length - 1], 'transmission:disk0:true:3565');
  assert.deepEqual(summary(feed(connected(), bytes, new Array(bytes.length).fill(1))), whole);
  for (let size = 2; size < 40; size += 3) {
    assert.deepEqual(summary(feed(connected(), bytes, new Array(Math.ceil(bytes.length / size)).fill(size))), whole);
  }
});

test('unknown client flags, or options from a client without fixed newstyle, close the connection', () => {
  assert.deepEqual(summary(feed(connected(), clientFlags(0x80000001))), ['close']);
  assert.deepEqual(summary(feed(connected(), clientFlags(4))), ['close']);
  assert.deepEqual(summary(feed(connected(), concat(clientFlags(0), option(7, infoData('disk0'))))), ['close']);
});

test('garbage instead of an option header closes; later bytes are ignored', () => {
  const c = connected();
  assert.deepEqual(summary(feed(c, concat(clientFlags(3), text('GARBAGE!GARBAGE!'), option(3)))), ['close']);
  assert.equal(c.ended, true);
  c.receive(option(3));
  assert.deepEqual(drain(c), []);
});

test('an option longer than 64 KiB closes at its header, before any of its data is buffered', () => {
  const c = connected();
  assert.deepEqual(summary(feed(c, concat(clientFlags(3), option(99, new Uint8Array(0), 64 * 1024 + 1)))), ['close']);
  const ok = connected();
  const replies = optionReplies(feed(ok, concat(clientFlags(3), option(99, new Uint8Array(64 * 1024)), option(3))));
  assert.deepEqual(replies.map((r) => r.type), [ERR_UNSUP, SERVER, SERVER, ACK]);
});

test('unknown options, STARTTLS and EXTENDED_HEADERS get ERR_UNSUP and negotiation goes on', () => {
  const actions = feed(connected(), concat(clientFlags(3), option(99, text('whatever')), option(5), option(11), option(7, infoData('disk0'))));
  const replies = optionReplies(actions);
  assert.deepEqual(replies.slice(0, 3).map((r) => [r.option, r.type]), [[99, ERR_UNSUP], [5, ERR_UNSUP], [11, ERR_UNSUP]]);
  assert.ok(replies.every((r) => r.magic === OPT_MAGIC));
  assert.equal(actions[actions.length - 1]!.kind, 'transmission');
});

test('LIST names every export with its description; LIST with data is ERR_INVALID', () => {
  const replies = optionReplies(feed(connected(), concat(clientFlags(3), option(3), option(3, text('x')))));
  assert.deepEqual(replies.map((r) => r.type), [SERVER, SERVER, ACK, ERR_INVALID]);
  assert.equal(hex(replies[0]!.data), hex(concat(u32(5), text('disk0'), text('first'))));
  assert.equal(hex(replies[1]!.data), hex(concat(u32(5), text('other'), text('second'))));
});

test('INFO answers without entering transmission, NAME and DESCRIPTION on request; GO after it repeats the data', () => {
  const c = connected();
  const info = feed(c, concat(clientFlags(3), option(6, infoData('', [1, 2, 3, 77]))));
  assert.ok(info.every((a) => a.kind === 'send'));
  const replies = optionReplies(info);
  assert.deepEqual(replies.map((r) => r.type), [INFO, INFO, INFO, INFO, ACK]);
  assert.equal(hex(replies[2]!.data), '0001' + hex(text('disk0')), 'the canonical name of the default export');
  assert.equal(hex(replies[3]!.data), '0002' + hex(text('first')));
  const go = optionReplies(feed(c, option(7, infoData('', [1, 2, 3, 77]))));
  assert.deepEqual(go.map((r) => hex(r.data)), replies.map((r) => hex(r.data)));
});

test('GO: refused export is ERR_POLICY with its message, unknown is ERR_UNKNOWN, malformed is ERR_INVALID', () => {
  const nameTooLong = concat(u32(100), text('disk0'), new Uint8Array(2));
  const lengthMismatch = concat(infoData('disk0', [3]), new Uint8Array(1));
  const badUtf8 = concat(u32(2), new Uint8Array([0xc3, 0x28]), new Uint8Array(2));
  const withNul = concat(u32(2), new Uint8Array([0x61, 0x00]), new Uint8Array(2));
  const actions = feed(connected(), concat(clientFlags(1),
    option(7, infoData('sleepy')), option(7, infoData('nope')), option(7, new Uint8Array(3)), option(7, nameTooLong),
    option(7, lengthMismatch), option(7, badUtf8), option(7, withNul), option(7, infoData('disk0'))));
  const replies = optionReplies(actions);
  assert.deepEqual(replies.slice(0, 7).map((r) => r.type),
    [ERR_POLICY, ERR_UNKNOWN, ERR_INVALID, ERR_INVALID, ERR_INVALID, ERR_INVALID, ERR_INVALID]);
  assert.equal(Buffer.from(replies[0]!.data).toString(), 'volume sleepy is not ready');
  assert.ok(replies.every((r) => r.data.length <= 512), 'error messages stay short');
  assert.equal(actions[actions.length - 1]!.kind, 'transmission', 'the session survives every refusal');
});

test('EXPORT_NAME: 134-byte reply without NO_ZEROES, 10 with it; unknown or refused exports close', () => {
  const padded = feed(connected(), concat(clientFlags(1), option(1, text('disk0'))));
  assert.deepEqual(summary(padded), [`send:${'0000000004000000' + '0d6d' + '00'.repeat(124)}`, 'transmission:disk0:false:3437']);
  const plain = feed(connected(), concat(clientFlags(0), option(1, text(''))));
  assert.equal(summary(plain)[0], `send:${'0000000004000000' + '0d6d' + '00'.repeat(124)}`, 'old-style clients work too');
  const short = feed(connected(), concat(clientFlags(3), option(1, text('disk0'))));
  assert.equal(summary(short)[0], 'send:00000000040000000d6d');
  assert.deepEqual(summary(feed(connected(), concat(clientFlags(3), option(1, text('nope'))))), ['close']);
  assert.deepEqual(summary(feed(connected(), concat(clientFlags(3), option(1, text('sleepy'))))), ['close']);
});

test('ABORT is acknowledged, then the connection ends and ignores the rest', () => {
  const c = connected();
  const actions = feed(c, concat(clientFlags(3), option(2, text('ignored')), option(3)));
  assert.deepEqual(optionReplies(actions.slice(0, 1)).map((r) => [r.option, r.type, r.data.length]), [[2, ACK, 0]]);
  assert.deepEqual(summary(actions.slice(1)), ['disconnect']);
  assert.equal(c.ended, true);
});

test('meta contexts: LIST lists base:allocation for no query or base:, ignores other namespaces; SET needs structured replies', () => {
  const list = optionReplies(feed(connected(), concat(clientFlags(3),
    option(9, metaData('disk0', [])), option(9, metaData('disk0', ['base:'])), option(9, metaData('disk0', ['qemu:'])),
    option(9, metaData('nope', [])))));
  assert.deepEqual(list.map((r) => r.type), [META, ACK, META, ACK, ACK, ERR_UNKNOWN]);
  assert.equal(hex(list[0]!.data), '00000000' + hex(text('base:allocation')));

  const c = connected();
  const early = optionReplies(feed(c, concat(clientFlags(3), option(10, metaData('disk0', ['base:allocation'])))));
  assert.deepEqual(early.map((r) => r.type), [ERR_INVALID]);
  const set = optionReplies(feed(c, concat(option(8),
    option(10, metaData('disk0', ['qemu:dirty-bitmap:x', 'base:'])), // unknown namespace ignored, bare base: selects nothing
    option(10, concat(u32(5), text('disk0'), u32(0xffffffff))), // absurd query count
    option(10, metaData('sleepy', ['base:allocation'])))));
  assert.deepEqual(set.map((r) => r.type), [ACK, ACK, ERR_INVALID, ERR_POLICY]);
  // The failed SETs cleared the selection: BLOCK_STATUS is refused.
  const bs = feed(c, concat(option(7, infoData('disk0')), request(7, 1n, 0, 4096)));
  assert.deepEqual(summary(bs).slice(-1), [`invalid:${'0000000000000001'}:22`]);
});

test('the meta context selection is bound to the export: "" and its canonical name match, another export does not', () => {
  const viaDefault = feed(connected(), concat(clientFlags(3), option(8), option(10, metaData('', ['base:allocation'])),
    option(7, infoData('disk0')), request(7, 1n, 0, 512)));
  assert.match(summary(viaDefault).slice(-1)[0]!, /^block-status:/);
  const elsewhere = feed(connected(), concat(clientFlags(3), option(8), option(10, metaData('disk0', ['base:allocation'])),
    option(7, infoData('other')), request(7, 1n, 0, 512)));
  assert.deepEqual(summary(elsewhere).slice(-1), ['invalid:0000000000000001:22']);
});

// ---- TLS (STARTTLS, modes, allow-lists) ----

const ERR_TLS_REQD = 0x80000005;
const ERR_SHUTDOWN = 0x80000007;
const STARTTLS = 5;

const locked: ExportInfo = { name: 'locked', sizeBytes: MiB, readOnly: false, canFastZero: false, description: '', allowedClients: ['host-a', 'host-b'] };
const tlsDirectory: ExportDirectory = {
  list: () => [disk0, locked],
  lookup: (name) => (name === 'disk0' ? { kind: 'found', info: disk0 } : name === 'locked' ? { kind: 'found', info: locked } : { kind: 'unknown' }),
};

function tlsConnected(tls: 'off' | 'optional' | 'require'): NbdConnection {
  const c = new NbdConnection(tlsDirectory, { tls });
  drain(c);
  feed(c, clientFlags(3));
  return c;
}

/** STARTTLS, then the adapter's completed TLS handshake with these certificate names. */
function overTls(tls: 'optional' | 'require', names: string[] = []): NbdConnection {
  const c = tlsConnected(tls);
  const actions = feed(c, option(STARTTLS));
  assert.deepEqual(optionReplies(actions).map((r) => [r.option, r.type]), [[STARTTLS, ACK]]);
  assert.equal(actions[actions.length - 1]!.kind, 'starttls');
  c.tlsEstablished(names);
  assert.equal(c.tls, true);
  return c;
}

const replyTypes = (actions: ReturnType<typeof feed>): Array<[number, number]> => optionReplies(actions).map((r) => [r.option, r.type]);

test('TLS off: STARTTLS gets ERR_UNSUP and ERR_TLS_REQD is never sent', () => {
  const c = tlsConnected('off');
  const actions = feed(c, concat(option(STARTTLS), option(3), option(7, infoData('disk0'))));
  assert.deepEqual(replyTypes(actions).map(([, t]) => t).filter((t) => t >= 0x80000000), [ERR_UNSUP]);
  assert.equal(actions[actions.length - 1]!.kind, 'transmission');
});

test('TLS required: every option but STARTTLS and ABORT gets ERR_TLS_REQD before TLS; EXPORT_NAME closes', () => {
  const c = tlsConnected('require');
  const actions = feed(c, concat(option(8), option(3), option(6, infoData('disk0')), option(7, infoData('disk0')),
    option(9, metaData('disk0', [])), option(10, metaData('disk0', ['base:allocation'])), option(42, text('junk'))));
  assert.deepEqual(replyTypes(actions), [8, 3, 6, 7, 9, 10, 42].map((o) => [o, ERR_TLS_REQD]));
  assert.ok(!actions.some((a) => a.kind === 'transmission'));
  const named = tlsConnected('require');
  const closed = feed(named, option(1, text('disk0')));
  assert.deepEqual(closed.map((a) => a.kind), ['close']);
  assert.equal(named.ended, true);
  const aborted = tlsConnected('require');
  assert.deepEqual(replyTypes(feed(aborted, option(2))), [[2, ACK]], 'ABORT is answered');
});

test('TLS required: after STARTTLS and the TLS handshake the client negotiates afresh and is served', () => {
  const c = overTls('require');
  const actions = feed(c, concat(option(8), option(10, metaData('disk0', ['base:allocation'])), option(7, infoData('disk0', [3]))));
  assert.deepEqual(replyTypes(actions).map(([, t]) => t), [ACK, META, ACK, INFO, INFO, ACK]);
  const start = actions[actions.length - 1]!;
  assert.equal(start.kind, 'transmission');
  assert.equal((start as { structured: boolean }).structured, true);
});

test('STARTTLS forgets earlier negotiation: structured replies and meta contexts must be asked for again', () => {
  const c = tlsConnected('optional');
  feed(c, concat(option(8), option(10, metaData('disk0', ['base:allocation']))));
  feed(c, option(STARTTLS));
  c.tlsEstablished([]);
  const actions = feed(c, option(7, infoData('disk0')));
  const start = actions[actions.length - 1] as { kind: string; structured: boolean; flags: number };
  assert.equal(start.kind, 'transmission');
  assert.equal(start.structured, false, 'the pre-TLS STRUCTURED_REPLY no longer counts');
  assert.equal(start.flags & 0x0080, 0, 'no DF without structured replies');
});

test('STARTTLS: with data it is ERR_INVALID; a second one is ERR_INVALID; plain bytes pipelined after it close the connection', () => {
  const c = tlsConnected('optional');
  assert.deepEqual(replyTypes(feed(c, option(STARTTLS, text('x')))), [[STARTTLS, ERR_INVALID]]);
  const twice = overTls('optional');
  assert.deepEqual(replyTypes(feed(twice, option(STARTTLS))), [[STARTTLS, ERR_INVALID]]);
  // A client (or a man in the middle) that sends an option in clear right behind STARTTLS: those
  // bytes must never be taken as if they had come over TLS.
  const injected = tlsConnected('optional');
  const actions = feed(injected, concat(option(STARTTLS), option(7, infoData('disk0'))));
  assert.deepEqual(replyTypes(actions), [[STARTTLS, ACK]], 'nothing after STARTTLS is decoded before TLS');
  injected.tlsEstablished([]);
  assert.deepEqual(drain(injected).map((a) => a.kind), ['close']);
  assert.equal(injected.ended, true);
});

test('TLS optional: plain clients are served; an allow-listed volume asks them for TLS', () => {
  const c = tlsConnected('optional');
  const listed = feed(c, concat(option(3), option(6, infoData('locked'))));
  const replies = optionReplies(listed);
  assert.deepEqual(replies.filter((r) => r.type === SERVER).map((r) => new TextDecoder().decode(r.data.subarray(4))), ['disk0first'],
    'LIST hides volumes the client may not use');
  assert.equal(replies[replies.length - 1]!.type, ERR_TLS_REQD);
  assert.equal(feed(c, option(7, infoData('disk0'))).pop()!.kind, 'transmission');
});

test('allow-list: a certificate name on it is served; others get ERR_POLICY, an access-denied action, and EXPORT_NAME closes', () => {
  const allowed = overTls('require', ['host-b', 'host-b.example.com']);
  assert.equal(feed(allowed, option(7, infoData('locked'))).pop()!.kind, 'transmission');

  const stranger = overTls('require', ['host-c']);
  const actions = feed(stranger, concat(option(8), option(6, infoData('locked')), option(10, metaData('locked', ['base:allocation']))));
  assert.deepEqual(replyTypes(actions), [[8, ACK], [6, ERR_POLICY], [10, ERR_POLICY]]);
  assert.deepEqual(actions.filter((a) => a.kind === 'access-denied'), [
    { kind: 'access-denied', export: 'locked', clientNames: ['host-c'] },
    { kind: 'access-denied', export: 'locked', clientNames: ['host-c'] },
  ]);
  assert.equal(feed(stranger, option(7, infoData('disk0'))).pop()!.kind, 'transmission', 'volumes without a list stay open to it');

  const byName = overTls('require', []);
  const closing = feed(byName, option(1, text('locked')));
  assert.deepEqual(closing.map((a) => a.kind), ['access-denied', 'close']);
});

test('a refusing server answers every option but ABORT with ERR_SHUTDOWN and its reason; EXPORT_NAME closes', () => {
  const c = new NbdConnection(tlsDirectory, { tls: 'off', refusal: 'server busy' });
  drain(c);
  const actions = feed(c, concat(clientFlags(3), option(8), option(7, infoData('disk0'))));
  const replies = optionReplies(actions);
  assert.deepEqual(replies.map((r) => r.type), [ERR_SHUTDOWN, ERR_SHUTDOWN]);
  assert.equal(new TextDecoder().decode(replies[1]!.data), 'server busy');
  assert.deepEqual(replyTypes(feed(c, option(2))), [[2, ACK]]);
  const named = new NbdConnection(tlsDirectory, { tls: 'off', refusal: 'server busy' });
  assert.deepEqual(feed(named, concat(clientFlags(3), option(1, text('disk0')))).map((a) => a.kind), ['send', 'close']);
});

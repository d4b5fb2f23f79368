// Every fuzz finding, pinned as its minimal input (docs/design/fuzzing.md lists them): the input
// that broke a property, and what must happen to it now.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, isTidemarkError } from '../../src/core/errors.js';
import { decodeMessage, encodeMessage, MAX_HEADER_DEPTH } from '../../src/core/replication/peer-messages.js';
import { decodeReply, decodeRequest } from '../../src/core/replication/peer-protocol.js';
import { startApiServer } from '../../src/adapters/http/api-server.js';
import type { ApiBackend } from '../../src/adapters/http/types.js';
import { TidemarkError } from '../../src/core/errors.js';

/** A request message whose header is `text` (type 0 = request, id 1, no segments). */
function requestWithHeader(text: string): Uint8Array {
  const header = new TextEncoder().encode(text);
  const out = new Uint8Array(9 + header.length + 4);
  const view = new DataView(out.buffer);
  view.setUint8(0, 0);
  view.setUint32(1, 1);
  view.setUint32(5, header.length);
  out.set(header, 9);
  view.setUint32(9 + header.length, 0);
  return out;
}
const nested = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;

// Finding 1 (peer-protocol-schemas, seed 1, shrunk to op group.locate, depth 4100): JSON.parse builds
// a header of any depth and the operation's schema ignores unknown fields, so the request was
// accepted; the first thing to serialize it again (a reply, a log line) threw RangeError.
test('fuzz finding 1: a peer header nested 4100 deep is refused by the codec with TM_ERR_PROTOCOL', () => {
  const bytes = requestWithHeader(`{"op":"group.locate","group":"g","pair":"p","x":${nested(4100)}}`);
  assert.throws(() => decodeMessage(bytes), (e: unknown) => isTidemarkError(e, ErrorCode.Protocol) && /nests deeper than 32/.test(e.message));
});

test('the depth limit is exact, and brackets inside strings do not count', () => {
  // The header object itself is one level: x's arrays may nest MAX_HEADER_DEPTH - 1 deep.
  const deepest = decodeMessage(requestWithHeader(`{"op":"group.locate","group":"g","x":${nested(MAX_HEADER_DEPTH - 1)}}`));
  assert.equal(decodeRequest(deepest.header).ok, true);
  assert.doesNotThrow(() => encodeMessage(deepest), 'what is accepted can be sent on');
  assert.throws(() => decodeMessage(requestWithHeader(`{"op":"group.locate","group":"g","x":${nested(MAX_HEADER_DEPTH)}}`)),
    (e: unknown) => isTidemarkError(e, ErrorCode.Protocol));
  const quoted = decodeMessage(requestWithHeader(`{"op":"group.locate","group":"${'[{\\"'.repeat(100)}"}`));
  assert.equal((quoted.header as { group: string }).group, '[{"'.repeat(100));
});

test('a reply nested too deep (a peer\'s group view) never reaches the API that would serialize it', () => {
  const view = `{"ok":true,"view":{"members":${nested(5000)}}}`;
  const out = requestWithHeader(view);
  out[0] = 1; // response
  assert.throws(() => decodeMessage(out), (e: unknown) => isTidemarkError(e, ErrorCode.Protocol));
  // The same view at a sane depth passes the reply schema (ApiView accepts any object).
  assert.equal(decodeReply('group.show', { view: { members: [[[]]] } }).ok, true);
});

// Finding 2 (http-server, seed 1, shrunk to GET /v1/pairs/%ZZ with the token): a URL fastify cannot
// decode, or a path parameter over its length limit, was answered by fastify itself — its own error
// shape without a stable code ({"code":"FST_ERR_BAD_URL"}, 414 for the long one) and before the
// access check, so without a token too.
test('fuzz finding 2: undecodable and over-long URLs get the API\'s error shape, after the token check', async () => {
  const refuse = (): never => { throw new TidemarkError(ErrorCode.NotFound, 'backend reached'); };
  const part = new Proxy({}, { get: () => refuse });
  const backend = new Proxy({}, { get: (_t, key) => (['clones', 'replication', 'groups', 'observe', 'cascades'].includes(String(key)) ? part : refuse) }) as ApiBackend;
  const server = await startApiServer({
    backend, logger: { info() {}, warn() {}, debug() {}, error() {} }, host: '127.0.0.1', port: 0, version: 'test',
    access: { tokens: [{ token: 'the-token', scope: 'admin' }], hosts: new Set() },
  });
  try {
    const base = `http://127.0.0.1:${server.address.port}`;
    const auth = { authorization: 'Bearer the-token' };
    for (const path of ['/v1/pairs/%ZZ', `/v1/volumes/${'x'.repeat(300)}`]) {
      const withToken = await fetch(base + path, { headers: auth });
      const body = await withToken.json() as { error: { code: string } };
      assert.equal(withToken.status, 400, path);
      assert.equal(body.error.code, ErrorCode.InvalidArgument, path);
      const without = await fetch(base + path);
      assert.equal(without.status, 401, `${path} without a token`);
      assert.equal((await without.json() as { error: { code: string } }).error.code, ErrorCode.Unauthorized);
    }
  } finally {
    await server.close();
  }
});

// Frame protection after the handshake: every frame on an authenticated connection is sealed with
// AES-256-GCM (through the injected LinkCrypto), one key per direction and connection.
//
// Keys: HKDF-SHA256 (RFC 5869, built on the injected HMAC) with the shared secret as input keying
// material, both HELLO nonces as salt, and as info a label, the direction and both HELLOs as sent
// (names, incarnations, windows, versions). Both nonces are fresh random bytes per connection, so
// every connection of every session and incarnation gets new keys, even if one side's random
// source repeated; and a HELLO altered in flight (the proofs do not cover windows and versions)
// gives the two sides different keys, so the first sealed frame fails.
//
// Nonces: 4 zero bytes ‖ the direction's frame counter (u64, from 0 per connection), never sent
// as a nonce and never reused under one key: each key lives for one connection and the counter
// only grows. A retransmission on a new connection is sealed again under that connection's key
// and counter. The receiver expects exactly the next counter, so a replayed, reordered, dropped or
// injected frame fails. The header's last field carries the counter's low 32 bits (where clear
// frames carry their CRC) only so the rejection can say which of these it looks like.
//
// Sealed frame: the 24-byte header (authenticated, not encrypted: type, flags, length, seq stay
// readable, as in a TLS record header) and then ciphertext ‖ 16-byte tag; `length` counts both.
import { assert } from '../lib/assert.js';
import { setU64 } from '../lib/u64.js';
import {
  FRAME_HEADER_BYTES, FrameType, LINK_PROTOCOL_VERSION, TAG_BYTES, writeFrameHeader, type EncodedFrame, type Frame,
  type SealedFrameOpener,
} from './frame.js';
import { encodeHello, type Hello } from './handshake.js';
import type { LinkCrypto } from './types.js';

export const KEY_BYTES = 32;
export { TAG_BYTES };
export const AEAD_NONCE_BYTES = 12;
const LABEL = new TextEncoder().encode('tidemark-link-keys-v2');

/** HKDF-SHA256 (extract, then expand) over the injected HMAC. */
export function hkdfSha256(crypto: Pick<LinkCrypto, 'hmacSha256'>, salt: Uint8Array, ikm: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  assert(length > 0 && length <= 255 * 32, `hkdf length ${length}`);
  const prk = crypto.hmacSha256(salt, ikm);
  const out = new Uint8Array(length);
  let previous: Uint8Array = new Uint8Array(0);
  for (let i = 1, at = 0; at < length; i++) {
    previous = crypto.hmacSha256(prk, concat([previous, info, Uint8Array.of(i)]));
    out.set(previous.subarray(0, Math.min(previous.length, length - at)), at);
    at += previous.length;
  }
  return out;
}

export interface LinkKeys {
  readonly dialerToAcceptor: Uint8Array;
  readonly acceptorToDialer: Uint8Array;
}

/** Both directions' keys of one connection, from what both sides know after the HELLOs. */
export function deriveLinkKeys(crypto: Pick<LinkCrypto, 'hmacSha256'>, secret: Uint8Array, hellos: { readonly dialer: Hello; readonly acceptor: Hello }): LinkKeys {
  const salt = concat([hellos.dialer.nonce, hellos.acceptor.nonce]);
  const dialerHello = encodeHello(hellos.dialer);
  const acceptorHello = encodeHello(hellos.acceptor);
  const info = (direction: number): Uint8Array => concat([
    LABEL, Uint8Array.of(direction), u16(dialerHello.length), dialerHello, u16(acceptorHello.length), acceptorHello,
  ]);
  return {
    dialerToAcceptor: hkdfSha256(crypto, salt, secret, info(1), KEY_BYTES),
    acceptorToDialer: hkdfSha256(crypto, salt, secret, info(2), KEY_BYTES),
  };
}

function aeadNonce(counter: number): Uint8Array {
  const nonce = new Uint8Array(AEAD_NONCE_BYTES);
  const view = new DataView(nonce.buffer);
  setU64(view, 4, counter);
  return nonce;
}

/** Seals the frames one side sends on one connection. */
export class FrameSealer {
  private counter = 0;

  constructor(private readonly crypto: Pick<LinkCrypto, 'aeadSeal'>, private readonly key: Uint8Array) {
    assert(key.length === KEY_BYTES, 'sealing key length');
  }

  seal(type: FrameType, flags: number, seq: number, payload: Uint8Array): EncodedFrame {
    // 2^53 frames would take centuries at any rate a link reaches; the assert keeps the nonce unique regardless.
    assert(Number.isSafeInteger(this.counter + 1), 'frame counter exhausted');
    const counter = this.counter++;
    const header = new Uint8Array(FRAME_HEADER_BYTES);
    writeFrameHeader(header, LINK_PROTOCOL_VERSION, type, flags, payload.length + TAG_BYTES, seq, counter >>> 0);
    const sealed = this.crypto.aeadSeal(this.key, aeadNonce(counter), header, payload);
    assert(sealed.length === payload.length + TAG_BYTES, 'aeadSeal output length');
    return { header, payload: sealed };
  }
}

export type OpenResult = { readonly ok: true; readonly frame: Frame } | { readonly ok: false; readonly reason: string };

/** Opens the frames one side receives on one connection, strictly in the order they were sealed. */
export class FrameOpener implements SealedFrameOpener {
  private counter = 0;

  constructor(private readonly crypto: Pick<LinkCrypto, 'aeadOpen'>, private readonly key: Uint8Array) {
    assert(key.length === KEY_BYTES, 'opening key length');
  }

  /** `header`: the 24 header bytes as received; `check`: its last field; `body`: ciphertext ‖ tag. */
  open(header: Uint8Array, type: FrameType, flags: number, seq: number, check: number, body: Uint8Array): OpenResult {
    const expected = this.counter >>> 0;
    if (check !== expected) {
      // Distance modulo 2^32: a frame from the past is a replay, one from the future means some were skipped.
      const behind = ((expected - check) >>> 0) < 0x8000_0000;
      return {
        ok: false,
        reason: behind
          ? `replayed frame rejected: frame counter ${check}, expected ${expected}`
          : `frame out of order rejected: frame counter ${check}, expected ${expected} (frames dropped, reordered or injected)`,
      };
    }
    if (body.length < TAG_BYTES) return { ok: false, reason: `sealed frame of ${body.length} bytes is shorter than its tag` };
    const payload = this.crypto.aeadOpen(this.key, aeadNonce(this.counter), header, body);
    if (payload === undefined) {
      return { ok: false, reason: `frame authentication failed (frame counter ${expected}): altered in flight or not sealed with this connection's keys` };
    }
    this.counter++;
    return { ok: true, frame: { type, flags, seq, payload } };
  }
}

function u16(n: number): Uint8Array {
  assert(n >= 0 && n <= 0xffff, 'u16');
  return Uint8Array.of(n >>> 8, n & 0xff);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

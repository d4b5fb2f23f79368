// The real LinkCrypto: node:crypto's HMAC-SHA256 and CSPRNG, and AES-256-GCM from the native addon
// (native/tidemark_aead.c: the OpenSSL Node runs on, AES-NI where the CPU has it, one context kept
// and re-keyed per frame — node:crypto's new cipher object per frame was a fifth of the link's CPU).
// The simulator and unit tests use the same AEAD: it is deterministic for a given key and nonce, so
// only the random bytes need seeding there.
import { createHmac, randomBytes } from 'node:crypto';
import type { LinkCrypto } from '../../ports/crypto.js';
import { nativeFs } from '../fs/native.js';

/** The addon answers with Buffers; callers get plain Uint8Arrays, whose slice() copies (a Buffer's is a view). */
const plain = (b: Uint8Array): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.length);

export function aes256GcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  return plain(nativeFs.aes256GcmSeal(key, nonce, aad, plaintext));
}

export function aes256GcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
  const opened = nativeFs.aes256GcmOpen(key, nonce, aad, sealed);
  return opened && plain(opened);
}

export const nodeLinkCrypto: LinkCrypto = {
  hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
  randomBytes: (n) => new Uint8Array(randomBytes(n)),
  aeadSeal: aes256GcmSeal,
  aeadOpen: aes256GcmOpen,
};

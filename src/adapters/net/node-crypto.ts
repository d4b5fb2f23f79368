// The real LinkCrypto: node:crypto's HMAC-SHA256, CSPRNG and AES-256-GCM (OpenSSL, AES-NI where
// the CPU has it). The simulator and unit tests use the same AEAD: it is deterministic for a given
// key and nonce, so only the random bytes need seeding there.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import type { LinkCrypto } from '../../ports/crypto.js';

const TAG_BYTES = 16;

export function aes256GcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const rest = cipher.final(); // empty for GCM, but part of the contract
  const tag = cipher.getAuthTag();
  const out = new Uint8Array(body.length + rest.length + TAG_BYTES);
  out.set(body, 0);
  out.set(rest, body.length);
  out.set(tag, body.length + rest.length);
  return out;
}

export function aes256GcmOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
  if (sealed.length < TAG_BYTES) return undefined;
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    const rest = decipher.final(); // throws when the tag does not verify
    if (rest.length === 0) return new Uint8Array(body.buffer, body.byteOffset, body.length);
    const out = new Uint8Array(body.length + rest.length);
    out.set(body, 0);
    out.set(rest, body.length);
    return out;
  } catch {
    return undefined;
  }
}

export const nodeLinkCrypto: LinkCrypto = {
  hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
  randomBytes: (n) => new Uint8Array(randomBytes(n)),
  aeadSeal: aes256GcmSeal,
  aeadOpen: aes256GcmOpen,
};

// Cryptography the link core needs, injected so src/core stays pure and the simulator deterministic.

export interface LinkCrypto {
  /** HMAC-SHA256(key, data): 32 bytes. */
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** n unpredictable bytes (nonces, session incarnations). The simulator supplies seeded bytes. */
  randomBytes(n: number): Uint8Array;
  /**
   * AES-256-GCM encryption of `plaintext` under a 32-byte key and a 12-byte nonce, authenticating
   * `aad` too: the ciphertext followed by the 16-byte tag. The caller never reuses a (key, nonce).
   */
  aeadSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** The inverse of aeadSeal: the plaintext, or undefined when the tag does not verify. */
  aeadOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | undefined;
}

// The core declares the same shape itself (it may import only src/core); keep the two in step.
import type { LinkCrypto as CoreLinkCrypto } from '../core/link/types.js';
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _sameShape: Same<LinkCrypto, CoreLinkCrypto> = true;
void _sameShape;

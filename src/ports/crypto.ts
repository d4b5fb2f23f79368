// Cryptography the link core needs, injected so src/core stays pure and the simulator deterministic.

export interface LinkCrypto {
  /** HMAC-SHA256(key, data): 32 bytes. */
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** n unpredictable bytes (nonces, session incarnations). The simulator supplies seeded bytes. */
  randomBytes(n: number): Uint8Array;
}

// The core declares the same shape itself (it may import only src/core); keep the two in step.
import type { LinkCrypto as CoreLinkCrypto } from '../core/link/types.js';
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _sameShape: Same<LinkCrypto, CoreLinkCrypto> = true;
void _sameShape;

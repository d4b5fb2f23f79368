// The real LinkCrypto: node:crypto's HMAC-SHA256 and CSPRNG.
import { createHmac, randomBytes } from 'node:crypto';
import type { LinkCrypto } from '../../ports/crypto.js';

export const nodeLinkCrypto: LinkCrypto = {
  hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
  randomBytes: (n) => new Uint8Array(randomBytes(n)),
};

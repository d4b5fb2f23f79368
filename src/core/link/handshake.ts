// The link handshake's payloads and the mutual proof of the shared secret.
//
//   dialer   → HELLO {window, nonce, incarnation, name, peer protocol version}
//   acceptor → HELLO {window, nonce, incarnation, name, peer protocol version}   (only once it knows
//              the dialer's name and speaks the dialer's peer protocol version)
//   dialer   → AUTH  proof(role=dialer)
//   acceptor → AUTH  proof(role=acceptor)                 (only after the dialer's proof verified)
//
// proof(role) = HMAC-SHA256(secret, DOMAIN ‖ role ‖ dialer nonce ‖ acceptor nonce ‖ dialer name ‖
// acceptor name ‖ dialer incarnation ‖ acceptor incarnation). Each side's nonce makes the other
// side's proof fresh (no replay), the role byte stops a proof being reflected back, and covering
// the names and incarnations binds the session identity to the secret.
import type { LinkCrypto } from './types.js';

export const NONCE_BYTES = 32;
export const INCARNATION_BYTES = 8;
export const PROOF_BYTES = 32;
export const MAX_NAME_BYTES = 64;
export const MAX_ERROR_MESSAGE_BYTES = 512;
/** The smallest receive window a peer may announce. */
export const MIN_WINDOW_BYTES = 64 * 1024;
const DOMAIN = new TextEncoder().encode('tidemark-link-auth-v1');
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export type Role = 'dialer' | 'acceptor';

export interface Hello {
  readonly windowBytes: number;
  readonly nonce: Uint8Array;
  readonly incarnation: Uint8Array;
  readonly name: string;
  /**
   * The version of the messages the arrays exchange over the link (core/replication/peer-protocol.ts
   * PEER_PROTOCOL_VERSION). Arrays speaking different versions refuse each other at the handshake.
   */
  readonly protocolVersion: number;
}

/** What a HELLO without a version field (the layout before the field was added) speaks. */
export const UNVERSIONED_PROTOCOL = 1;
const VERSION_BYTES = 2;

export function isValidArrayName(name: string): boolean {
  return NAME_PATTERN.test(name) && new TextEncoder().encode(name).length <= MAX_NAME_BYTES;
}

export function encodeHello(hello: Hello): Uint8Array {
  const name = new TextEncoder().encode(hello.name);
  const fixed = 4 + NONCE_BYTES + INCARNATION_BYTES + 1;
  const out = new Uint8Array(fixed + name.length + VERSION_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, hello.windowBytes);
  out.set(hello.nonce, 4);
  out.set(hello.incarnation, 4 + NONCE_BYTES);
  out[fixed - 1] = name.length;
  out.set(name, fixed);
  // After the name, so the layout before versions is this one without its last two bytes.
  view.setUint16(fixed + name.length, hello.protocolVersion);
  return out;
}

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

export function decodeHello(payload: Uint8Array): Parsed<Hello> {
  const fixed = 4 + NONCE_BYTES + INCARNATION_BYTES + 1;
  if (payload.length < fixed + 1) return { ok: false, reason: `HELLO too short (${payload.length} bytes)` };
  const nameLength = payload[fixed - 1]!;
  const versioned = payload.length === fixed + nameLength + VERSION_BYTES;
  if (!versioned && payload.length !== fixed + nameLength) return { ok: false, reason: 'HELLO length does not match its name length' };
  const windowBytes = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
  if (windowBytes < MIN_WINDOW_BYTES) return { ok: false, reason: `HELLO window ${windowBytes} below ${MIN_WINDOW_BYTES}` };
  let name: string;
  try {
    name = new TextDecoder('utf-8', { fatal: true }).decode(payload.subarray(fixed, fixed + nameLength));
  } catch {
    return { ok: false, reason: 'HELLO name is not UTF-8' };
  }
  if (!isValidArrayName(name)) return { ok: false, reason: `HELLO name ${JSON.stringify(name)} is not a valid array name` };
  return {
    ok: true,
    value: {
      windowBytes,
      nonce: payload.slice(4, 4 + NONCE_BYTES),
      incarnation: payload.slice(4 + NONCE_BYTES, 4 + NONCE_BYTES + INCARNATION_BYTES),
      name,
      protocolVersion: versioned ? new DataView(payload.buffer, payload.byteOffset + fixed + nameLength, VERSION_BYTES).getUint16(0) : UNVERSIONED_PROTOCOL,
    },
  };
}

export interface ProofInput {
  readonly dialer: Hello;
  readonly acceptor: Hello;
}

export function computeProof(crypto: Pick<LinkCrypto, 'hmacSha256'>, secret: Uint8Array, role: Role, input: ProofInput): Uint8Array {
  const enc = new TextEncoder();
  const dialerName = enc.encode(input.dialer.name);
  const acceptorName = enc.encode(input.acceptor.name);
  const parts: Uint8Array[] = [
    DOMAIN, Uint8Array.of(role === 'dialer' ? 1 : 2),
    input.dialer.nonce, input.acceptor.nonce,
    Uint8Array.of(dialerName.length), dialerName, Uint8Array.of(acceptorName.length), acceptorName,
    input.dialer.incarnation, input.acceptor.incarnation,
  ];
  const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { data.set(p, at); at += p.length; }
  const mac = crypto.hmacSha256(secret, data);
  if (mac.length !== PROOF_BYTES) throw new RangeError(`hmacSha256 returned ${mac.length} bytes`);
  return mac;
}

/** Compares without an early exit, so timing does not reveal how much of a forged proof matched. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export const LinkErrorCode = {
  AuthFailed: 1,
  UnknownPeer: 2,
  VersionMismatch: 3,
  Protocol: 4,
  WrongDialer: 5,
} as const;
export type LinkErrorCode = (typeof LinkErrorCode)[keyof typeof LinkErrorCode];

export function encodeError(code: LinkErrorCode, message: string): Uint8Array {
  let text = new TextEncoder().encode(message);
  if (text.length > MAX_ERROR_MESSAGE_BYTES) text = text.subarray(0, MAX_ERROR_MESSAGE_BYTES);
  const out = new Uint8Array(2 + text.length);
  new DataView(out.buffer).setUint16(0, code);
  out.set(text, 2);
  return out;
}

export function decodeError(payload: Uint8Array): { readonly code: number; readonly message: string } {
  if (payload.length < 2 || payload.length > 2 + MAX_ERROR_MESSAGE_BYTES) return { code: 0, message: 'malformed ERROR frame' };
  const code = new DataView(payload.buffer, payload.byteOffset, 2).getUint16(0);
  const message = new TextDecoder('utf-8', { fatal: false }).decode(payload.subarray(2)).replace(/[^\x20-\x7e]/g, '?');
  return { code, message };
}

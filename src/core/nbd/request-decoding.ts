// Validation of one 28-byte transmission request header, done once here so the executor trusts what
// it gets (ARCHITECTURE rule 6). Errno choices follow the digest: §4 and §6 rule 4.
import {
  Cmd, CmdFlag, Errno, MAX_PAYLOAD_BYTES, REQUEST_MAGIC,
} from './constants.js';
import { getU64 } from '../lib/u64.js';

export const REQUEST_HEADER_BYTES = 28;

/** The client's opaque 8-byte handle, echoed unchanged in the reply. */
export type Cookie = Uint8Array;

export type NbdCommand =
  | { readonly type: 'read'; readonly cookie: Cookie; readonly offset: number; readonly length: number }
  | {
    readonly type: 'write'; readonly cookie: Cookie; readonly offset: number; readonly data: Uint8Array; readonly fua: boolean;
    /**
     * One piece of a WRITE longer than MAX_PAYLOAD_BYTES, streamed as it arrives: the pieces of one
     * stream share the cookie, and the reply goes out once the last one and all before it are done.
     */
    readonly piece?: { readonly stream: number; readonly last: boolean };
  }
  | { readonly type: 'flush'; readonly cookie: Cookie }
  | { readonly type: 'trim'; readonly cookie: Cookie; readonly offset: number; readonly length: number; readonly fua: boolean }
  | {
    readonly type: 'write-zeroes'; readonly cookie: Cookie; readonly offset: number; readonly length: number;
    readonly fua: boolean; readonly noHole: boolean; readonly fastZero: boolean;
  }
  | { readonly type: 'cache'; readonly cookie: Cookie; readonly offset: number; readonly length: number }
  | {
    readonly type: 'block-status'; readonly cookie: Cookie; readonly offset: number; readonly length: number;
    readonly reqOne: boolean; readonly contextId: number;
  }
  /** A request that failed validation: answer with this errno (any WRITE payload has been consumed). */
  | { readonly type: 'invalid'; readonly cookie: Cookie; readonly errno: Errno; readonly message: string };

/** What the connection negotiated, as far as validating requests is concerned. */
export interface TransmissionContext {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly structured: boolean;
  readonly canFastZero: boolean;
  /** Context id of base:allocation when SET_META_CONTEXT selected it for this export. */
  readonly allocationContextId: number | undefined;
  /** Longest READ/WRITE accepted: MAX_PAYLOAD_BYTES if the client negotiated block sizes, else the export size. */
  readonly maxPayloadBytes: number;
}

export type DecodedRequest =
  | { readonly kind: 'command'; readonly command: NbdCommand }
  /** A valid WRITE: `length` payload bytes follow and become the command's data. */
  | { readonly kind: 'write'; readonly cookie: Cookie; readonly offset: number; readonly length: number; readonly fua: boolean }
  /** A WRITE to refuse: its `length` payload bytes follow and are discarded, then the error is sent. */
  | { readonly kind: 'refused-write'; readonly cookie: Cookie; readonly length: number; readonly errno: Errno; readonly message: string }
  | { readonly kind: 'disconnect' }
  /** A protocol violation: close the connection. */
  | { readonly kind: 'fatal'; readonly reason: string };

const KNOWN_FLAGS = CmdFlag.Fua | CmdFlag.NoHole | CmdFlag.Df | CmdFlag.ReqOne | CmdFlag.FastZero;

/** FUA is tolerated on every command (clients set it on reads too); the rest are per command. */
const flagsAllowed = (flags: number, allowed: number): boolean => (flags & ~(allowed | CmdFlag.Fua)) === 0 && (flags & ~KNOWN_FLAGS) === 0;

const invalidRequest = (cookie: Cookie, errno: Errno, message: string): DecodedRequest =>
  ({ kind: 'command', command: { type: 'invalid', cookie, errno, message } });

const refusedWrite = (cookie: Cookie, length: number, errno: Errno, message: string): DecodedRequest =>
  ({ kind: 'refused-write', cookie, length, errno, message });

/** Decodes `header` (exactly 28 bytes). */
export function decodeRequest(header: Uint8Array, ctx: TransmissionContext): DecodedRequest {
  const view = new DataView(header.buffer, header.byteOffset, REQUEST_HEADER_BYTES);
  if (view.getUint32(0) !== REQUEST_MAGIC) return { kind: 'fatal', reason: 'bad request magic' };
  const flags = view.getUint16(4);
  const type = view.getUint16(6);
  // A copy byte by byte: the header may be a view into a socket's Buffer, whose subarray() and
  // slice() look up a species constructor on every call (this runs for every request).
  const cookie = new Uint8Array(8);
  for (let i = 0; i < 8; i++) cookie[i] = header[8 + i]!;
  const start = getU64(view, 16);
  const length = view.getUint32(24);
  // Offsets from 2^53 on (-1 here) lie past every export. Below, offset + length is exact up to
  // 2^53 and rounds to at least 2^53 beyond it: past the export either way.
  const inside = start >= 0 && start + length <= ctx.sizeBytes;
  const offset = inside ? start : -1;
  const fua = (flags & CmdFlag.Fua) !== 0;

  switch (type) {
    case Cmd.Write: {
      // Longer than the export and than any payload we accept: it can never succeed, and the spec
      // allows a hard disconnect rather than reading (up to 4 GiB of) it.
      if (length > Math.max(ctx.sizeBytes, MAX_PAYLOAD_BYTES)) return { kind: 'fatal', reason: `write of ${length} bytes exceeds the export` };
      if (!flagsAllowed(flags, 0)) return refusedWrite(cookie, length, Errno.EINVAL, 'invalid flags for WRITE');
      if (ctx.readOnly) return refusedWrite(cookie, length, Errno.EPERM, 'export is read-only');
      if (!inside) return refusedWrite(cookie, length, Errno.ENOSPC, 'write past the end of the export');
      // Over the block size the client agreed to: the payload is dropped as it arrives (a refused
      // write never occupies memory), then the error goes out.
      if (length > ctx.maxPayloadBytes) return refusedWrite(cookie, length, Errno.EINVAL, `write of ${length} bytes exceeds the negotiated ${ctx.maxPayloadBytes}`);
      return { kind: 'write', cookie, offset, length, fua };
    }
    case Cmd.Read:
      if (!flagsAllowed(flags, ctx.structured ? CmdFlag.Df : 0)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for READ');
      if (!inside) return invalidRequest(cookie, Errno.EINVAL, 'read past the end of the export');
      if (length > ctx.maxPayloadBytes) return invalidRequest(cookie, Errno.EINVAL, `read of ${length} bytes exceeds the negotiated ${ctx.maxPayloadBytes}`);
      // DF asks for one data chunk; longer than our chunk limit it cannot be honoured (the spec's EOVERFLOW).
      if ((flags & CmdFlag.Df) !== 0 && length > MAX_PAYLOAD_BYTES) return invalidRequest(cookie, Errno.EOVERFLOW, `DF read of ${length} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
      return { kind: 'command', command: { type: 'read', cookie, offset, length } };
    case Cmd.Disc:
      return { kind: 'disconnect' };
    case Cmd.Flush:
      if (!flagsAllowed(flags, 0)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for FLUSH');
      return { kind: 'command', command: { type: 'flush', cookie } };
    case Cmd.Trim:
      if (!flagsAllowed(flags, 0)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for TRIM');
      if (ctx.readOnly) return invalidRequest(cookie, Errno.EPERM, 'export is read-only');
      if (!inside) return invalidRequest(cookie, Errno.EINVAL, 'trim past the end of the export');
      return { kind: 'command', command: { type: 'trim', cookie, offset, length, fua } };
    case Cmd.WriteZeroes: {
      if (!flagsAllowed(flags, CmdFlag.NoHole | CmdFlag.FastZero)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for WRITE_ZEROES');
      const fastZero = (flags & CmdFlag.FastZero) !== 0;
      if (fastZero && !ctx.canFastZero) return invalidRequest(cookie, Errno.EINVAL, 'FAST_ZERO was not advertised');
      if (ctx.readOnly) return invalidRequest(cookie, Errno.EPERM, 'export is read-only');
      if (!inside) return invalidRequest(cookie, Errno.ENOSPC, 'write past the end of the export');
      const noHole = (flags & CmdFlag.NoHole) !== 0;
      return { kind: 'command', command: { type: 'write-zeroes', cookie, offset, length, fua, noHole, fastZero } };
    }
    case Cmd.Cache:
      if (!flagsAllowed(flags, 0)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for CACHE');
      if (!inside) return invalidRequest(cookie, Errno.EINVAL, 'cache past the end of the export');
      return { kind: 'command', command: { type: 'cache', cookie, offset, length } };
    case Cmd.BlockStatus: {
      if (!flagsAllowed(flags, CmdFlag.ReqOne)) return invalidRequest(cookie, Errno.EINVAL, 'invalid flags for BLOCK_STATUS');
      const contextId = ctx.allocationContextId;
      if (!ctx.structured || contextId === undefined) return invalidRequest(cookie, Errno.EINVAL, 'no metadata context was selected');
      if (!inside) return invalidRequest(cookie, Errno.EINVAL, 'block status past the end of the export');
      if (length === 0) return invalidRequest(cookie, Errno.EINVAL, 'block status of zero bytes');
      return { kind: 'command', command: { type: 'block-status', cookie, offset, length, reqOne: (flags & CmdFlag.ReqOne) !== 0, contextId } };
    }
    default:
      return invalidRequest(cookie, Errno.EINVAL, `unknown command ${type}`);
  }
}

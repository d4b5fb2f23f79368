// Requests and responses between arrays over a peer transport. A request names an operation of the
// peer protocol (core/replication/peer-protocol.ts); its header is validated there before any
// handler runs, so handlers take typed input. The handler runs synchronously on delivery (so data
// applies begin in link order) and its promise's result is sent back; a reply is validated against
// its operation's reply schema before the requester sees it. A request whose peer goes away fails
// with TM_ERR_LINK_DOWN.
//
// What a peer may send that is wrong, and what it gets:
// - an unknown operation: an error reply TM_ERR_UNSUPPORTED, one log line;
// - a header that does not match its operation (or is not JSON, or the segments are truncated,
//   as long as the message type and id are readable): an error reply TM_ERR_PROTOCOL, one log line;
// - a handler that throws synchronously: an error reply with its code, one log line;
// - anything too short to carry an id, or a bad response: one log line, dropped (no one to answer).
// None of these reaches a handler (or the event loop) or changes any state.
import { ErrorCode, TidemarkError, isTidemarkError } from '../../core/errors.js';
import { decodeMessage, encodeMessage, peekRequestId, type MessageAllocator, type PeerMessage, type Segment } from '../../core/replication/peer-messages.js';
import {
  decodeReply, decodeRequest, type PeerOp, type PeerRequest, type ReplyOf, type RequestOf,
} from '../../core/replication/peer-protocol.js';
import type { PeerTransport } from '../../ports/peer-transport.js';
import type { Timers } from '../../ports/timers.js';
import { REAL_TIMERS } from '../real-timers.js';
import { randomBytes } from 'node:crypto';

export interface RpcReply<Op extends PeerOp = PeerOp> {
  readonly header: ReplyOf<Op>;
  readonly segments: readonly Segment[];
}

export type RpcHandler<Op extends PeerOp> = (peer: string, request: RequestOf<Op>, segments: readonly Segment[]) => Promise<RpcReply<Op>>;

type AnyHandler = (peer: string, request: PeerRequest, segments: readonly Segment[]) => Promise<{ readonly header: object; readonly segments: readonly Segment[] }>;

interface Pending {
  readonly peer: string;
  readonly resolve: (reply: { header: Readonly<Record<string, unknown>>; segments: readonly Segment[] }) => void;
  readonly reject: (error: unknown) => void;
  readonly cancelTimer: () => void;
}

const MAX_REQUEST_ID = 0xffff_ffff;

/**
 * Message memory not zeroed first (encodeMessage writes every byte): a sync pair's batches are
 * nearly all data, and zeroing them first was a percent of R1. A plain Uint8Array view: a Buffer's
 * slice() would be a view where the codecs expect a copy.
 */
const unzeroed: MessageAllocator = (bytes) => {
  const b = Buffer.allocUnsafe(bytes);
  return new Uint8Array(b.buffer, b.byteOffset, bytes);
};

export class PeerRpc {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<PeerOp, AnyHandler>();
  private closed = false;

  constructor(
    private readonly transport: PeerTransport,
    private readonly onError: (error: unknown, context: Record<string, unknown>) => void,
    private readonly timers: Timers = REAL_TIMERS,
    /**
     * Unique to this instance (a process incarnation): responses carry it back, so an answer a peer
     * sends to an earlier incarnation (same request id, before a restart) is never taken for ours.
     */
    private readonly instanceId: string = randomBytes(8).toString('hex'),
  ) {
    transport.onMessage((peer, bytes) => this.receive(peer, bytes));
    transport.onPeerDown((peer, reason) => this.failPeer(peer, `link to ${peer} is down: ${reason}`));
    transport.onSessionReset((peer) => this.failPeer(peer, `link session with ${peer} was reset`));
  }

  handle<Op extends PeerOp>(op: Op, handler: RpcHandler<Op>): void {
    // Dispatch is by the decoded request's op, so the handler only ever sees RequestOf<Op>.
    this.handlers.set(op, handler as unknown as AnyHandler);
  }

  isUp(peer: string): boolean {
    return this.transport.isUp(peer);
  }

  /** Sends a request and waits for its response (or the timeout, or the link going down). */
  async request<Op extends PeerOp>(peer: string, header: RequestOf<Op>, segments: readonly Segment[] = [], timeoutMs = 30_000): Promise<RpcReply<Op>> {
    const { queued, reply } = this.send(peer, header, segments, timeoutMs);
    await queued;
    return reply;
  }

  /**
   * Sends a request; `queued` settles once the link has taken it (what follows is ordered after it),
   * `reply` with the response. Both reject if the request cannot be sent.
   */
  send<Op extends PeerOp>(peer: string, header: RequestOf<Op>, segments: readonly Segment[], timeoutMs: number):
    { queued: Promise<void>; reply: Promise<RpcReply<Op>> } {
    if (this.closed) {
      const e = Promise.reject(new TidemarkError(ErrorCode.ShuttingDown, 'array is shutting down'));
      e.catch(() => undefined);
      return { queued: e, reply: e };
    }
    if (!this.transport.isUp(peer)) {
      const e = Promise.reject(new TidemarkError(ErrorCode.LinkDown, `link to ${peer} is down`, { peer }));
      e.catch(() => undefined);
      return { queued: e, reply: e };
    }
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_REQUEST_ID ? 1 : this.nextId + 1;
    const answer = new Promise<{ header: Readonly<Record<string, unknown>>; segments: readonly Segment[] }>((resolve, reject) => {
      const cancelTimer = this.timers.after(timeoutMs, () => {
        this.pending.delete(id);
        reject(new TidemarkError(ErrorCode.LinkDown, `${peer} did not answer ${String(header.op)} within ${timeoutMs} ms`, { peer }));
      });
      this.pending.set(id, { peer, resolve, reject, cancelTimer });
    });
    const queued = this.transport.send(peer, encodeMessage({ type: 'request', id, header: { ...header, rpc: this.instanceId }, segments }, unzeroed));
    queued.catch((error: unknown) => {
      const p = this.pending.get(id);
      if (!p) return;
      p.cancelTimer();
      this.pending.delete(id);
      p.reject(error);
    });
    const reply = answer.then((r): RpcReply<Op> => {
      if (r.header.ok === true) {
        const decoded = decodeReply(header.op, r.header);
        if (decoded.ok) return { header: decoded.value, segments: r.segments };
        this.onError(decoded.error, { peer, op: header.op });
        throw new TidemarkError(ErrorCode.Protocol, `${peer}: ${decoded.error.message}`, { peer, ...decoded.error.details });
      }
      // The error envelope is checked field by field: a peer's bad error must not become ours.
      const e = isObject(r.header.error) ? r.header.error : {};
      const code = (Object.values(ErrorCode) as unknown[]).includes(e.code) ? (e.code as ErrorCode) : ErrorCode.Internal;
      const message = typeof e.message === 'string' ? e.message : 'request failed';
      throw new TidemarkError(code, `${peer}: ${message}`, { peer, ...(isObject(e.details) ? e.details : {}) });
    });
    reply.catch(() => undefined);
    return { queued, reply };
  }

  private receive(peer: string, bytes: Uint8Array): void {
    let message: PeerMessage;
    try {
      message = decodeMessage(bytes);
    } catch (error) {
      const id = peekRequestId(bytes);
      this.onError(error, { peer, code: ErrorCode.Protocol, ...(id === undefined ? { dropped: true } : { id }) });
      if (id !== undefined) this.respond(peer, id, { ok: false, error: errorJson(error) }, []);
      return;
    }
    if (message.type === 'response') {
      const p = this.pending.get(message.id);
      // A late answer to a request that timed out, or one meant for an earlier incarnation of this array.
      if (!p || p.peer !== peer || message.header.rpc !== this.instanceId) return;
      this.pending.delete(message.id);
      p.cancelTimer();
      p.resolve({ header: message.header, segments: message.segments });
      return;
    }
    const rpc = typeof message.header.rpc === 'string' ? message.header.rpc : undefined;
    const fail = (error: TidemarkError | Error, context: Record<string, unknown>): void => {
      this.onError(error, { peer, id: message.id, ...context, code: isTidemarkError(error) ? error.code : ErrorCode.Internal });
      this.respond(peer, message.id, { ok: false, error: errorJson(error), rpc }, []);
    };
    const decoded = decodeRequest(message.header);
    if (!decoded.ok) return fail(decoded.error, { op: typeof message.header.op === 'string' ? message.header.op.slice(0, 100) : null });
    const request = decoded.value;
    const handler = this.handlers.get(request.op);
    if (!handler) return fail(new TidemarkError(ErrorCode.Unsupported, `${request.op} is not served by this array`, { op: request.op }), { op: request.op });
    let result: ReturnType<AnyHandler>;
    try {
      result = handler(peer, request, message.segments);
    } catch (error) {
      // A handler that refuses before its first await: answered like any refusal, never thrown into the link.
      return fail(error instanceof Error ? error : new Error(String(error)), { op: request.op, thrown: 'synchronously' });
    }
    result.then(
      (reply) => this.respond(peer, message.id, { ...reply.header, ok: true, rpc }, reply.segments),
      (error: unknown) => {
        if (!isTidemarkError(error)) this.onError(error, { peer, op: request.op });
        this.respond(peer, message.id, { ok: false, error: errorJson(error), rpc }, []);
      },
    );
  }

  private respond(peer: string, id: number, header: Record<string, unknown>, segments: readonly Segment[]): void {
    if (this.closed || !this.transport.isUp(peer)) return;
    this.transport.send(peer, encodeMessage({ type: 'response', id, header, segments }, unzeroed)).catch(() => undefined);
  }


  private failPeer(peer: string, why: string): void {
    for (const [id, p] of this.pending) {
      if (p.peer !== peer) continue;
      this.pending.delete(id);
      p.cancelTimer();
      p.reject(new TidemarkError(ErrorCode.LinkDown, why, { peer }));
    }
  }

  close(): void {
    this.closed = true;
    for (const p of this.pending.values()) {
      p.cancelTimer();
      p.reject(new TidemarkError(ErrorCode.ShuttingDown, 'array is shutting down'));
    }
    this.pending.clear();
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function errorJson(error: unknown): { code: string; message: string; details: Readonly<Record<string, unknown>> } {
  return isTidemarkError(error) ? error.toJSON() : { code: ErrorCode.Internal, message: String(error), details: {} };
}

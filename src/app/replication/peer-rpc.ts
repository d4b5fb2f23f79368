// Requests and responses between arrays over a peer transport. A request names an operation in its
// header; the handler for it runs synchronously on delivery (so data applies begin in link order)
// and its promise's result is sent back. A request whose peer goes away fails with TM_ERR_LINK_DOWN.
import { ErrorCode, TidemarkError, isTidemarkError } from '../../core/errors.js';
import { decodeMessage, encodeMessage, type PeerMessage, type Segment } from '../../core/replication/peer-messages.js';
import type { PeerTransport } from '../../ports/peer-transport.js';
import type { Timers } from '../../ports/timers.js';
import { REAL_TIMERS } from '../real-timers.js';
import { randomBytes } from 'node:crypto';

export interface RpcReply {
  readonly header: Readonly<Record<string, unknown>>;
  readonly segments: readonly Segment[];
}

export type RpcHandler = (peer: string, header: Readonly<Record<string, unknown>>, segments: readonly Segment[]) => Promise<RpcReply>;

interface Pending {
  readonly peer: string;
  readonly resolve: (reply: RpcReply) => void;
  readonly reject: (error: unknown) => void;
  readonly cancelTimer: () => void;
}

const MAX_REQUEST_ID = 0xffff_ffff;

export class PeerRpc {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<string, RpcHandler>();
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

  handle(op: string, handler: RpcHandler): void {
    this.handlers.set(op, handler);
  }

  isUp(peer: string): boolean {
    return this.transport.isUp(peer);
  }

  /** Sends a request and waits for its response (or the timeout, or the link going down). */
  async request(peer: string, header: Record<string, unknown>, segments: readonly Segment[] = [], timeoutMs = 30_000): Promise<RpcReply> {
    const { queued, reply } = this.send(peer, header, segments, timeoutMs);
    await queued;
    return reply;
  }

  /**
   * Sends a request; `queued` settles once the link has taken it (what follows is ordered after it),
   * `reply` with the response. Both reject if the request cannot be sent.
   */
  send(peer: string, header: Record<string, unknown>, segments: readonly Segment[], timeoutMs: number):
    { queued: Promise<void>; reply: Promise<RpcReply> } {
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
    const answer = new Promise<RpcReply>((resolve, reject) => {
      const cancelTimer = this.timers.after(timeoutMs, () => {
        this.pending.delete(id);
        reject(new TidemarkError(ErrorCode.LinkDown, `${peer} did not answer ${String(header.op)} within ${timeoutMs} ms`, { peer }));
      });
      this.pending.set(id, { peer, resolve, reject, cancelTimer });
    });
    const queued = this.transport.send(peer, encodeMessage({ type: 'request', id, header: { ...header, rpc: this.instanceId }, segments }));
    queued.catch((error: unknown) => {
      const p = this.pending.get(id);
      if (!p) return;
      p.cancelTimer();
      this.pending.delete(id);
      p.reject(error);
    });
    const reply = answer.then((r) => {
      if (r.header.ok === true) return r;
      const e = r.header.error as { code?: string; message?: string; details?: Record<string, unknown> } | undefined;
      const code = Object.values(ErrorCode).includes(e?.code as ErrorCode) ? (e!.code as ErrorCode) : ErrorCode.Internal;
      throw new TidemarkError(code, `${peer}: ${e?.message ?? 'request failed'}`, { peer, ...(e?.details ?? {}) });
    });
    reply.catch(() => undefined);
    return { queued, reply };
  }

  private receive(peer: string, bytes: Uint8Array): void {
    let message: PeerMessage;
    try {
      message = decodeMessage(bytes);
    } catch (error) {
      this.onError(error, { peer });
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
    const op = String(message.header.op);
    const handler = this.handlers.get(op);
    const result = handler
      ? handler(peer, message.header, message.segments)
      : Promise.reject(new TidemarkError(ErrorCode.Unsupported, `unknown replication request ${JSON.stringify(op)}`));
    const rpc = message.header.rpc;
    result.then(
      (reply) => this.respond(peer, message.id, { ...reply.header, ok: true, rpc }, reply.segments),
      (error: unknown) => {
        const err = isTidemarkError(error) ? error.toJSON() : { code: ErrorCode.Internal, message: String(error), details: {} };
        if (!isTidemarkError(error)) this.onError(error, { peer, op });
        this.respond(peer, message.id, { ok: false, error: err, rpc }, []);
      },
    );
  }

  private respond(peer: string, id: number, header: Record<string, unknown>, segments: readonly Segment[]): void {
    if (this.closed || !this.transport.isUp(peer)) return;
    this.transport.send(peer, encodeMessage({ type: 'response', id, header, segments })).catch(() => undefined);
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

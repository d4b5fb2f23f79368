// A synchronous, in-memory harness for two link endpoints: bytes written on a connection are
// queued per direction and delivered when the test says so (all at once, in a chosen order, or
// dropped), so handshake and session behaviour can be driven step by step.
import { createHmac } from 'node:crypto';
import { aes256GcmOpen, aes256GcmSeal } from '../../src/adapters/net/node-crypto.js';
import { LinkEndpoint } from '../../src/core/link/endpoint.js';
import { FrameDecoder, frameToBytes, type Frame } from '../../src/core/link/frame.js';
import type { ConnId, LinkAction, LinkConfig } from '../../src/core/link/types.js';
import { Prng } from '../../src/core/lib/prng.js';

export const SECRET = new TextEncoder().encode('correct horse battery staple!!');
export const OTHER_SECRET = new TextEncoder().encode('not the secret the peer holds!!');

let cryptoInstances = 0;

/** Real HMAC; seeded nonces, different for every instance (like real randomness, two restarts never collide). */
export function testCrypto(seed = 1): LinkConfig['crypto'] {
  const prng = new Prng(seed * 1000 + cryptoInstances++);
  return {
    hmacSha256: (key, data) => new Uint8Array(createHmac('sha256', key).update(data).digest()),
    randomBytes: (n) => { const b = new Uint8Array(n); prng.fill(b); return b; },
    aeadSeal: aes256GcmSeal,
    aeadOpen: aes256GcmOpen,
  };
}

export function linkConfig(arrayName: string, overrides: Partial<LinkConfig> = {}): LinkConfig {
  const prng = new Prng(arrayName.length * 7919);
  return {
    arrayName, crypto: testCrypto(arrayName.charCodeAt(0)), random: () => prng.next(),
    heartbeatIntervalMs: 100, deadAfterMs: 500, backoffInitialMs: 10, backoffMaxMs: 100, ...overrides,
  };
}

interface Wire {
  readonly from: Node;
  readonly fromId: ConnId;
  readonly to: Node;
  readonly toId: ConnId;
  queue: Uint8Array[];
}

export interface Node {
  readonly name: string;
  endpoint: LinkEndpoint;
  readonly delivered: Uint8Array[];
  readonly events: LinkAction[];
  /** The endpoint's log lines (kept apart from the events, whose order tests check). */
  readonly logs: Array<Extract<LinkAction, { kind: 'log' }>>;
  /** Wires leaving this node, by its own connId. */
  readonly out: Map<ConnId, Wire>;
}

export class LinkPair {
  nowMs = 0;
  readonly a: Node;
  readonly b: Node;

  constructor(a: LinkEndpoint, b: LinkEndpoint) {
    this.a = { name: a.arrayName, endpoint: a, delivered: [], events: [], logs: [], out: new Map() };
    this.b = { name: b.arrayName, endpoint: b, delivered: [], events: [], logs: [], out: new Map() };
  }

  other(node: Node): Node {
    return node === this.a ? this.b : this.a;
  }

  /** Performs both nodes' actions until neither has any (without delivering queued bytes). */
  drain(): void {
    let progress = true;
    while (progress) {
      progress = false;
      for (const node of [this.a, this.b]) {
        for (let action = node.endpoint.poll(); action; action = node.endpoint.poll()) {
          progress = true;
          this.perform(node, action);
        }
      }
    }
  }

  private perform(node: Node, action: LinkAction): void {
    if (action.kind === 'log') node.logs.push(action);
    else if (action.kind !== 'send') node.events.push(action);
    switch (action.kind) {
      case 'dial': {
        const peer = this.other(node);
        const acceptedId = peer.endpoint.accept(this.nowMs);
        if (acceptedId === undefined) {
          node.endpoint.handle({ kind: 'closed', connId: action.connId, reason: 'refused' }, this.nowMs);
          return;
        }
        node.out.set(action.connId, { from: node, fromId: action.connId, to: peer, toId: acceptedId, queue: [] });
        peer.out.set(acceptedId, { from: peer, fromId: acceptedId, to: node, toId: action.connId, queue: [] });
        node.endpoint.handle({ kind: 'connected', connId: action.connId }, this.nowMs);
        return;
      }
      case 'send':
        node.out.get(action.connId)?.queue.push(frameToBytes(action.frame));
        return;
      case 'close': {
        // Orderly: what was queued still arrives, then the other side sees the close.
        const wire = node.out.get(action.connId);
        if (!wire) return;
        this.deliverWire(wire);
        this.dropWire(wire, `peer closed: ${action.reason}`);
        return;
      }
      case 'deliver':
        node.delivered.push(action.message);
        return;
      default:
        return;
    }
  }

  private dropWire(wire: Wire, reason: string): void {
    wire.from.out.delete(wire.fromId);
    const back = wire.to.out.get(wire.toId);
    wire.to.out.delete(wire.toId);
    if (back) wire.to.endpoint.handle({ kind: 'closed', connId: wire.toId, reason }, this.nowMs);
  }

  private deliverWire(wire: Wire): boolean {
    if (wire.queue.length === 0) return false;
    const chunks = wire.queue;
    wire.queue = [];
    for (const bytes of chunks) {
      if (!wire.to.out.has(wire.toId)) break;
      wire.to.endpoint.handle({ kind: 'data', connId: wire.toId, bytes }, this.nowMs);
    }
    return true;
  }

  /** Delivers everything queued in both directions, repeatedly, until quiet. */
  run(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      this.drain();
      let moved = false;
      for (const node of [this.a, this.b]) for (const wire of [...node.out.values()]) moved = this.deliverWire(wire) || moved;
      if (!moved) {
        this.drain();
        return;
      }
    }
    throw new Error('link pair did not go quiet');
  }

  /** Moves virtual time forward in steps, ticking both endpoints and delivering bytes. */
  advance(ms: number, stepMs = 5): void {
    const end = this.nowMs + ms;
    while (this.nowMs < end) {
      this.nowMs = Math.min(end, this.nowMs + stepMs);
      this.a.endpoint.handle({ kind: 'tick' }, this.nowMs);
      this.b.endpoint.handle({ kind: 'tick' }, this.nowMs);
      this.run();
    }
  }

  /** Kills a connection like a reset: the bytes in flight are lost, both ends see it closed. */
  cut(node: Node, connId: ConnId): void {
    const wire = node.out.get(connId);
    if (!wire) throw new Error(`no wire ${connId}`);
    const back = wire.to.out.get(wire.toId);
    wire.queue = [];
    if (back) back.queue = [];
    node.out.delete(connId);
    wire.to.out.delete(wire.toId);
    node.endpoint.handle({ kind: 'closed', connId, reason: 'reset' }, this.nowMs);
    wire.to.endpoint.handle({ kind: 'closed', connId: wire.toId, reason: 'reset' }, this.nowMs);
  }

  /** Replaces a node's endpoint (a process restart): its connections die with a reset. */
  restart(node: Node, endpoint: LinkEndpoint): void {
    for (const id of [...node.out.keys()]) this.cut(node, id);
    node.endpoint = endpoint;
  }

  wires(node: Node): Wire[] {
    return [...node.out.values()];
  }

  /** Delivers queued bytes of one wire only (to make streams overtake each other). */
  deliverOnly(wire: Wire): void {
    this.deliverWire(wire);
  }
}

/** Decodes every frame in a byte sequence (for raw handshake tests). */
/** alpha and beta, peers of each other, linked and up (the harness's usual start). */
export function connectedPair(overrides: Partial<LinkConfig> = {}, configs?: { a: LinkConfig; b: LinkConfig }): LinkPair {
  const alpha = new LinkEndpoint(configs?.a ?? linkConfig('alpha', overrides), 0);
  const beta = new LinkEndpoint(configs?.b ?? linkConfig('beta', overrides), 0);
  alpha.addPeer({ name: 'beta', address: 'beta:1', secret: SECRET }, 0);
  beta.addPeer({ name: 'alpha', address: 'alpha:1', secret: SECRET }, 0);
  const p = new LinkPair(alpha, beta);
  p.run();
  if (alpha.stats('beta')?.state !== 'up') throw new Error(`the link did not come up: ${JSON.stringify(alpha.stats('beta'))}`);
  return p;
}

export function decodeAll(chunks: readonly Uint8Array[]): Frame[] {
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  for (const c of chunks) decoder.push(c);
  for (;;) {
    const r = decoder.next();
    if (r.kind !== 'frame') return frames;
    frames.push(r.frame);
  }
}

/** Drains an endpoint's actions into lists, without any peer. */
export function drainActions(endpoint: LinkEndpoint): { sent: Map<ConnId, Uint8Array[]>; actions: LinkAction[] } {
  const sent = new Map<ConnId, Uint8Array[]>();
  const actions: LinkAction[] = [];
  for (let a = endpoint.poll(); a; a = endpoint.poll()) {
    if (a.kind === 'send') {
      const list = sent.get(a.connId) ?? [];
      list.push(frameToBytes(a.frame));
      sent.set(a.connId, list);
    } else actions.push(a);
  }
  return { sent, actions };
}

export function bytesOf(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  new Prng(seed).fill(b);
  return b;
}

// Continuity numbers on one sender → receiver stream of journal messages. The link is reliable
// within a session but a reconnect, a lossy path or a restarted receiver can lose or repeat
// messages; the receiver takes message n only right after n − 1 and acknowledges cumulatively,
// the sender keeps every unacknowledged message and sends them again after a quiet spell. The
// receiver's `expected` is part of its durable state, so a restarted receiver resumes without
// duplicates or gaps.
import type { JournalMessage } from './journal-types.js';

export class OutStream {
  private nextContinuity = 1;
  private readonly unacked: JournalMessage[] = [];
  private lastSendMs = -Infinity;

  constructor(private readonly retransmitMs: number, private readonly windowMessages: number) {}

  /** Room for another message (the receiver has not fallen too far behind). */
  get hasRoom(): boolean {
    return this.unacked.length < this.windowMessages;
  }

  /** The messages sent and not yet acknowledged. */
  get pending(): readonly JournalMessage[] {
    return this.unacked;
  }

  get inFlight(): number {
    return this.unacked.length;
  }

  get lastContinuity(): number {
    return this.nextContinuity - 1;
  }

  /** Numbers the message and keeps it until acknowledged; returns it to transmit. */
  send(body: Omit<JournalMessage, 'continuity'>, now: number): JournalMessage {
    const m: JournalMessage = { ...body, continuity: this.nextContinuity++ };
    this.unacked.push(m);
    this.lastSendMs = now;
    return m;
  }

  /** Drops what the receiver has made durable. Returns the continuity numbers newly acknowledged. */
  ack(upTo: number): JournalMessage[] {
    const done: JournalMessage[] = [];
    while (this.unacked.length > 0 && this.unacked[0]!.continuity <= upTo) done.push(this.unacked.shift()!);
    return done;
  }

  /** The messages to send again when nothing was acknowledged or sent for retransmitMs. */
  due(now: number): JournalMessage[] {
    if (this.unacked.length === 0 || now - this.lastSendMs < this.retransmitMs) return [];
    this.lastSendMs = now;
    return this.unacked.slice();
  }

  nextDeadline(): number | undefined {
    return this.unacked.length === 0 ? undefined : this.lastSendMs + this.retransmitMs;
  }
}

/** The receiving side: what it has taken so far (durable with the receiver's state). */
export type Accept = 'new' | 'duplicate' | 'gap';

export function acceptContinuity(expected: number, continuity: number): Accept {
  if (continuity === expected) return 'new';
  return continuity < expected ? 'duplicate' : 'gap';
}

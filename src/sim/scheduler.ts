// The simulator's deterministic scheduler and virtual clock. Every simulated completion is an
// event ordered by (time, insertion sequence); between two events the loop lets every pending
// microtask settle, so the code under test (which reacts only to promises) runs to quiescence
// before virtual time moves. The same seed therefore always yields the same interleaving.
import type { Clock } from '../ports/clock.js';

interface SimEvent {
  readonly time: number;
  readonly seq: number;
  readonly fire: () => void;
}

const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A binary min-heap of events by (time, seq). */
class EventHeap {
  private readonly items: SimEvent[] = [];

  get size(): number {
    return this.items.length;
  }

  push(event: SimEvent): void {
    const items = this.items;
    items.push(event);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): SimEvent | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && before(items[l]!, items[m]!)) m = l;
        if (r < items.length && before(items[r]!, items[m]!)) m = r;
        if (m === i) break;
        [items[i], items[m]] = [items[m]!, items[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** The simulation went quiet, or ran out of its event budget, before a promise settled. */
export class SimStuckError extends Error {
  override name = 'SimStuckError';
}

const before = (a: SimEvent, b: SimEvent): boolean => a.time < b.time || (a.time === b.time && a.seq < b.seq);

export class Scheduler {
  private readonly queue = new EventHeap();
  private seq = 0;
  private time = 0;
  private eventsRun = 0;
  private driving = false;
  private running = false;

  get nowMs(): number {
    return this.time;
  }

  get pending(): number {
    return this.queue.size;
  }

  get events(): number {
    return this.eventsRun;
  }

  /** Runs `fire` after `delayMs` of virtual time (0: after everything already due now). */
  at(delayMs: number, fire: () => void): void {
    if (!(delayMs >= 0) || !Number.isFinite(delayMs)) throw new RangeError(`event delay ${delayMs}`);
    this.queue.push({ time: this.time + delayMs, seq: this.seq++, fire });
    if (this.driving) this.kick();
  }

  /**
   * For code outside a simulation (the port contract tests): events fire on their own, in order,
   * as soon as they are scheduled, so plain `await`s on simulated devices complete.
   */
  autoRun(): void {
    this.driving = true;
    this.kick();
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    void this.run().finally(() => {
      this.running = false;
      if (this.queue.size > 0) this.kick();
    });
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.at(delayMs, resolve));
  }

  /**
   * Fires events in order until the queue is empty, `stop()` is true, or `maxEvents` ran.
   * Returns true when it stopped because the queue ran dry.
   */
  async run(stop: () => boolean = () => false, maxEvents = Number.POSITIVE_INFINITY): Promise<boolean> {
    let ran = 0;
    for (;;) {
      await settle();
      if (stop()) return false;
      const event = this.queue.pop();
      if (!event) return true;
      if (ran++ >= maxEvents) {
        this.queue.push(event);
        return false;
      }
      this.time = event.time;
      this.eventsRun++;
      event.fire();
    }
  }

  /** Runs the scheduler until `promise` settles; throws if the simulation goes quiet first. */
  async until<T>(promise: Promise<T>, what: string | (() => string), maxEvents = 1_000_000): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown;
    let failed = false;
    promise.then((v) => { done = true; value = v; }, (e: unknown) => { done = true; failed = true; error = e; });
    const dry = await this.run(() => done, maxEvents);
    const label = typeof what === 'string' ? what : what();
    if (!done) throw new SimStuckError(dry ? `${label} never completed (no events left)` : `${label} did not complete within ${maxEvents} events`);
    if (failed) throw error;
    return value as T;
  }
}

/** The ports/clock.ts Clock over the scheduler's virtual time. */
export class SimClock implements Clock {
  constructor(private readonly scheduler: Scheduler) {}

  nowMs(): number {
    return this.scheduler.nowMs;
  }

  sleep(ms: number): Promise<void> {
    return this.scheduler.sleep(ms);
  }
}

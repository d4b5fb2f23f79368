// A synchronous discrete-event loop for simulations whose machines are pure (no promises to
// settle between events, unlike sim/scheduler.ts): events ordered by (time, insertion order), so
// one seed always gives one interleaving, and thousands of seeds run in seconds.

interface Ev { readonly time: number; readonly seq: number; readonly fire: () => void }

const before = (a: Ev, b: Ev): boolean => a.time < b.time || (a.time === b.time && a.seq < b.seq);

export class EventLoop {
  private readonly heap: Ev[] = [];
  private seq = 0;
  private time = 0;
  events = 0;

  get now(): number {
    return this.time;
  }

  at(time: number, fire: () => void): void {
    const h = this.heap;
    h.push({ time: Math.max(time, this.time), seq: this.seq++, fire });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  /** Runs `fire` every `periodMs` for as long as the loop runs. */
  every(periodMs: number, fire: () => void): void {
    const again = (): void => { fire(); this.at(this.time + periodMs, again); };
    this.at(this.time + periodMs, again);
  }

  private pop(): Ev | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }

  /** Runs events while `condition` holds and there are events (a periodic event keeps it going). */
  runWhile(condition: () => boolean, maxEvents = 5_000_000): void {
    while (condition()) {
      const ev = this.pop();
      if (!ev) return;
      this.time = ev.time;
      this.events++;
      if (this.events > maxEvents) throw new Error(`simulation ran past ${maxEvents} events`);
      ev.fire();
    }
  }
}

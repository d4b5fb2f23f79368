// Busy polling (`array start --poll-us N`, off by default): after a host request or a link message
// arrives, the event loop keeps polling its sockets for up to N µs instead of sleeping. While an
// immediate is queued libuv polls with a zero timeout, so the loop never blocks and whatever arrives
// next is read at once.
//
// Why: at low queue depth every hop (host → array, R1 → R2 and back) finds its receiver asleep, and
// on a virtual machine waking an idle vCPU is costly for the sender too (the wake-up runs inside its
// send). Measured on the 2-vCPU VM (fio nbd 4 KiB randwrite QD1, docs/performance.md): unpaired mean
// 85-108 → 46-48 µs with 500 µs of polling, a sync pair 10-30 % lower; at QD32, where the loop rarely
// sleeps anyway, the spinning competes with the other processes for the two cores (-10 to -18 %). The
// same trade QEMU makes with its iothreads' poll-max-ns: latency for CPU, chosen by the operator.

/** The longest window `--poll-us` takes: polling is for gaps between requests, not a busy core. */
export const MAX_POLL_US = 10_000;

/** Whether `us` is a polling window `--poll-us` takes: a whole number of µs from 0 to MAX_POLL_US. */
export const isPollWindowUs = (us: number): boolean => Number.isInteger(us) && us >= 0 && us <= MAX_POLL_US;

export class BusyPoll {
  private untilMs = 0;
  private spinning = false;
  private stopped = false;

  /** `windowUs` 0: never polls. */
  constructor(private readonly windowUs: number, private readonly nowMs: () => number = () => performance.now()) {
    if (!isPollWindowUs(windowUs)) {
      throw new RangeError(`the polling window must be a whole number of µs from 0 to ${MAX_POLL_US}`);
    }
  }

  get enabled(): boolean {
    return this.windowUs > 0;
  }

  /** Input arrived: poll for the window from now on. */
  readonly activity = (): void => {
    if (this.windowUs === 0 || this.stopped) return;
    this.untilMs = this.nowMs() + this.windowUs / 1000;
    if (this.spinning) return;
    this.spinning = true;
    setImmediate(this.spin);
  };

  /** Whether the loop is being kept awake now (tests). */
  get polling(): boolean {
    return this.spinning;
  }

  /** No more polling (shutdown): the loop may sleep and the process end. */
  stop(): void {
    this.stopped = true;
  }

  private readonly spin = (): void => {
    if (this.stopped || this.nowMs() >= this.untilMs) {
      this.spinning = false;
      return;
    }
    setImmediate(this.spin);
  };
}

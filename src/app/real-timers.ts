// The event loop's timers as a Timers port; unref'd, so pending timers never keep a process alive.
import type { Timers } from '../ports/timers.js';

export const REAL_TIMERS: Timers = {
  after(ms, fire) {
    const t = setTimeout(fire, ms);
    t.unref();
    return () => clearTimeout(t);
  },
  every(ms, fire) {
    const t = setInterval(fire, ms);
    t.unref();
    return () => clearInterval(t);
  },
};

// The daemon's eyes for operators: the event timeline, host I/O totals and the hour of history,
// wired to the places where state changes are decided. Commands, failovers and group decisions
// reach it through the array's event port (ArrayDeps.onEvent, which also logs them); link up/down
// through the link transport's own notifications; derived states (a pair becoming synchronized, a
// clone copy finishing) through the history's once-a-second comparison.
import type { PeerTransport } from '../../ports/peer-transport.js';
import type { EventPageView, ObserveBackend } from '../../adapters/http/observe-routes.js';
import { EventTimeline, type EventKind } from './event-timeline.js';
import { EstateHistory, type EstateSources } from './estate-history.js';
import { IoCounters } from './io-counters.js';
import { LinkRoundTrips, type RttProbe } from './link-rtt.js';

/** Which part of the array an event-port message is about, from the words it starts with. */
export function kindOf(message: string): EventKind {
  if (/^(pair|replica)\b/.test(message)) return 'pair';
  if (/^group\b/.test(message)) return 'group';
  if (/^clone\b/.test(message)) return 'clone';
  if (/^(link|peer)\b/.test(message)) return 'link';
  return 'array';
}

export interface ObservatoryOptions {
  readonly nowMs: () => number;
  readonly timelineCapacity?: number;
  /** History tick and sample spacing (tests shorten them). */
  readonly tickMs?: number;
  readonly ticksPerSample?: number;
  /** A sampling error (logged by the daemon; sampling goes on). */
  readonly onError?: (error: unknown) => void;
}

export class Observatory {
  readonly timeline: EventTimeline;
  readonly io = new IoCounters();
  private history: EstateHistory | undefined;
  private sources: EstateSources | undefined;
  private rtt: LinkRoundTrips | undefined;

  constructor(private readonly options: ObservatoryOptions) {
    this.timeline = new EventTimeline(options.nowMs, options.timelineCapacity);
  }

  /** The array's event port: every notable decision, as a timeline entry. */
  readonly onEvent = (message: string, fields: Record<string, unknown>): void => {
    this.timeline.record(kindOf(message), message, this.subjectOf(fields), fields);
  };

  /** Pair ids by which the event port names pairs, to their names here (what an operator types). */
  private readonly pairNames = new Map<string, string>();

  /** The object an event-port message names: its pair (by name), group, peer or volume. */
  private subjectOf(fields: Record<string, unknown>): string | null {
    for (const key of ['pair', 'group', 'peer', 'volume']) {
      const value = fields[key];
      if (typeof value !== 'string') continue;
      if (key !== 'pair') return value;
      if (!this.pairNames.has(value)) this.refreshPairNames();
      return this.pairNames.get(value) ?? value;
    }
    return null;
  }

  /** Merges rather than replaces, so a deleted pair's last events still carry its name (bounded all the same). */
  private refreshPairNames(): void {
    if (this.pairNames.size > 4096) this.pairNames.clear();
    for (const p of this.sources?.pairs() ?? []) this.pairNames.set(p.id, p.pair);
  }

  watchLinks(links: Pick<PeerTransport, 'onPeerUp' | 'onPeerDown'>): void {
    links.onPeerUp((peer) => this.timeline.record('link', `link to ${peer} up`, peer, { peer }));
    links.onPeerDown((peer, reason) => this.timeline.record('link', `link to ${peer} down: ${reason}`, peer, { peer, reason }));
  }

  /** Starts sampling once the array's objects exist. `peers()` of the sources may read `rttMs`. */
  watchEstate(sources: EstateSources, probe: RttProbe): void {
    this.rtt = new LinkRoundTrips(probe, undefined, this.options.onError);
    this.rtt.start();
    this.sources = sources;
    this.history = new EstateHistory(sources, {
      nowMs: this.options.nowMs, timeline: this.timeline,
      ...(this.options.onError ? { onError: this.options.onError } : {}),
      ...(this.options.tickMs !== undefined ? { tickMs: this.options.tickMs } : {}),
      ...(this.options.ticksPerSample !== undefined ? { ticksPerSample: this.options.ticksPerSample } : {}),
    });
    this.history.start();
  }

  /** The link's last round trip to `peer`, or null. */
  rttMs(peer: string): number | null {
    return this.rtt?.rttMs(peer) ?? null;
  }

  stop(): void {
    this.rtt?.stop();
    this.history?.stop();
    this.timeline.close();
  }

  backend(): ObserveBackend {
    return {
      events: async (since, limit, waitMs): Promise<EventPageView> => {
        await this.timeline.waitAfter(since, waitMs);
        return this.timeline.since(since, limit);
      },
      history: (sinceMs) => this.history?.history(sinceMs) ?? { sampleMs: 5000, now: this.options.nowMs(), pairs: {}, volumes: {}, peers: {} },
    };
  }
}

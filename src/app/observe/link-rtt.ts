// Round-trip times of the links to peers: every few seconds one `peer.ping` request per peer whose
// link is up, timed from send to answer. It measures what replication feels (link, encryption,
// both event loops), not ICMP; a peer that does not answer within the timeout, or is an older
// version without peer.ping, has no figure.

export interface RttProbe {
  peers(): string[];
  isUp(peer: string): boolean;
  ping(peer: string, timeoutMs: number): Promise<number>;
}

const PING_TIMEOUT_MS = 5000;

export class LinkRoundTrips {
  private readonly latestMs = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly probe: RttProbe, private readonly intervalMs = 5000, private readonly onError?: (error: unknown) => void) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.safeRound(), this.intervalMs);
    this.timer.unref();
    this.safeRound();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** The last round trip to the peer in milliseconds, or null (link down, no answer, never measured). */
  rttMs(peer: string): number | null {
    return this.latestMs.get(peer) ?? null;
  }

  /** A failed look at the peer table is no reason to stop measuring, nor to stop the array. */
  private safeRound(): void {
    try {
      this.round();
    } catch (error) {
      this.onError?.(error);
    }
  }

  private round(): void {
    const peers = this.probe.peers();
    for (const name of [...this.latestMs.keys()]) if (!peers.includes(name)) this.latestMs.delete(name);
    for (const peer of peers) {
      if (!this.probe.isUp(peer)) {
        this.latestMs.delete(peer);
        continue;
      }
      if (this.inFlight.has(peer)) continue; // one probe per peer at a time, however slow the link
      this.inFlight.add(peer);
      this.probe.ping(peer, PING_TIMEOUT_MS).then(
        (ms) => { if (this.timer) this.latestMs.set(peer, Math.round(ms * 100) / 100); },
        () => { this.latestMs.delete(peer); },
      ).finally(() => this.inFlight.delete(peer));
    }
  }
}

// Whether a cascade's R2VOL may be split: the pair feeding it must not be resyncing it (a resync
// ships tracks in any order, so R2VOL is torn until it ends). The cascade machine keeps the verdict
// per link session (core/cascade/cascade-machine.ts, `source`); this watch names the sessions and
// asks the source array, over the link, whether its background copy owes anything.
//
// A new session starts whenever a resync could start behind the cascade's back: the link to the
// source came up, or the pair's record on this array changed intent or generation (a resume, an
// establish, a swap). A confirmation counts for a session only if it was asked within it.
import type { CascadeFacts } from '../../core/cascade/cascade-machine.js';
import type { PairRecord } from '../../core/replication/pair-record.js';
import type { PeerRpc } from '../replication/peer-rpc.js';

/** A status query at most this often per source while its session is confirmed already. */
const RECONFIRM_MS = 1000;
const QUERY_TIMEOUT_MS = 5000;

interface Watched {
  epoch: number;
  confirmed: number | null;
  lastIntent: string;
  lastGeneration: number;
  asking: boolean;
  askedAtMs: number;
}

export class SourceWatch {
  /** Per upstream pair id. */
  private readonly watched = new Map<string, Watched>();
  /** Epochs are names unique across restarts of this array (the machine persists the one it saw). */
  private readonly boot: string;

  constructor(
    private readonly rpc: PeerRpc,
    private readonly linkUp: (peer: string) => boolean,
    private readonly nowMs: () => number,
    boot: string,
  ) {
    this.boot = boot;
  }

  /** The link to `peer` came up: every pair fed from it starts a new session. */
  peerUp(peer: string, upstream: (peer: string) => string[]): void {
    for (const id of upstream(peer)) {
      const w = this.watched.get(id);
      if (w) w.epoch++;
    }
  }

  /**
   * The source facts for a volume fed by `pair` (its R2 half on this array), or none. A volume its
   * own hosts write (the pair split or failed over) has no source to wait for.
   */
  facts(pair: PairRecord | undefined): CascadeFacts['source'] {
    if (!pair || pair.role !== 'R2' || pair.intent === 'split' || pair.intent === 'failed-over') return { kind: 'none' };
    let w = this.watched.get(pair.id);
    if (!w) {
      w = { epoch: 1, confirmed: null, lastIntent: pair.intent, lastGeneration: pair.generation, asking: false, askedAtMs: 0 };
      this.watched.set(pair.id, w);
    }
    if (w.lastIntent !== pair.intent || w.lastGeneration !== pair.generation) {
      w.epoch++;
      w.lastIntent = pair.intent;
      w.lastGeneration = pair.generation;
    }
    const up = this.linkUp(pair.peer);
    if (up) this.ask(pair, w);
    return {
      kind: 'pair',
      upEpoch: up ? this.name(w.epoch) : null,
      confirmedEpoch: w.confirmed === null ? null : this.name(w.confirmed),
    };
  }

  private name(epoch: number): string {
    return `${this.boot}:${epoch}`;
  }

  private ask(pair: PairRecord, w: Watched): void {
    const now = this.nowMs();
    if (w.asking || (w.confirmed === w.epoch && now - w.askedAtMs < RECONFIRM_MS)) return;
    // Only sync and semi-sync sources keep R2VOL in write order between resyncs.
    if (pair.mode !== 'sync' && pair.mode !== 'semisync') return;
    w.asking = true;
    w.askedAtMs = now;
    const epoch = w.epoch;
    void this.rpc.request(pair.peer, { op: 'pair.status', pair: pair.id }, [], QUERY_TIMEOUT_MS)
      .then((reply) => {
        const h = reply.header;
        const settled = h.exists && h.role === 'R1' && (h.intent !== 'replicating' || h.tracksOwed === 0);
        if (settled && w.epoch === epoch) w.confirmed = epoch;
        // A resync seen in a session thought settled (it began without a link loss we saw): a new session.
        else if (!settled && w.confirmed === w.epoch) w.epoch++;
      }, () => undefined)
      .finally(() => { w.asking = false; });
  }
}

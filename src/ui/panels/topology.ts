// This array, its peers with link state and throughput each way, and the pairs between them drawn
// as arrows in the direction they replicate, with the journal pairs and the cascades shipping to
// each peer; a peer
// reached through a relay is joined to its relay too; groups below.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Panel, PanelProps } from './panel.js';
import { Badge } from '../widgets.js';
import { last, rate } from '../format.js';
import { listOf, type CascadeView, type JournalBody, type PairStatusView } from '../store.js';

/** The last measured round trip (null: link down or no answer). */
function rtt(values: ReadonlyArray<number | null> | undefined): string {
  const value = values && values.length > 0 ? values[values.length - 1] : null;
  return value === null || value === undefined ? 'rtt –' : `rtt ${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;
}

const STATE_COLOURS: Record<string, string> = {
  synchronized: '#16a34a', synchronizing: '#d97706', partitioned: '#dc2626', diverged: '#dc2626',
  suspended: '#6b7280', split: '#6b7280', 'failed-over': '#7c3aed', restoring: '#d97706',
};

const CASCADE_COLOUR = '#0891b2';
const JOURNAL_COLOUR = '#2563eb';

function Graph({ estate, snapshot }: PanelProps): VNode {
  const peers = estate.peers;
  const rowHeight = 110;
  const height = Math.max(140, peers.length * rowHeight + 30);
  const self = { x: 20, y: height / 2 - 28, w: 150, h: 56 };
  const peerX = 470;
  const pairsOf = (peer: string): PairStatusView[] => estate.pairs.filter((p) => p.peer === peer);
  // The cascades list is the cascades panel's source; the topology only reads it.
  const cascadesOf = (peer: string): readonly CascadeView[] => listOf<CascadeView>(estate, 'cascades').filter((c) => c.peer === peer);
  // Likewise the journals panel's: each journal pair is an arrow primary → secondary.
  const journalPairsOf = (peer: string): Array<{ journal: string; id: string; outgoing: boolean }> => listOf<JournalBody>(estate, 'journals').flatMap((j) => j.pairs
    .filter((p) => (p.role === 'primary' ? p.secondaryArray : p.primaryArray) === peer)
    .map((p) => ({ journal: j.name, id: p.id, outgoing: p.role === 'primary' })));
  const rowOf = (name: string): number => peers.findIndex((p) => p.name === name);
  const middleOf = (i: number): number => 20 + i * rowHeight + rowHeight / 2 + 14;
  return html`<svg class="topology" viewBox=${`0 0 720 ${height}`} role="img" aria-label="replication topology">
    <defs>
      ${Object.entries(STATE_COLOURS).map(([state, colour]) => html`<marker id=${`arrow-${state}`} viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill=${colour} /></marker>`)}
      <marker id="arrow-cascade" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill=${CASCADE_COLOUR} /></marker>
      <marker id="arrow-journal" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill=${JOURNAL_COLOUR} /></marker>
    </defs>
    ${peers.map((peer, i) => {
      const y = 20 + i * rowHeight + rowHeight / 2 - 14;
      const mid = y + 28;
      const up = peer.link === 'up';
      const series = snapshot.history?.peers[peer.name];
      const pairs = pairsOf(peer.name);
      const relay = peer.via === null ? -1 : rowOf(peer.via);
      // A relayed link runs end to end through the relay: dashed from here, and an arc from the relay's node.
      return html`<g data-testid=${`topology-link-${peer.name}`} data-link=${peer.link} data-via=${peer.via ?? ''}>
        <line x1=${self.x + self.w} y1=${self.y + self.h / 2} x2=${peerX} y2=${mid} class=${`${up ? 'link up' : 'link down'}${peer.via === null ? '' : ' relayed'}`} />
        <text x=${(self.x + self.w + peerX) / 2} y=${(self.y + self.h / 2 + mid) / 2 - 8} class="link-label" text-anchor="middle">
          ${`link ${peer.link}${peer.via === null ? '' : ` via ${peer.via}`} · ${up ? rtt(series?.rttMs) : 'rtt –'} · ↑ ${rate(last(series?.sentBytesPerSecond))} ↓ ${rate(last(series?.receivedBytesPerSecond))}`}</text>
        ${relay >= 0 ? html`<g data-testid=${`topology-relay-${peer.via}-${peer.name}`}>
          <path d=${`M${peerX + 150},${middleOf(relay)} C${peerX + 215},${middleOf(relay)} ${peerX + 215},${mid} ${peerX + 150},${mid}`} class=${up ? 'link up relayed' : 'link down relayed'} fill="none" />
          <text x=${peerX + 200} y=${(middleOf(relay) + mid) / 2 + 4} class="link-label" text-anchor="start">relay</text></g>` : null}
        ${pairs.map((p, j) => {
          const offset = 14 + j * 14;
          const from = p.role === 'R1' ? [self.x + self.w, self.y + self.h / 2 + offset] : [peerX, mid + offset];
          const to = p.role === 'R1' ? [peerX, mid + offset] : [self.x + self.w, self.y + self.h / 2 + offset];
          const colour = STATE_COLOURS[p.state] ?? '#6b7280';
          return html`<g data-testid=${`topology-pair-${p.pair}`}>
            <line x1=${from[0]} y1=${from[1]} x2=${to[0]} y2=${to[1]} stroke=${colour} stroke-width="2" marker-end=${`url(#arrow-${p.state})`} />
            <text x=${(from[0]! + to[0]!) / 2} y=${(from[1]! + to[1]!) / 2 + 11} class="pair-label" text-anchor="middle">${`${p.pair} (${p.mode}, ${p.state})`}</text></g>`;
        })}
        ${journalPairsOf(peer.name).map((jp, k) => {
          const offset = 14 + (pairs.length + k) * 14;
          const here = [self.x + self.w, self.y + self.h / 2 + offset];
          const there = [peerX, mid + offset];
          const [from, to] = jp.outgoing ? [here, there] : [there, here];
          return html`<g data-testid=${`topology-journal-${jp.id}`}>
            <line x1=${from![0]} y1=${from![1]} x2=${to![0]} y2=${to![1]} class="journal-edge" marker-end="url(#arrow-journal)" />
            <text x=${(from![0]! + to![0]!) / 2} y=${(from![1]! + to![1]!) / 2 + 11} class="pair-label" text-anchor="middle">${`${jp.id} (journal ${jp.journal})`}</text></g>`;
        })}
        ${cascadesOf(peer.name).map((c, k) => {
          const offset = 14 + (pairs.length + journalPairsOf(peer.name).length + k) * 14;
          const from = [self.x + self.w, self.y + self.h / 2 + offset];
          const to = [peerX, mid + offset];
          return html`<g data-testid=${`topology-cascade-${c.name}`}>
            <line x1=${from[0]} y1=${from[1]} x2=${to[0]} y2=${to[1]} class="cascade-edge" marker-end="url(#arrow-cascade)" />
            <text x=${(from[0]! + to[0]!) / 2} y=${(from[1]! + to[1]!) / 2 + 11} class="pair-label" text-anchor="middle">${`cascade ${c.name} (${c.phase}, ${c.cycles} cycles)`}</text></g>`;
        })}
        <rect x=${peerX} y=${y} width="150" height="56" rx="8" class=${up ? 'node peer up' : 'node peer down'} />
        <text x=${peerX + 75} y=${y + 24} text-anchor="middle" class="node-name" data-testid=${`topology-array-${peer.name}`}>${peer.name}</text>
        <text x=${peerX + 75} y=${y + 42} text-anchor="middle" class="node-sub">${peer.address}</text>
      </g>`;
    })}
    <rect x=${self.x} y=${self.y} width=${self.w} height=${self.h} rx="8" class="node self" />
    <text x=${self.x + self.w / 2} y=${self.y + 24} text-anchor="middle" class="node-name" data-testid=${`topology-array-${estate.array.name}`}>${estate.array.name}</text>
    <text x=${self.x + self.w / 2} y=${self.y + 42} text-anchor="middle" class="node-sub">this array · ${estate.array.volumeCount} volumes</text>
  </svg>`;
}

function Body(props: PanelProps): VNode {
  const { estate } = props;
  return html`<div>
    ${estate.peers.length === 0 ? html`<p class="muted">No peers: add one with <code>tidemark peer add</code>.</p>` : html`<${Graph} ...${props} />`}
    <table class="compact">
      <thead><tr><th>peer</th><th>reached</th><th>link</th><th>round trip</th><th>sent</th><th>received</th><th>last error</th></tr></thead>
      <tbody>${estate.peers.map((p) => html`<tr data-testid=${`peer-row-${p.name}`}>
        <td>${p.name}</td><td class="muted" data-testid=${`peer-via-${p.name}`}>${p.via === null ? p.address : `via ${p.via}`}</td><td><${Badge} text=${p.link} /></td><td data-testid=${`peer-rtt-${p.name}`}>${p.link === 'up' ? rtt(props.snapshot.history?.peers[p.name]?.rttMs) : 'rtt –'}</td>
        <td>${rate(last(props.snapshot.history?.peers[p.name]?.sentBytesPerSecond))}</td>
        <td>${rate(last(props.snapshot.history?.peers[p.name]?.receivedBytesPerSecond))}</td>
        <td class="muted">${p.lastError ?? ''}</td></tr>`)}</tbody>
    </table>
    ${estate.groups.length > 0 ? html`<h3>Consistency groups</h3>
      <table class="compact"><thead><tr><th>group</th><th>coordinator</th><th>phase</th><th>tag</th><th>members</th><th>lag</th><th>problem</th></tr></thead>
      <tbody>${estate.groups.map((g) => html`<tr data-testid=${`group-row-${g.name}`}>
        <td>${g.name}</td><td>${g.coordinator}</td><td>${g.view?.phase ?? '–'}</td><td>${g.view?.tag ?? '–'}</td>
        <td>${g.view ? g.view.members.map((m) => m.member).join(', ') : '–'}</td>
        <td>${g.view ? `${g.view.lagSeconds.toFixed(1)} s` : '–'}</td>
        <td class="bad-text">${g.error ?? (g.view?.stalled ? `stalled: ${g.view.stalled.cause}` : '')}</td></tr>`)}</tbody></table>` : null}
  </div>`;
}

export const TOPOLOGY_PANEL: Panel = { id: 'topology', title: 'Topology', wide: true, Body };

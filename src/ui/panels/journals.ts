// Journals this array takes part in: its roles, how far the global sequence got on each step
// (issued, taken, sent, received, complete, applied), the lag it adds up to, the outgoing queue,
// a blocked queue, and each member (secondary array) with its link and the pairs it serves.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Panel, PanelProps } from './panel.js';
import { Badge } from '../widgets.js';
import { duration, size } from '../format.js';
import { listOf, type JournalBody, type PeerView } from '../store.js';

const SOURCE = { key: 'journals', path: '/v1/journals', field: 'journals' } as const;

const seq = (n: number | null): string => (n === null ? '–' : String(n));

/** A member is an array: this one (no link to it) or a peer whose link state is what matters. */
function Member({ name, self, peers }: { name: string; self: string; peers: readonly PeerView[] }): VNode {
  if (name === self) return html`<span>${name} <span class="muted">(this array)</span></span>`;
  const peer = peers.find((p) => p.name === name);
  return html`<span data-testid=${`journal-member-${name}`}>${name} <${Badge} text=${peer?.link ?? 'unknown'} /></span>`;
}

function Journal({ j, props }: { j: JournalBody; props: PanelProps }): VNode {
  const self = props.estate.array.name;
  const s = j.sequence;
  const o = j.outgoing;
  return html`<div class="kind" data-testid=${`journal-${j.name}`}>
    <h3>${j.name} <span class="muted small">${j.roles.join(' · ')} · sequencer ${j.sequencer} · tokens ${j.tokens}${j.recovered ? ' · recovered' : ''}</span></h3>
    <table class="compact">
      <thead><tr><th>issued</th><th>taken</th><th>sent</th><th>received</th><th>complete</th><th>applied</th><th>lag</th><th>outgoing queue</th><th>blocked</th></tr></thead>
      <tbody><tr>
        <td data-testid=${`journal-issued-${j.name}`}>${seq(s.issued)}</td><td>${seq(s.taken)}</td>
        <td data-testid=${`journal-sent-${j.name}`} data-seq=${s.sent ?? ''}>${seq(s.sent)}</td>
        <td>${seq(s.received)}</td><td>${seq(s.complete)}</td><td data-testid=${`journal-applied-${j.name}`} data-seq=${s.applied ?? ''}>${seq(s.applied)}</td>
        <td data-testid=${`journal-lag-${j.name}`}>${j.lag ? html`${j.lag.entries} entries · ${size(j.lag.bytes)}<div class="muted">${duration(j.lag.seconds)}</div>` : '–'}</td>
        <td>${o ? html`${o.waitingWrites} writes waiting · ${size(o.bufferedBytes)} buffered<div class="muted">${o.unackedMessages} unacked · ${o.sentMessages} sent (${size(o.sentDataBytes)})</div>` : '–'}</td>
        <td class="bad-text">${j.blocked ? `at ${j.blocked.sequence}: ${j.blocked.missing}` : ''}</td>
      </tr></tbody>
    </table>
    <table class="compact">
      <thead><tr><th>pair</th><th>role</th><th>primary</th><th>secondary</th><th>member</th></tr></thead>
      <tbody>${j.pairs.map((p) => html`<tr data-testid=${`journal-pair-${p.id}`}>
        <td>${p.id}</td><td>${p.role}</td><td>${p.primaryArray}/${p.primaryVolume}</td><td>${p.secondaryArray}/${p.secondaryVolume}</td>
        <td><${Member} name=${p.role === 'primary' ? p.secondaryArray : p.primaryArray} self=${self} peers=${props.estate.peers} /></td>
      </tr>`)}</tbody>
    </table>
    ${j.members.length > 0 ? html`<p class="small">members: ${j.members.map((m, i) => html`${i > 0 ? ', ' : ''}<${Member} name=${m} self=${self} peers=${props.estate.peers} />`)}</p>` : null}
  </div>`;
}

function Body(props: PanelProps): VNode {
  return html`<div>${listOf<JournalBody>(props.estate, SOURCE.key).map((j) => html`<${Journal} key=${j.name} j=${j} props=${props} />`)}</div>`;
}

export const JOURNALS_PANEL: Panel = {
  id: 'journals', title: 'Journals', wide: true, Body, sources: [SOURCE],
  shown: (estate) => listOf(estate, SOURCE.key).length > 0,
};

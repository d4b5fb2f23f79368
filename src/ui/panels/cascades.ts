// Cascade sessions (a clone of an R2 volume split and shipped to a far array in cycles): phase,
// cycles, what was shipped, the image the far site holds whole, when the next cycle is due; the
// commands to run a cycle now and to close the session.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Action, Panel, PanelProps } from './panel.js';
import { Badge } from '../widgets.js';
import { clock, size } from '../format.js';
import { listOf, type CascadeView } from '../store.js';

const SOURCE = { key: 'cascades', path: '/v1/cascades', field: 'cascades' } as const;

function actionsFor(c: CascadeView): Action[] {
  if (c.closing) return [];
  const path = `/v1/cascades/${encodeURIComponent(c.name)}`;
  return [
    { label: 'cycle now', method: 'POST', path: `${path}/cycle`, testId: `action-cascade-${c.name}-cycle`,
      question: `Run a cycle of cascade ${c.name} now? ${c.clone} is split from ${c.volume} and the image shipped to ${c.peer}/${c.remoteVolume} (right after the cycle under way, if one is).` },
    { label: 'close', method: 'DELETE', path, testId: `action-cascade-${c.name}-close`, dangerous: true,
      question: `Close cascade ${c.name}? Once ${c.peer} holds a whole image the session ends and its pair is deleted; ${c.peer}/${c.remoteVolume} keeps that image.` },
  ];
}

const when = (iso: string | null, none: string): string => (iso === null ? none : clock(iso));

function Body({ estate, propose }: PanelProps): VNode {
  return html`<table>
    <thead><tr><th>cascade</th><th>phase</th><th>cycles</th><th>shipping</th><th>shipped</th><th>far site consistent at</th><th>next cycle</th><th>problem</th><th></th></tr></thead>
    <tbody>${listOf<CascadeView>(estate, SOURCE.key).map((c) => html`<tr data-testid=${`cascade-row-${c.name}`}>
      <td><strong>${c.name}</strong><div class="muted">${c.volume} → ${c.clone} → ${c.peer}/${c.remoteVolume}</div></td>
      <td data-testid=${`cascade-phase-${c.name}`}><${Badge} text=${c.phase} />${c.closing ? html`<div class="muted small">closing</div>` : null}${c.busy ? html`<div class="muted small">${c.busy}</div>` : null}</td>
      <td data-testid=${`cascade-cycles-${c.name}`}>${c.cycles}</td>
      <td>${c.tracksShipping} tracks<div class="muted">${size(c.bytesShippingCycle)}</div></td>
      <td>${size(c.bytesShipped)}<div class="muted">last cycle ${size(c.bytesShippedLast)}</div></td>
      <td>${when(c.consistentAt, 'no whole image yet')}</td>
      <td>${when(c.nextDueAt, c.everyMs === null ? 'on command' : 'after this cycle')}</td>
      <td class="bad-text">${c.lastError ?? ''}${c.waitingFor ? html`<div class="muted">waiting for ${c.waitingFor}</div>` : null}</td>
      <td class="actions">${actionsFor(c).map((a) => html`<button class=${a.dangerous ? 'danger' : ''} data-testid=${a.testId} onClick=${() => propose(a)}>${a.label}</button>`)}</td>
    </tr>`)}</tbody>
  </table>`;
}

export const CASCADES_PANEL: Panel = {
  id: 'cascades', title: 'Cascades', wide: true, Body, sources: [SOURCE],
  shown: (estate) => listOf(estate, SOURCE.key).length > 0,
};

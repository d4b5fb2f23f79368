// The array's timeline, newest first: what changed and when.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Panel, PanelProps } from './panel.js';
import { clock } from '../format.js';

const SHOWN = 100;

function Body({ snapshot }: PanelProps): VNode {
  const events = snapshot.events.slice(-SHOWN).reverse();
  if (events.length === 0) return html`<p class="muted">No events yet.</p>`;
  return html`<ol class="events" data-testid="events">
    ${events.map((e) => html`<li key=${e.seq} class=${`event ${e.kind}`} data-testid="event" data-kind=${e.kind} data-subject=${e.subject ?? ''}>
      <time datetime=${e.at} title=${e.at}>${clock(e.at)}</time><span class="kind">${e.kind}</span><span class="message">${e.message}</span></li>`)}
  </ol>`;
}

export const EVENTS_PANEL: Panel = { id: 'events', title: 'Events', wide: true, Body };

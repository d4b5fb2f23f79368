// Every pair half on this array: state, mode, role, what it owes, lag now and over the hour,
// cycle numbers, resync progress with ETA, and the commands an operator gives a pair.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Action, Panel, PanelProps } from './panel.js';
import { Badge, ProgressBar, TimePlot } from '../widgets.js';
import { duration, size } from '../format.js';
import type { PairStatusView } from '../store.js';

function actionsFor(p: PairStatusView): Action[] {
  const path = (command: string): string => `/v1/pairs/${encodeURIComponent(p.pair)}/${command}`;
  const act = (command: string, question: string, dangerous = false): Action =>
    ({ label: command, question, method: 'POST', path: path(command), testId: `action-${p.pair}-${command}`, dangerous });
  const out: Action[] = [];
  if (['synchronized', 'synchronizing', 'partitioned'].includes(p.state)) {
    out.push(act('suspend', `Suspend pair ${p.pair}? Writes to ${p.role === 'R1' ? p.volume : p.remoteVolume} go on and are tracked; nothing is shipped to the replica until it is resumed.`));
  }
  if (['suspended', 'split'].includes(p.state)) out.push(act('resume', `Resume pair ${p.pair}? The tracks changed meanwhile are shipped and the replica is inconsistent until it is synchronized again.`));
  if (p.state !== 'failed-over') out.push(act('failover', `Fail pair ${p.pair} over? The replica (R2) becomes writable for its hosts and the source (R1) is write-disabled.`, true));
  if (p.state === 'failed-over') out.push(act('failback', `Fail pair ${p.pair} back? R2's changes are copied back and replication resumes R1 → R2.`, true));
  return out;
}

function Row({ p, props }: { p: PairStatusView; props: PanelProps }): VNode {
  const series = props.snapshot.history?.pairs[p.pair];
  const progress = props.snapshot.progress[p.pair];
  const resyncing = p.state === 'synchronizing' || p.state === 'restoring';
  const owedTracks = p.state === 'restoring' ? p.tracksToPull : p.tracksOwed;
  const c = p.cycles;
  return html`<tr data-testid=${`pair-row-${p.pair}`}>
    <td><strong>${p.pair}</strong><div class="muted">${p.volume} → ${p.peer}/${p.remoteVolume}</div></td>
    <td data-testid=${`pair-state-${p.pair}`}><${Badge} text=${p.state} />${p.lastError ? html`<div class="bad-text small">${p.lastError}</div>` : null}</td>
    <td>${p.role} · ${p.mode}${p.group ? html`<div class="muted">group ${p.group}</div>` : null}</td>
    <td data-testid=${`pair-owed-${p.pair}`} data-tracks=${owedTracks}>${owedTracks} tracks<div class="muted">${size(p.bytesOwed)}</div></td>
    <td>${duration(p.lagSeconds)}</td>
    <td>${series && series.t.length > 1 ? html`<${TimePlot} t=${series.t} values=${series.lagSeconds} label=${`lag of ${p.pair} (s)`} unit="s" />` : html`<span class="muted">collecting…</span>`}</td>
    <td>${c ? html`<span title="capture / transmit / applied">${c.captureCycle ?? '–'} / ${c.transmitCycle ?? '–'} / ${c.appliedCycle}</span>` : '–'}</td>
    <td>${resyncing && progress ? html`<${ProgressBar} percent=${progress.percent}
        label=${`${progress.percent}% · ${owedTracks} tracks left · ETA ${duration(progress.etaSeconds)}`} />` : html`<span class="muted">–</span>`}</td>
    <td class="actions">${actionsFor(p).map((a) => html`<button class=${a.dangerous ? 'danger' : ''} data-testid=${a.testId} onClick=${() => props.propose(a)}>${a.label}</button>`)}</td>
  </tr>`;
}

function Body(props: PanelProps): VNode {
  const pairs = props.estate.pairs;
  if (pairs.length === 0) return html`<p class="muted">No pairs on this array.</p>`;
  return html`<table>
    <thead><tr><th>pair</th><th>state</th><th>role · mode</th><th>owed</th><th>lag</th><th>lag, last hour</th><th>cycles</th><th>resync</th><th></th></tr></thead>
    <tbody>${pairs.map((p) => html`<${Row} key=${p.pair} p=${p} props=${props} />`)}</tbody>
  </table>`;
}

export const PAIRS_PANEL: Panel = { id: 'pairs', title: 'Pairs', wide: true, Body };

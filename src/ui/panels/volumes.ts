// Volumes with their host I/O over the hour, and the clone sessions of each with copy progress
// and the split / reestablish commands.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Action, Panel, PanelProps } from './panel.js';
import { Badge, ProgressBar, Sparkline } from '../widgets.js';
import { duration, last, rate, size } from '../format.js';
import type { CloneStatus } from '../store.js';

function cloneActions(s: CloneStatus): Action[] {
  const base = `/v1/clones/${encodeURIComponent(s.std)}/${encodeURIComponent(s.clone)}`;
  const out: Action[] = [];
  if (s.state === 'synchronized') {
    out.push({ label: 'split', method: 'POST', path: `${base}/split`, body: {}, testId: `action-${s.std}-${s.clone}-split`,
      question: `Split ${s.clone} from ${s.std}? ${s.clone} keeps ${s.std}'s image of this instant and becomes ready to its own hosts.` });
  }
  if (s.state === 'split') {
    out.push({ label: 'reestablish', method: 'POST', path: `${base}/reestablish`, testId: `action-${s.std}-${s.clone}-reestablish`, dangerous: true,
      question: `Reestablish ${s.clone} to ${s.std}? ${s.clone} becomes not ready to its hosts and its changes since the split are overwritten.` });
  }
  return out;
}

function Body({ estate, snapshot, propose }: PanelProps): VNode {
  if (estate.volumes.length === 0) return html`<p class="muted">No volumes: create one with <code>tidemark volume create</code>.</p>`;
  return html`<table>
    <thead><tr><th>volume</th><th>size</th><th>state</th><th>connections</th><th>IOPS</th><th>throughput</th><th>clone sessions</th></tr></thead>
    <tbody>${estate.volumes.map((v) => {
      const io = snapshot.history?.volumes[v.name];
      const iops = io ? io.t.map((_t, i) => io.readOpsPerSecond[i]! + io.writeOpsPerSecond[i]!) : [];
      const bytes = io ? io.t.map((_t, i) => io.readBytesPerSecond[i]! + io.writeBytesPerSecond[i]!) : [];
      const sessions = estate.clones.filter((s) => s.std === v.name);
      return html`<tr data-testid=${`volume-row-${v.name}`}>
        <td><strong>${v.name}</strong></td><td>${size(v.sizeBytes)}</td><td><${Badge} text=${v.state} /></td><td>${v.exports}</td>
        <td><${Sparkline} values=${iops} title=${`IOPS of ${v.name}`} /><div class="small">${Math.round(last(iops) ?? 0)} /s</div></td>
        <td><${Sparkline} values=${bytes} title=${`throughput of ${v.name}`} /><div class="small">${rate(last(bytes))}</div></td>
        <td>${sessions.length === 0 ? html`<span class="muted">–</span>` : sessions.map((s) => html`<div class="clone" data-testid=${`clone-${s.std}-${s.clone}`}>
          ${s.clone} <${Badge} text=${s.state} />
          ${s.tracksToCopy > 0 ? html`<${ProgressBar} percent=${s.percent} label=${`${s.percent}% · ${rate(s.bytesPerSecond)} · ETA ${duration(s.etaSeconds)}`} />` : null}
          ${cloneActions(s).map((a) => html`<button class=${a.dangerous ? 'danger' : ''} data-testid=${a.testId} onClick=${() => propose(a)}>${a.label}</button>`)}
        </div>`)}</td>
      </tr>`;
    })}</tbody>
  </table>`;
}

export const VOLUMES_PANEL: Panel = { id: 'volumes', title: 'Volumes and clones', wide: true, Body };

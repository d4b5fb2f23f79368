// Volumes moving: migrations (a volume onto another volume's storage, hosts writing on) and
// imports (a volume filled from another NBD server, served from the start), with state, tracks
// left, rate and ETA, and the commands each state allows: cutover, detach, reattach, finish.
import { html } from 'htm/preact';
import type { VNode } from 'preact';
import type { Action, Panel, PanelProps } from './panel.js';
import { Badge, ProgressBar } from '../widgets.js';
import { duration, rate } from '../format.js';
import { listOf, type ImportStatus, type MigrationStatus } from '../store.js';

const MIGRATIONS = { key: 'migrations', path: '/v1/migrations', field: 'migrations' } as const;
const IMPORTS = { key: 'imports', path: '/v1/imports', field: 'imports' } as const;

function migrationActions(m: MigrationStatus): Action[] {
  const act = (verb: 'cutover' | 'detach' | 'reattach' | 'finish', question: string, dangerous = false): Action => ({
    label: verb, method: 'POST', path: `/v1/migrations/${encodeURIComponent(m.volume)}/${verb}`, testId: `action-migration-${m.volume}-${verb}`, question, dangerous,
  });
  const out: Action[] = [];
  if (m.state === 'copying' && m.manualCutover) {
    out.push(act('cutover', `Cut ${m.volume} over? Its hosts are served from the new storage (${m.target}'s) from now on; the old storage is still written until detached or finished.`));
  }
  if (m.state === 'cut-over') out.push(act('detach', `Detach ${m.volume}'s old storage? It is no longer written; the tracks written meanwhile are recorded for a reattach.`));
  if (m.state === 'detached') out.push(act('reattach', `Reattach ${m.volume}'s old storage? The tracks written while detached are replayed onto it.`));
  if (m.state === 'cut-over' || m.state === 'detached') {
    out.push(act('finish', `Finish the migration of ${m.volume}? Its old storage is dropped (the volume ${m.target} holding it is deleted); there is no way back.`, true));
  }
  return out;
}

function importActions(i: ImportStatus): Action[] {
  if (i.state !== 'copied') return [];
  return [{ label: 'finish', method: 'POST', path: `/v1/imports/${encodeURIComponent(i.name)}/finish`, testId: `action-import-${i.name}-finish`,
    question: `Finish the import of ${i.name}? The source ${i.source} is let go${i.writeBack ? ' (after a flush of the writes sent back to it)' : ''}; ${i.name} no longer depends on it.` }];
}

const Buttons = ({ actions, propose }: { actions: Action[]; propose: PanelProps['propose'] }): VNode =>
  html`<td class="actions">${actions.map((a) => html`<button class=${a.dangerous ? 'danger' : ''} data-testid=${a.testId} onClick=${() => propose(a)}>${a.label}</button>`)}</td>`;

const progress = (percent: number, tracksLeft: number, bytesPerSecond: number, eta: number | null): VNode =>
  html`<${ProgressBar} percent=${percent} label=${`${percent}% · ${tracksLeft} tracks left · ${rate(bytesPerSecond)} · ETA ${duration(eta)}`} />`;

function Body({ estate, propose }: PanelProps): VNode {
  const migrations = listOf<MigrationStatus>(estate, MIGRATIONS.key);
  const imports = listOf<ImportStatus>(estate, IMPORTS.key);
  return html`<div>
    ${migrations.length > 0 ? html`<table>
      <thead><tr><th>migration</th><th>state</th><th>served from</th><th>tracks left</th><th>progress</th><th>replayed</th><th></th></tr></thead>
      <tbody>${migrations.map((m) => html`<tr data-testid=${`migration-row-${m.volume}`}>
        <td><strong>${m.volume}</strong><div class="muted">onto ${m.target}${m.manualCutover ? ' · manual cutover' : ''}</div></td>
        <td data-testid=${`migration-state-${m.volume}`}><${Badge} text=${m.state} /></td>
        <td>${m.servedFrom} storage</td>
        <td data-testid=${`migration-left-${m.volume}`} data-tracks=${m.tracksLeft}>${m.tracksLeft} of ${m.trackCount}</td>
        <td>${m.state === 'finished' ? html`<span class="muted">–</span>` : progress(m.percent, m.tracksLeft, m.bytesPerSecond, m.etaSeconds)}</td>
        <td>${m.tracksReplayed}</td>
        <${Buttons} actions=${migrationActions(m)} propose=${propose} />
      </tr>`)}</tbody></table>` : null}
    ${imports.length > 0 ? html`<table>
      <thead><tr><th>import</th><th>state</th><th>source</th><th>tracks left</th><th>progress</th><th>problem</th><th></th></tr></thead>
      <tbody>${imports.map((i) => html`<tr data-testid=${`import-row-${i.name}`}>
        <td><strong>${i.name}</strong>${i.writeBack ? html`<div class="muted">write-back</div>` : null}</td>
        <td data-testid=${`import-state-${i.name}`}><${Badge} text=${i.state} /></td>
        <td>${i.source} <${Badge} text=${i.sourceConnected ? 'connected' : 'disconnected'} /></td>
        <td data-testid=${`import-left-${i.name}`} data-tracks=${i.tracksLeft}>${i.tracksLeft} of ${i.trackCount}</td>
        <td>${i.state === 'finished' ? html`<span class="muted">–</span>` : progress(i.percent, i.tracksLeft, i.bytesPerSecond, i.etaSeconds)}</td>
        <td class="bad-text">${i.lastError ?? ''}</td>
        <${Buttons} actions=${importActions(i)} propose=${propose} />
      </tr>`)}</tbody></table>` : null}
  </div>`;
}

export const MIGRATIONS_PANEL: Panel = {
  id: 'migrations', title: 'Migrations and imports', wide: true, Body, sources: [MIGRATIONS, IMPORTS],
  shown: (estate) => listOf(estate, MIGRATIONS.key).length + listOf(estate, IMPORTS.key).length > 0,
};

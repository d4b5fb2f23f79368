// The dashboard: a header, the panels, the confirmation step for commands, and the token prompt
// the page shows only when the API answers 401.
import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import type { VNode } from 'preact';
import { api, ApiError, storeToken, TokenNeeded } from './api.js';
import { Store, type Snapshot } from './store.js';
import type { Action, Panel } from './panels/panel.js';
import { TOPOLOGY_PANEL } from './panels/topology.js';
import { PAIRS_PANEL } from './panels/pairs.js';
import { VOLUMES_PANEL } from './panels/volumes.js';
import { EVENTS_PANEL } from './panels/events.js';
import { JOURNALS_PANEL } from './panels/journals.js';
import { MIGRATIONS_PANEL } from './panels/migrations.js';
import { CASCADES_PANEL } from './panels/cascades.js';
import { duration } from './format.js';

/** The panels, in page order: a new kind of object is one more entry. */
const PANELS: readonly Panel[] = [TOPOLOGY_PANEL, PAIRS_PANEL, JOURNALS_PANEL, CASCADES_PANEL, MIGRATIONS_PANEL, VOLUMES_PANEL, EVENTS_PANEL];

const store = new Store(PANELS.flatMap((panel) => panel.sources ?? []));

function TokenPrompt({ message }: { message: string | null }): VNode {
  const [token, setToken] = useState('');
  return html`<form class="token" data-testid="token-form" onSubmit=${(e: Event) => {
    e.preventDefault();
    if (token.trim() === '') return;
    storeToken(token);
    store.start();
  }}>
    <h2>This array's API needs its token</h2>
    <p>${message}</p>
    <p class="muted">It is in the array's data directory, <code>DATA/api-token</code> (or the read-only <code>DATA/api-token.read</code>). It is kept for this browser tab only.</p>
    <input type="password" autocomplete="off" placeholder="API token" value=${token} onInput=${(e: Event) => setToken((e.target as HTMLInputElement).value)} data-testid="token-input" />
    <button type="submit">Use token</button>
  </form>`;
}

function Confirm({ action, onDone }: { action: Action; onDone: () => void }): VNode {
  const [busy, setBusy] = useState(false);
  const [refusal, setRefusal] = useState<string | null>(null);
  const go = async (): Promise<void> => {
    setBusy(true);
    setRefusal(null);
    try {
      await api(action.method, action.path, action.body);
      onDone();
      void store.refresh();
    } catch (error) {
      if (error instanceof TokenNeeded) {
        onDone();
        store.start();
        return;
      }
      setRefusal(error instanceof ApiError ? `${error.message} [${error.code}]` : String(error));
    } finally {
      setBusy(false);
    }
  };
  return html`<div class="overlay" role="dialog" aria-modal="true" aria-labelledby="confirm-title" data-testid="confirm">
    <div class="dialog">
      <h2 id="confirm-title">${action.label}</h2>
      <p>${action.question}</p>
      ${refusal ? html`<p class="refusal" role="alert" data-testid="refusal">The array refused: ${refusal}</p>` : null}
      <div class="buttons">
        <button onClick=${onDone} data-testid="confirm-no">Cancel</button>
        <button class=${action.dangerous ? 'danger' : 'primary'} disabled=${busy} onClick=${() => void go()} data-testid="confirm-yes">${action.label}</button>
      </div>
    </div>
  </div>`;
}

function App(): VNode {
  const [snapshot, setSnapshot] = useState<Snapshot>(store.current);
  const [pending, setPending] = useState<Action | null>(null);
  useEffect(() => store.subscribe(setSnapshot), []);
  const { estate } = snapshot;
  if (snapshot.tokenNeeded) return html`<${TokenPrompt} message=${snapshot.error} />`;
  return html`<div>
    <header>
      <h1>tidemark <span data-testid="array-name">${estate?.array.name ?? ''}</span></h1>
      ${estate ? html`<span class="muted">version ${estate.array.version} · up ${duration(estate.array.uptimeSeconds)} · ${estate.pairs.length} pairs · ${estate.volumes.length} volumes</span>` : null}
      ${snapshot.error ? html`<span class="bad-text" role="status">${snapshot.error}</span>` : null}
    </header>
    ${estate ? html`<main class="grid">${PANELS.filter((panel) => panel.shown?.(estate) ?? true).map((panel) => html`<section class=${panel.wide ? 'panel wide' : 'panel'} data-testid=${`panel-${panel.id}`}>
      <h2>${panel.title}</h2><${panel.Body} snapshot=${snapshot} estate=${estate} propose=${setPending} /></section>`)}</main>`
      : html`<p class="loading">${snapshot.error ?? 'loading…'}</p>`}
    ${pending ? html`<${Confirm} action=${pending} onDone=${() => setPending(null)} />` : null}
  </div>`;
}

const root = document.getElementById('app')!;
root.textContent = ''; // the page's "loading" line, which Preact would otherwise render beside
render(html`<${App} />`, root);
store.start();

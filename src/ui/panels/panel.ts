// What every panel is: a title and a view of the snapshot. A new kind of object (journals,
// cascades, migrations) is one more module here and one more entry in main.ts's PANELS: the
// panel names the API lists it needs (sources) and when it is shown.
import type { VNode } from 'preact';
import type { Estate, ListSource, Snapshot } from '../store.js';

/** A command a panel offers; the page asks for confirmation before it sends it. */
export interface Action {
  /** Button text: the verb. */
  readonly label: string;
  /** What the confirmation says will happen. */
  readonly question: string;
  readonly method: 'POST' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly body?: unknown;
  /** Stable name for tests: `action-<object>-<verb>`. */
  readonly testId: string;
  /** A failover or failback changes which side hosts may write. */
  readonly dangerous?: boolean;
}

export interface PanelProps {
  readonly snapshot: Snapshot;
  readonly estate: Estate;
  readonly propose: (action: Action) => void;
}

export interface Panel {
  readonly id: string;
  readonly title: string;
  /** Spans the full width of the grid. */
  readonly wide?: boolean;
  readonly Body: (props: PanelProps) => VNode | null;
  /** The API lists this panel shows, fetched with the estate (see ListSource). */
  readonly sources?: readonly ListSource[];
  /** Whether the panel is on the page now; a kind the array has none of is left out. */
  readonly shown?: (estate: Estate) => boolean;
}

// Prometheus gauges for the journals an array takes part in (read from `journal show` at scrape time).
import { Gauge, type Registry } from 'prom-client';
import type { JournalStatus } from './journal-status.js';

const STAGES = ['issued', 'taken', 'sent', 'received', 'complete', 'applied'] as const;

export function registerJournalMetrics(registry: Registry, journals: () => readonly JournalStatus[]): void {
  const registers = [registry];
  new Gauge({
    name: 'tidemark_journal_sequence', help: 'Highest journal sequence number per stage on this array (issued by the sequencer, taken by writes here, sent with data, received, complete, applied).',
    labelNames: ['journal', 'stage'], registers,
    collect() {
      this.reset();
      for (const j of journals()) for (const s of STAGES) { const v = j.sequence[s]; if (v !== null) this.set({ journal: j.name, stage: s }, v); }
    },
  });
  const lag = (name: string, help: string, pick: (j: JournalStatus) => number | null | undefined): void => {
    new Gauge({
      name, help, labelNames: ['journal'], registers,
      collect() {
        this.reset();
        for (const j of journals()) { const v = pick(j); if (v !== null && v !== undefined) this.set({ journal: j.name }, v); }
      },
    });
  };
  lag('tidemark_journal_lag_entries', 'Secondary: entries queued here and not yet applied.', (j) => j.lag?.entries);
  lag('tidemark_journal_lag_bytes', 'Secondary: bytes queued here and not yet applied.', (j) => j.lag?.bytes);
  lag('tidemark_journal_lag_seconds', 'Secondary: age of the newest applied write while entries wait.', (j) => j.lag?.seconds);
  lag('tidemark_journal_outgoing_bytes', 'Primary: captured bytes not yet sent.', (j) => j.outgoing?.bufferedBytes);
  lag('tidemark_journal_waiting_writes', 'Primary: host writes waiting for sequence numbers.', (j) => j.outgoing?.waitingWrites);
  lag('tidemark_journal_unacked_messages', 'Primary: messages sent and not yet durable at their secondary.', (j) => j.outgoing?.unackedMessages);
}

// tidemark events: the array's event timeline (link down/up, pair state changes, failovers, group
// evictions, clone state changes); --follow keeps printing new ones as they happen (long poll).
import type { Command } from 'commander';
import type { ApiClient } from './api-client.js';
import { printJson, type GlobalOptions } from './output.js';
import { invalidArgument } from '../core/errors.js';
import type { EventPageView, EventView } from '../adapters/http/observe-routes.js';

type Run = (client: ApiClient, globals: GlobalOptions) => Promise<void>;

/** Long enough to keep requests few, well under the API's and the CLI's request timeouts. */
const FOLLOW_WAIT_MS = 25_000;

function eventLine(e: EventView): string {
  const time = e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return `${time}  #${e.seq}  ${e.kind.padEnd(5)}  ${e.message}`;
}

export function registerEventsCommand(program: Command, run: (action: Run) => Promise<void>): void {
  program.command('events')
    .description('the array\'s event timeline (the last 1,000): links down/up, pair state changes and commands, failovers, group evictions, clone sessions')
    .option('--follow', 'keep printing new events as they happen, until interrupted (with --json: one JSON object per line)')
    .option('--since <seq>', 'only events after this sequence number', '0')
    .option('--limit <n>', 'the last N events (before following)')
    .action((opts: { follow?: boolean; since: string; limit?: string }) => run(async (client, globals) => {
      let since = Number(opts.since);
      if (!Number.isSafeInteger(since) || since < 0) throw invalidArgument('--since must be a whole number ≥ 0');
      const limit = opts.limit === undefined ? undefined : Number(opts.limit);
      if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1 && limit <= 1000)) throw invalidArgument('--limit must be a whole number from 1 to 1000');
      const page = await client.request<EventPageView>('GET', `/v1/events?since=${since}`);
      const shown = limit === undefined ? page.events : page.events.slice(-limit);
      if (globals.json && !opts.follow) {
        printJson({ ...page, events: shown });
        return;
      }
      const emit = (e: EventView): void => {
        process.stdout.write(globals.json ? `${JSON.stringify(e)}\n` : `${eventLine(e)}\n`);
      };
      if (!globals.json && page.missed > 0) process.stdout.write(`(${page.missed} older events no longer kept)\n`);
      for (const e of shown) emit(e);
      if (!globals.json && !opts.follow && shown.length === 0) process.stdout.write('no events\n');
      since = page.next;
      while (opts.follow) {
        const next = await client.request<EventPageView>('GET', `/v1/events?since=${since}&waitMs=${FOLLOW_WAIT_MS}`);
        if (!globals.json && next.missed > 0) process.stdout.write(`(${next.missed} events missed)\n`);
        for (const e of next.events) emit(e);
        since = next.next;
      }
    }));
}

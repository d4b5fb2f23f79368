// `tidemark … wait`: poll a status until it reaches a state, with a progress bar on a terminal.
// Where the API can hold a GET until a state is reached (a long poll: clone sessions), the wait
// asks that way and returns the moment the state is reached rather than on the next poll.
// One loop for every wait command (clone wait, pair wait, and the journal, cascade and migration
// waits to come), so they share options, output, --json and timeout behaviour.
import type { Command } from 'commander';
import type { SingleBar } from 'cli-progress';
import { invalidArgument, type TidemarkError } from '../core/errors.js';
import { printJson, type GlobalOptions } from './output.js';

const POLL_MS = 200;
/** How long one long poll may be held: short enough for the progress bar to move, when there is one. */
const LONG_POLL_WITH_BAR_MS = 250;
const LONG_POLL_MS = 10_000;

export interface WaitOptions {
  readonly until: string;
  readonly timeoutSeconds: number;
}

/** Adds `--until STATE` (one of `targets`) and `--timeout SECONDS` to a wait command. */
export function withWaitOptions(command: Command, targets: readonly string[]): Command {
  return command
    .requiredOption('--until <state>', targets.join(' | '))
    .option('--timeout <seconds>', 'give up after this long (exit 1)', '3600');
}

/** The options `withWaitOptions` added, checked. */
export function parseWaitOptions(opts: { until: string; timeout: string }, targets: readonly string[]): WaitOptions {
  if (!targets.includes(opts.until)) throw invalidArgument(`--until must be one of ${targets.join(', ')}`);
  const timeoutSeconds = Number(opts.timeout);
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw invalidArgument('--timeout must be a positive number of seconds');
  return { until: opts.until, timeoutSeconds };
}

export interface Progress {
  readonly done: number;
  readonly total: number;
  /** Values for the bar format's other {tokens}. */
  readonly payload: Record<string, string | number>;
}

export interface WaitSpec<T> {
  /**
   * The current status, from the API. A spec whose API long-polls is given the target state and
   * how long the API may hold the answer; others ignore both and are asked again after a pause.
   */
  poll(until: string, waitMs: number): Promise<T>;
  readonly longPoll?: boolean;
  state(status: T): string;
  /** cli-progress format of the bar shown on a terminal (not with --json). */
  readonly barFormat: string;
  progress(status: T): Progress;
  /** The line printed when the state is reached (without --json, which prints the status). */
  reached(status: T): string;
  /** The error when the time is up. */
  timedOut(status: T, options: WaitOptions): TidemarkError;
}

export async function waitWithProgress<T>(globals: GlobalOptions, options: WaitOptions, spec: WaitSpec<T>): Promise<void> {
  const deadline = Date.now() + options.timeoutSeconds * 1000;
  // The bar's library is loaded only when a bar is drawn: every CLI process would pay for it otherwise.
  const bar: SingleBar | undefined = !globals.json && process.stderr.isTTY
    ? new (await import('cli-progress')).SingleBar({ format: spec.barFormat, stream: process.stderr, hideCursor: true })
    : undefined;
  let started = false;
  try {
    for (;;) {
      const waitMs = Math.max(0, Math.min(bar ? LONG_POLL_WITH_BAR_MS : LONG_POLL_MS, deadline - Date.now()));
      const status = await spec.poll(options.until, waitMs);
      if (bar) {
        const { done, total, payload } = spec.progress(status);
        if (!started) bar.start(total, done, payload);
        started = true;
        bar.setTotal(total);
        bar.update(done, payload);
      }
      if (spec.state(status) === options.until) {
        if (started) bar?.stop();
        started = false;
        if (globals.json) printJson(status);
        else process.stdout.write(spec.reached(status));
        return;
      }
      if (Date.now() > deadline) throw spec.timedOut(status, options);
      if (!spec.longPoll) await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    if (started) bar?.stop();
  }
}

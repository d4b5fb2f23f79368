// `tidemark … wait`: poll a status until it reaches a state, with a progress bar on a terminal.
// One loop for every wait command (clone wait, pair wait, and the journal, cascade and migration
// waits to come), so they share options, output, --json and timeout behaviour.
import type { Command } from 'commander';
import { SingleBar } from 'cli-progress';
import { invalidArgument, type TidemarkError } from '../core/errors.js';
import { printJson, type GlobalOptions } from './output.js';

const POLL_MS = 200;

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
  /** The current status, from the API. */
  poll(): Promise<T>;
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
  const bar = !globals.json && process.stderr.isTTY
    ? new SingleBar({ format: spec.barFormat, stream: process.stderr, hideCursor: true })
    : undefined;
  let started = false;
  try {
    for (;;) {
      const status = await spec.poll();
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
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    if (started) bar?.stop();
  }
}

// How commands print: JSON for machines (--json), aligned tables for people, errors to stderr.
import { isTidemarkError } from '../core/errors.js';

export interface GlobalOptions {
  readonly json?: boolean;
  readonly array?: string;
  readonly tokenFile?: string;
  readonly ca?: string;
  readonly via?: string;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  process.stdout.write(`${line(headers)}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

export function printFields(fields: Array<[string, string | number | boolean]>): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [key, value] of fields) process.stdout.write(`${`${key}:`.padEnd(width + 2)}${value}\n`);
}

/** Prints an error the same way for every command and returns the exit code. */
export function reportError(error: unknown, json: boolean): number {
  if (isTidemarkError(error)) {
    if (json) process.stderr.write(`${JSON.stringify({ error: error.toJSON() })}\n`);
    else process.stderr.write(`error: ${error.message} [${error.code}]\n`);
    return 1;
  }
  process.stderr.write(`error: ${(error as Error).stack ?? String(error)}\n`);
  return 1;
}

// Durations on the command line: `250ms`, `2s`, `1.5m`, `1h` (a bare number is milliseconds).
import { invalidArgument } from '../core/errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDurationMs(text: string, option: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const ms = match ? Math.round(Number(match[1]) * UNIT_MS[match[2] ?? 'ms']!) : NaN;
  if (!Number.isSafeInteger(ms)) throw invalidArgument(`${option} takes a duration such as 500ms, 2s, 1m or 1h (got ${JSON.stringify(text)})`);
  return ms;
}

export function formatDurationMs(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

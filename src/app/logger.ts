// Structured JSON logs (one object per line) for the daemon and the demo. Writes are synchronous so
// the last lines before an exit or a crash are never lost in a buffer.
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** A file to append to instead of stdout. */
  readonly file?: string;
  /** Fields on every line (e.g. the array name). */
  readonly base?: Record<string, unknown>;
}

/** A string is shorthand for `{ base: { name } }`. */
export function createLogger(nameOrOptions: string | LoggerOptions = {}): Logger {
  const options: LoggerOptions = typeof nameOrOptions === 'string' ? { base: { name: nameOrOptions } } : nameOrOptions;
  const destination = pino.destination({ dest: options.file ?? 1, sync: true, mkdir: options.file !== undefined });
  return pino({
    level: options.level ?? 'info',
    base: { pid: process.pid, ...options.base },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, destination);
}

// How figures read on the page: binary sizes (the CLI's way), rates, durations, times.
import { formatBinarySize } from '../core/lib/binary-size.js';

export const size = formatBinarySize;

export const rate = (bytesPerSecond: number | null | undefined): string =>
  bytesPerSecond === null || bytesPerSecond === undefined ? '–' : `${size(Math.round(bytesPerSecond))}/s`;

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const clock = (iso: string): string => new Date(iso).toLocaleTimeString(undefined, { hour12: false });

export const last = (values: readonly number[] | undefined): number | null =>
  values && values.length > 0 ? values[values.length - 1]! : null;

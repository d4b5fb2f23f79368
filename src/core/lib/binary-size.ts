// How a byte count reads for people, on the CLI and on the dashboard alike: binary (IEC) units,
// whole numbers as they are, others to one decimal ("64 KiB", "1.5 GiB"). No imports, so the
// dashboard's bundle can take it too.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBinarySize(bytes: number): string {
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < UNITS.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${Number.isInteger(value) ? value : value.toFixed(1)} ${UNITS[i]}`;
}

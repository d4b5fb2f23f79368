// TIDEMARK_BENCH_PROFILE=DIR: a daemon a bench starts runs under `node --cpu-prof`, writing its
// profile into DIR when it stops (NODE_OPTIONS may not carry --cpu-prof). One rule for the benches'
// own daemons (bench/lib/processes.ts) and those the network-namespace harness starts.
import { readFileSync } from 'node:fs';

/** The node flags on a launcher's `#!/usr/bin/env -S node …` line (bin/tidemark's heap flag). */
export function shebangNodeFlags(command: string): string[] {
  const first = readFileSync(command, 'utf8').split('\n', 1)[0] ?? '';
  const flags = /^#!\S*env -S node((?: \S+)*)\s*$/.exec(first)?.[1] ?? '';
  return flags.split(' ').filter((f) => f !== '');
}

export function underCpuProfile(command: string, args: readonly string[]): [string, string[]] {
  const dir = process.env.TIDEMARK_BENCH_PROFILE;
  if (!dir) return [command, [...args]];
  // Run as the launcher would, with its flags: a profile of a differently tuned heap misleads.
  return [process.execPath, [...shebangNodeFlags(command), '--cpu-prof', `--cpu-prof-dir=${dir}`, command, ...args]];
}

// TIDEMARK_BENCH_PROFILE=DIR: a daemon a bench starts runs under `node --cpu-prof`, writing its
// profile into DIR when it stops (NODE_OPTIONS may not carry --cpu-prof). One rule for the benches'
// own daemons (bench/lib/processes.ts) and those the network-namespace harness starts.
export function underCpuProfile(command: string, args: readonly string[]): [string, string[]] {
  const dir = process.env.TIDEMARK_BENCH_PROFILE;
  if (!dir) return [command, [...args]];
  return [process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, command, ...args]];
}

// TIDEMARK_BENCH_PROFILE=DIR: a daemon a bench starts runs under `node --cpu-prof`, writing its
// profile into DIR when it stops. The flags reach node through the launcher's TIDEMARK_NODE_FLAGS
// (NODE_OPTIONS may not carry --cpu-prof), so the daemon keeps the launcher's own flags: a profile
// of a differently tuned heap misleads. One rule for the benches' own daemons (bench/lib/processes.ts)
// and those the network-namespace harness starts.

/** The environment to start a daemon with: this process's, plus the profiling flags when asked for. */
export function profiledEnv(): NodeJS.ProcessEnv {
  const dir = process.env.TIDEMARK_BENCH_PROFILE;
  if (!dir) return process.env;
  // The launcher splits TIDEMARK_NODE_FLAGS into words.
  if (/\s/.test(dir)) throw new Error(`TIDEMARK_BENCH_PROFILE must be a path without spaces: ${JSON.stringify(dir)}`);
  return { ...process.env, TIDEMARK_NODE_FLAGS: `--cpu-prof --cpu-prof-dir=${dir}` };
}

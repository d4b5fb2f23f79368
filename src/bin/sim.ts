// The seed runner: `npm run sim -- [--suite volume|pair|cycles|link|route] --seeds N [--start K] [--seed S] [--verbose] [--trace]`.
// Runs the volume (default), remote-pair, async-cycles/consistency-group or link simulation for each seed, prints every failure with a command that reproduces
// it, then a summary line. Exits 1 when any seed fails.
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { reproduceCommand, runSeeds, seedRange } from '../sim/seed-runner.js';
import { describeConfig } from '../sim/volume/config.js';
import { describePairConfig, runPairSeed } from '../sim/pair/pair-sim.js';
import { describeCyclesConfig, runCyclesSeed } from '../sim/cycles/cycles-sim.js';
import { runRouteSeed } from '../sim/route-sim.js';
import { runLinkSeed } from '../sim/link-sim.js';

function parseSeed(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`${what} must be an integer from 0 to 4294967295, got ${text}`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string' },
      seed: { type: 'string' },
      start: { type: 'string' },
      verbose: { type: 'boolean', short: 'v', default: false },
      trace: { type: 'boolean', default: false },
      suite: { type: 'string', default: 'volume' },
    },
    strict: true,
  });
  if (!['volume', 'pair', 'cycles', 'link', 'route'].includes(values.suite)) throw new Error('--suite must be volume, pair, cycles, link or route');
  let seeds: Iterable<number>;
  if (values.seed !== undefined) {
    seeds = [parseSeed(values.seed, '--seed')];
  } else {
    const count = parseSeed(values.seeds ?? '100', '--seeds');
    const start = values.start !== undefined ? parseSeed(values.start, '--start') : (Date.now() >>> 0);
    console.log(`tidemark sim: ${count} seeds from ${start}`);
    seeds = seedRange(start, count);
  }
  const single = values.seed !== undefined;
  if (values.suite === 'pair') return runSuite(PAIR_SUITE, seeds, single, values.verbose === true, values.trace === true);
  if (values.suite === 'cycles') return runSuite(CYCLES_SUITE, seeds, single, values.verbose === true, values.trace === true);
  if (values.suite === 'link') return runSuite(LINK_SUITE, seeds, single, values.verbose === true, false);
  if (values.suite === 'route') return runSuite(ROUTE_SUITE, seeds, single, values.verbose === true, false);
  const summary = await runSeeds(seeds, {
    now: () => performance.now(),
    ...(values.trace ? { trace: (line: string) => console.log(line) } : {}),
    onResult: (r) => {
      if (!r.ok) {
        console.log(`FAIL seed ${r.seed}: ${r.failure}`);
        console.log(`  config: ${describeConfig(r.config)}`);
        console.log(`  reproduce: ${reproduceCommand(r.seed)}`);
      } else if (values.verbose || single) {
        console.log(`ok   seed ${r.seed}: ${r.hostOps} ops, ${r.crashes} crashes, ${r.events} events, ` +
          `${r.virtualMs.toFixed(1)} virtual ms (${describeConfig(r.config)})`);
      }
    },
  });
  const seconds = summary.elapsedMs / 1000;
  console.log(`${summary.failures.length === 0 ? 'PASS' : 'FAIL'}: ${summary.seeds} seeds, ` +
    `${summary.failures.length} failed, ${summary.hostOps} host ops, ${summary.crashes} crashes, ` +
    `${seconds.toFixed(1)} s (${(summary.seeds / Math.max(seconds, 1e-9)).toFixed(1)} seeds/s)` +
    (summary.failures.length > 0 ? `; failing seeds: ${summary.failures.map((f) => f.seed).join(' ')}` : ''));
  return summary.failures.length === 0 ? 0 : 1;
}

/** One seeded suite beyond the volume one: how to run a seed, describe its config and summarize a passing run. */
interface SeedSuite<R extends { readonly ok: boolean; readonly failure?: string }> {
  readonly name: string;
  run(seed: number, trace: ((line: string) => void) | undefined): Promise<R>;
  config(result: R): string;
  passed(result: R): string;
}

const PAIR_SUITE: SeedSuite<Awaited<ReturnType<typeof runPairSeed>>> = {
  name: 'pair',
  run: (seed, trace) => runPairSeed(seed, undefined, trace),
  config: (r) => describePairConfig(r.config),
  passed: (r) => `${r.acked} writes acknowledged, ${r.crashes} crashes, ${r.partitions} partitions, ${r.flushRounds} flush rounds, ` +
    `${r.events} events, ${r.virtualMs.toFixed(1)} virtual ms`,
};

const CYCLES_SUITE: SeedSuite<Awaited<ReturnType<typeof runCyclesSeed>>> = {
  name: 'cycles',
  run: (seed, trace) => runCyclesSeed(seed, {}, trace ? { trace } : {}),
  config: (r) => describeCyclesConfig(r.config),
  passed: (r) => `${r.writesAcked} writes acknowledged, ${r.switches} switches, ${r.coordinatorCrashes} coordinator crashes, ` +
    `${r.evictions} evictions, ${r.r2Crashes} R2 crashes, recovered ${r.recoveredWrites ?? '-'}`,
};

const LINK_SUITE: SeedSuite<Awaited<ReturnType<typeof runLinkSeed>>> = {
  name: 'link',
  run: (seed) => runLinkSeed(seed),
  config: (r) => `${r.streams} stream(s)`,
  passed: (r) => `${r.delivered}/${r.sent} messages delivered, ${r.cuts} cuts, ${r.corruptedChunks} corrupted chunks, ${r.retransmits} retransmits, ${r.resets} resets, ${r.restarts} restarts`,
};

const ROUTE_SUITE: SeedSuite<Awaited<ReturnType<typeof runRouteSeed>>> = {
  name: 'route',
  run: (seed) => runRouteSeed(seed),
  config: (r) => `${r.arrays} arrays`,
  passed: (r) => `${r.routes} routes: ${r.answered} answered, ${r.refused} refused, ${r.linkDown} link down (${r.ranLate} ran after their origin gave up), ${r.cuts} cuts`,
};

async function runSuite<R extends { readonly ok: boolean; readonly failure?: string }>(
  suite: SeedSuite<R>, seeds: Iterable<number>, single: boolean, verbose: boolean, trace: boolean,
): Promise<number> {
  const started = performance.now();
  const failed: number[] = [];
  let count = 0;
  for (const seed of seeds) {
    count++;
    const r = await suite.run(seed, trace ? (line) => console.log(line) : undefined);
    if (!r.ok) {
      failed.push(seed);
      console.log(`FAIL seed ${seed}: ${r.failure}`);
      console.log(`  config: ${suite.config(r)}`);
      console.log(`  reproduce: npm run sim -- --suite ${suite.name} --seed ${seed} --trace`);
    } else if (verbose || single) {
      console.log(`ok   seed ${seed}: ${suite.passed(r)} (${suite.config(r)})`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`${failed.length === 0 ? 'PASS' : 'FAIL'}: ${count} ${suite.name} seeds, ${failed.length} failed, ${seconds.toFixed(1)} s` +
    (failed.length > 0 ? `; failing seeds: ${failed.join(' ')}` : ''));
  return failed.length === 0 ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 2;
});

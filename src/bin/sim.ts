// The seed runner: `npm run sim -- [--suite NAME] --seeds N [--start K] [--seed S] [--verbose] [--trace]`.
// Runs one suite's simulation for each seed — volume (default) or one of SUITES below — prints every
// failure with a command that reproduces it, then a summary line. Exits 1 when any seed fails.
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { reproduceCommand, runSeeds, seedRange } from '../sim/seed-runner.js';
import { describeConfig } from '../sim/volume/config.js';
import { describePairConfig, runPairSeed } from '../sim/pair/pair-sim.js';
import { describeCyclesConfig, runCyclesSeed } from '../sim/cycles/cycles-sim.js';
import { runRouteSeed } from '../sim/route-sim.js';
import { runLinkSeed } from '../sim/link-sim.js';
import { describeJournalConfig, runJournalSeed } from '../sim/journal/journal-sim.js';
import { describeCascadeConfig, runCascadeSeed } from '../sim/cascade/cascade-sim.js';
import { describeMigrationConfig, runMigrationSeed } from '../sim/migration/migration-sim.js';

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
  const other = SUITES[values.suite];
  if (values.suite !== 'volume' && other === undefined) throw new Error(`--suite must be one of volume, ${Object.keys(SUITES).join(', ')}`);
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
  if (other) return other(seeds, single, values.verbose === true, values.trace === true);
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

const JOURNAL_SUITE: SeedSuite<ReturnType<typeof runJournalSeed>> = {
  name: 'journal',
  run: (seed, trace) => Promise.resolve(runJournalSeed(seed, trace ? { trace } : {})),
  config: (r) => describeJournalConfig(r.config),
  passed: (r) => `${r.acked} writes acknowledged, ${r.issued} numbers issued, ${r.secondaryCrashes} secondary crashes, ${r.messages} messages` +
    (r.report ? `; recovered to ${r.report.consistentSequence}: lost ${r.report.lost.length}, stranded ${r.report.stranded.length}, ` +
      `unacknowledged ${r.report.unacknowledged.length}, acknowledged beyond the point ${r.ackedBeyond}` : '; converged'),
};

const LINK_SUITE: SeedSuite<Awaited<ReturnType<typeof runLinkSeed>>> = {
  name: 'link',
  run: (seed) => runLinkSeed(seed),
  config: (r) => `${r.streams} stream(s)`,
  passed: (r) => `${r.delivered}/${r.sent} messages delivered, ${r.cuts} cuts, ${r.corruptedChunks} corrupted chunks, ${r.retransmits} retransmits, ${r.resets} resets, ${r.restarts} restarts`,
};

const CASCADE_SUITE: SeedSuite<ReturnType<typeof runCascadeSeed>> = {
  name: 'cascade',
  run: (seed, trace) => Promise.resolve(runCascadeSeed(seed, {}, trace)),
  config: (r) => describeCascadeConfig(r.config),
  passed: (r) => `${r.cycles} cycles, ${r.splits} splits, ${r.writes} writes, B crashes ${JSON.stringify(r.bCrashes)}, C crashes ${JSON.stringify(r.cCrashes)}, ${r.flaps} flaps`,
};

const MIGRATION_SUITE: SeedSuite<Awaited<ReturnType<typeof runMigrationSeed>>> = {
  name: 'migration',
  run: (seed, trace) => runMigrationSeed(seed, trace),
  config: (r) => describeMigrationConfig(r.config),
  passed: (r) => `${r.hostOps} host ops, ${r.commands} commands, ${r.crashes} crashes, ${r.failedIo} failed I/Os, ` +
    `${r.virtualMs.toFixed(1)} virtual ms`,
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

type SuiteRun = (seeds: Iterable<number>, single: boolean, verbose: boolean, trace: boolean) => Promise<number>;
const suiteRun = <R extends { readonly ok: boolean; readonly failure?: string }>(suite: SeedSuite<R>): SuiteRun =>
  (seeds, single, verbose, trace) => runSuite(suite, seeds, single, verbose, trace);

/** Every suite beyond the volume one, by `--suite` name: a new suite is one more entry. */
const SUITES: Readonly<Record<string, SuiteRun | undefined>> = {
  pair: suiteRun(PAIR_SUITE),
  cycles: suiteRun(CYCLES_SUITE),
  link: suiteRun(LINK_SUITE),
  journal: suiteRun(JOURNAL_SUITE),
  cascade: suiteRun(CASCADE_SUITE),
  migration: suiteRun(MIGRATION_SUITE),
  route: suiteRun(ROUTE_SUITE),
};

main().then((code) => { process.exitCode = code; }, (error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 2;
});

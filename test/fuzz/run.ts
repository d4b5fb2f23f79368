// The long fuzz run: `npm run fuzz -- [--seconds N] [--seed S] [--target SUBSTRING]…`.
// Runs every target (or those matching) for N seconds each, prints executions per target and
// every finding with its seed, path and minimal counterexample; exits 1 when anything was found.
// Replay one finding: `npm run fuzz -- --target NAME --seed S --path P`.
import fc from 'fast-check';

/** fast-check's report plus the error the counterexample raised (the report leaves it out). */
const report = (d: fc.RunDetails<unknown[]>): string =>
  `${fc.defaultReportMessage(d) ?? ''}\nError: ${d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance)}`;
import { FUZZ_TARGETS } from './targets.js';

interface Options { seconds: number; seed: number; targets: string[]; path: string | undefined }

function parseArgs(argv: readonly string[]): Options {
  // The default seed changes per run so a long run explores; it is printed, so any run replays.
  const options: Options = { seconds: 60, seed: Date.now() % 0x7fffffff, targets: [], path: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--seconds') options.seconds = Number(value());
    else if (arg === '--seed') options.seed = Number(value());
    else if (arg === '--target') options.targets.push(value());
    else if (arg === '--path') options.path = value();
    else if (arg === '--help' || arg === '-h') {
      console.log('usage: npm run fuzz -- [--seconds N (per target, default 60)] [--seed S] [--target SUBSTRING]... [--path P (replay)]');
      console.log(`targets: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg} (try --help)`);
  }
  if (!(options.seconds > 0)) throw new Error('--seconds must be a positive number');
  if (!Number.isInteger(options.seed)) throw new Error('--seed must be an integer');
  return options;
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  const selected = FUZZ_TARGETS.filter((t) => options.targets.length === 0 || options.targets.some((s) => t.name.includes(s)));
  if (selected.length === 0) throw new Error(`no target matches ${options.targets.join(', ')}`);
  console.log(`fuzz: seed ${options.seed}, ${options.seconds} s per target, ${selected.length} targets`);
  let findings = 0;
  let executions = 0;
  for (const t of selected) {
    const started = process.hrtime.bigint();
    const details = await fc.check(t.property, {
      seed: options.seed,
      ...(options.path === undefined ? {} : { path: options.path }),
      numRuns: options.path === undefined ? Number.MAX_SAFE_INTEGER : 1,
      interruptAfterTimeLimit: options.seconds * 1000,
      markInterruptAsFailure: false,
    }) as fc.RunDetails<unknown[]>;
    await t.dispose?.();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    executions += details.numRuns;
    const rate = Math.round(details.numRuns / seconds);
    if (details.failed) {
      findings++;
      console.log(`${t.name.padEnd(24)} ${String(details.numRuns).padStart(10)} executions  ${seconds.toFixed(1)} s  FINDING`);
      console.log(report(details));
    } else {
      console.log(`${t.name.padEnd(24)} ${String(details.numRuns).padStart(10)} executions  ${seconds.toFixed(1)} s  ${rate}/s  no findings`);
    }
  }
  console.log(`fuzz: ${executions} executions, ${findings} finding${findings === 1 ? '' : 's'} (seed ${options.seed})`);
  process.exit(findings === 0 ? 0 : 1);
}

await main();

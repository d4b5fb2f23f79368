// Where the CPU goes, and what a run does when the cores are split on purpose. Benches on a small
// machine share its cores between tidemark's daemons and fio; these helpers let a bench say so with
// figures instead of a guess: the CPU each daemon spent per host operation (from /proc), and the
// same run with processes pinned to chosen cores (taskset).
import { cpus } from 'node:os';
import { readFile } from 'node:fs/promises';
import { run } from './processes.js';
import { FIO_RAMP_SECONDS, runFio, type FioJob, type FioResult } from './fio.js';

/** A process a bench measures, named by its role (R1, R2, array, link shaper). */
export interface MeasuredProcess {
  readonly role: string;
  readonly pid: number;
}

let clockTicks: Promise<number> | undefined;

/** Clock ticks per second, the unit of /proc/PID/stat's CPU times (asked once, however many callers at once). */
function ticksPerSecond(): Promise<number> {
  clockTicks ??= run('getconf', ['CLK_TCK']).then((out) => {
    const ticks = Number(out.trim());
    if (!Number.isFinite(ticks) || ticks <= 0) throw new Error(`getconf CLK_TCK gave ${JSON.stringify(out)}`);
    return ticks;
  });
  return clockTicks;
}

/** User plus system CPU seconds of the process, all its threads. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / await ticksPerSecond();
}

/** Starts counting the CPU of `processes`; `perOperation(n)` gives each one's µs per operation since. */
async function cpuMeter(processes: readonly MeasuredProcess[]): Promise<{ perOperation(operations: number): Promise<string> }> {
  const before = await Promise.all(processes.map((p) => cpuSeconds(p.pid)));
  return {
    async perOperation(operations: number): Promise<string> {
      const after = await Promise.all(processes.map((p) => cpuSeconds(p.pid)));
      return processes.map((p, i) => `${p.role} ${((after[i]! - before[i]!) * 1e6 / operations).toFixed(1)}`).join(', ');
    },
  };
}

/**
 * One fio run (on `cpus` if given) with each process's CPU µs per operation over it. The meter sees
 * the whole run, fio's ramp included, so the operations are the measured rate × that whole time.
 */
export async function runFioWithCpu(uri: string, job: FioJob, processes: readonly MeasuredProcess[], cpus?: string):
  Promise<FioResult & { readonly cpu: string }> {
  const meter = await cpuMeter(processes);
  const result = await runFio(uri, job, cpus === undefined ? {} : { cpus });
  return { ...result, cpu: await meter.perOperation(result.iops * (job.runtimeSeconds + FIO_RAMP_SECONDS)) };
}

/** Why pinned runs cannot happen here, or undefined when they can (two CPUs and taskset). */
export async function pinningUnavailable(): Promise<string | undefined> {
  if (cpus().length < 2) return `needs 2 CPUs, this machine has ${cpus().length}`;
  try {
    await run('taskset', ['--version']);
  } catch {
    return 'taskset (util-linux) is not installed';
  }
  return undefined;
}

/** Every thread of `pid` to the CPUs in `list` (taskset syntax, e.g. "0" or "0-1"). */
export async function pin(pid: number, list: string): Promise<void> {
  await run('taskset', ['--all-tasks', '--pid', '--cpu-list', list, String(pid)]);
}

/** All CPUs of the machine, in taskset syntax: what a pinned process returns to. */
export const allCpus = (): string => `0-${cpus().length - 1}`;

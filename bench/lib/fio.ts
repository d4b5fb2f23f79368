// Runs one fio job against an NBD URI and extracts the figures benchmarks compare.
import { run } from './processes.js';

export interface FioJob {
  readonly name: string;
  readonly rw: 'randwrite' | 'write' | 'randread' | 'read';
  readonly blockSize: string;
  readonly iodepth: number;
  readonly runtimeSeconds: number;
  readonly sizeBytes: number;
}

export interface FioResult {
  readonly iops: number;
  readonly bandwidthBytesPerSecond: number;
  readonly meanLatencyUs: number;
  readonly p99LatencyUs: number;
}

interface FioJson {
  jobs: Array<{ write: FioSide; read: FioSide }>;
}
interface FioSide {
  iops: number;
  bw_bytes: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

/** fio's warm-up before it measures (--ramp_time). */
export const FIO_RAMP_SECONDS = 2;

/** `cpus`: run fio pinned to these CPUs (taskset syntax). */
export async function runFio(uri: string, job: FioJob, options: { readonly cpus?: string } = {}): Promise<FioResult> {
  const fio = [
    `--name=${job.name}`, '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.blockSize}`,
    `--iodepth=${job.iodepth}`, `--size=${job.sizeBytes}`, '--time_based', `--runtime=${job.runtimeSeconds}`,
    `--ramp_time=${FIO_RAMP_SECONDS}`, '--output-format=json', '--randrepeat=1', '--norandommap',
  ];
  const output = options.cpus === undefined ? await run('fio', fio) : await run('taskset', ['--cpu-list', options.cpus, 'fio', ...fio]);
  const parsed = JSON.parse(output.slice(output.indexOf('{'))) as FioJson;
  const job0 = parsed.jobs[0]!;
  const side = job.rw.includes('write') ? job0.write : job0.read;
  return {
    iops: side.iops,
    bandwidthBytesPerSecond: side.bw_bytes,
    meanLatencyUs: side.clat_ns.mean / 1000,
    p99LatencyUs: (side.clat_ns.percentile?.['99.000000'] ?? 0) / 1000,
  };
}

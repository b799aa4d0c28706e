// Shared benchmark plumbing: statistics, machine description, C baseline builds, result files, and huge page set-up.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hugePageSizes, requireFreeHugePages } from '../lib/pool/hugepages';
import { reserveHugePages, type Reservation, type ReservationRecord } from '../lib/pool/reserve';
import { MiB } from '../lib/units';

export const repoRoot = path.resolve(__dirname, '..', '..');
export const resultsDir = path.join(repoRoot, 'bench', 'results');
/** Where --quick runs write: build output, so that a smoke run never touches the committed results. */
export const quickOutputDir = path.join(repoRoot, 'build', 'bench-quick');

/**
 * The environment of the processes a benchmark times: this one's, without NODE_EXTRA_CA_CERTS, which makes every Node
 * start-up parse a CA bundle (tens of ms, on a second core meanwhile).
 */
export const childEnv: NodeJS.ProcessEnv = { ...process.env };
delete childEnv.NODE_EXTRA_CA_CERTS;

/** Every benchmark of the suite, in the order `npm run bench` runs them (bench/NAME.ts, bench/results/NAME.json). */
export const BENCHMARKS = [
  'map',
  'alloc',
  'access',
  'zero',
  'fs',
  'handover',
  'resize',
  'hybrid',
  'vmm',
  'device',
  'pins',
  'qemu',
  'service',
] as const;
export type BenchmarkName = (typeof BENCHMARKS)[number];

export interface Stats {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

export function stats(samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  return { median, min: sorted[0]!, max: sorted.at(-1)!, samples };
}

export function machineDescription(): Record<string, unknown> {
  return {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpus: os
      .cpus()
      .map((cpu) => cpu.model)
      .filter((model, index, all) => all.indexOf(model) === index),
    cpuCount: os.cpus().length,
    memoryBytes: os.totalmem(),
    node: process.version,
    hugePageSizes: hugePageSizes().map((size) => size.pageSize),
  };
}

/** Compiles bench/baselines/NAME.c with -O2 into build/bench/ and returns the binary's path. */
export function buildBaseline(name: string): string {
  const source = path.join(repoRoot, 'bench', 'baselines', `${name}.c`);
  const outDir = path.join(repoRoot, 'build', 'bench');
  fs.mkdirSync(outDir, { recursive: true });
  const binary = path.join(outDir, name);
  // native/ is on the include path: a baseline may share a loop with the addon (gmfs_probe_loop.h).
  execFileSync('cc', ['-O2', '-Wall', '-I', path.join(repoRoot, 'native'), '-o', binary, source], { stdio: 'inherit' });
  return binary;
}

/** Runs a command and parses the JSON object on its last stdout line. */
export function runJson<T>(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): T {
  const result = spawnSync(command, args, { encoding: 'utf8', env });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split('\n').at(-1)!) as T;
}

export function writeResults(name: string, results: Record<string, unknown>, quick: boolean): string {
  const dir = quick ? path.join(quickOutputDir, 'results') : resultsDir;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ benchmark: name, quick, machine: machineDescription(), ...results }, null, 2)}\n`);
  return file;
}

/**
 * Set by the test suite for its quick smoke run: a hugetlbfs mount (2 MiB pages) whose free pages the benchmarks use
 * instead of changing nr_hugepages while other test files hold pages of their own.
 */
export const SHARED_HUGETLBFS_ENV = 'GUESTMEMFS_BENCH_HUGETLBFS';

/** Huge pages and a hugetlbfs mount for a benchmark (the shared one when set); throws ENOMEM when the machine is short. */
export function reserveBenchPages(pageSize: number, pages: number): Reservation {
  const shared = process.env[SHARED_HUGETLBFS_ENV];
  if (shared && pageSize === 2 * MiB) {
    requireFreeHugePages(pageSize, pages);
    const record: ReservationRecord = { pageSize, previousTotal: 0, total: 0, mountpoint: shared, createdDir: false };
    return { ...record, changes: [], record: () => record, release: () => {} };
  }
  return reserveHugePages({ pageSize, pages, mount: true });
}

/** Reserves huge pages and mounts a private hugetlbfs for a benchmark; exits with the reason when the machine cannot. */
export function reserveForBench(pageSize: number, pages: number): Reservation {
  try {
    return reserveBenchPages(pageSize, pages);
  } catch (error) {
    process.stderr.write(`benchmark needs ${pages} huge pages of ${pageSize} bytes and root: ${(error as Error).message}\n`);
    process.exit(3);
  }
}

export const quickMode = process.argv.includes('--quick');

export function runsArg(defaultRuns: number): number {
  const index = process.argv.indexOf('--runs');
  return index > 0 ? Number(process.argv[index + 1]) : quickMode ? 1 : defaultRuns;
}

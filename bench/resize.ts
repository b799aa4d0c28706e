// npm run bench:resize — online resize of a mounted 2 MiB-page pool: the time to grow by an amount and to give it back,
// against the floor measured in the same run (the same ftruncate and fallocate on a bare hugetlbfs file), and the time
// of a fixed resize against the size of the pool it is made to.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Filesystem } from '../lib/fs/filesystem';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import { closeBareFile, createBareFile, resizeBareFile } from '../lib/probes';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import { quickMode, repoRoot, reserveForBench, runsArg, stats, type Stats, writeResults } from './common';

const pageSize = 2 * MiB;
const runs = runsArg(7);
const basePool = 256 * MiB;
const amounts = quickMode ? [64 * MiB] : [64 * MiB, 256 * MiB, 1 * GiB, 4 * GiB];
const poolSizes = quickMode ? [basePool] : [basePool, 1 * GiB, 4 * GiB];
const FIXED_AMOUNT = 64 * MiB;
const largest = Math.max(basePool + Math.max(...amounts), Math.max(...poolSizes) + FIXED_AMOUNT);

const reservation = reserveForBench(pageSize, largest / pageSize);
const dir = reservation.mountpoint!;

function timeMs(fn: () => void): number {
  const started = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

interface Point {
  poolBytes: number;
  amountBytes: number;
  growMs: Stats;
  shrinkMs: Stats;
  floorGrowMs?: Stats;
  floorShrinkMs?: Stats;
  /** resizeAsync's grow: the pages faulted in by a worker thread, this one free meanwhile. */
  growAsyncMs?: Stats;
}

/**
 * One round: the pool grown by `amount` and shrunk back; with a bare file, its grow and shrink of `amount` too, and
 * the pool's asynchronous grow.
 */
async function round(gfs: Filesystem, poolBytes: number, amount: number, bareFile: string | undefined): Promise<number[]> {
  const times = [timeMs(() => gfs.resize(poolBytes + amount)), timeMs(() => gfs.resize(poolBytes))];
  if (bareFile === undefined) return times;
  const started = process.hrtime.bigint();
  await gfs.resizeAsync(poolBytes + amount);
  const asyncMs = Number(process.hrtime.bigint() - started) / 1e6;
  gfs.resize(poolBytes);
  // The bare file takes the pages the pool has just given back: the two never need them at once.
  const fd = createBareFile(bareFile);
  try {
    times.push(
      timeMs(() => resizeBareFile(fd, 0, amount)),
      timeMs(() => resizeBareFile(fd, amount, 0)),
      asyncMs,
    );
  } finally {
    closeBareFile(fd);
    fs.rmSync(bareFile, { force: true });
  }
  return times;
}

/**
 * Grows a mounted pool of `poolBytes` (with a file mapped, as a VM's memory would be) by `amount` and shrinks it
 * back, `runs` times after a warm-up; with `floor`, the bare file's grow and shrink alternate with them.
 */
async function measure(poolBytes: number, amount: number, floor: boolean): Promise<Point> {
  const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(dir, 'bench-resize'), size: poolBytes });
  const samples: number[][] = [[], [], [], [], []];
  try {
    mkfs(pool, { maxSize: poolBytes + amount, inodes: 64 });
    const gfs = mount(pool);
    try {
      gfs.create('/ram', { type: 'guest' });
      gfs.truncate('/ram', poolBytes / 2);
      const ram = gfs.map('/ram');
      try {
        for (let index = 0; index <= runs; index++) {
          const times = await round(gfs, poolBytes, amount, floor ? path.join(dir, 'bench-resize-floor') : undefined);
          if (index > 0) times.forEach((time, at) => samples[at]!.push(time));
        }
      } finally {
        ram.unmap();
      }
      const problems = gfs.audit().problems;
      if (problems.length > 0) throw new Error(`audit after the resizes: ${problems.join('; ')}`);
    } finally {
      gfs.unmount();
    }
  } finally {
    pool.destroy();
  }
  const [grow, shrink, floorGrow, floorShrink, growAsync] = samples as [number[], number[], number[], number[], number[]];
  return {
    poolBytes,
    amountBytes: amount,
    growMs: stats(grow),
    shrinkMs: stats(shrink),
    ...(floor ? { floorGrowMs: stats(floorGrow), floorShrinkMs: stats(floorShrink), growAsyncMs: stats(growAsync) } : {}),
  };
}

async function main(): Promise<void> {
  const byAmount: Point[] = [];
  const byPoolSize: Point[] = [];
  try {
    for (const amount of amounts) byAmount.push(await measure(basePool, amount, true));
    for (const size of poolSizes) byPoolSize.push(await measure(size, FIXED_AMOUNT, false));
  } finally {
    reservation.release();
  }
  const ratios = byAmount.map((point) => ({
    amountBytes: point.amountBytes,
    growVsFloor: point.growMs.median / point.floorGrowMs!.median,
    growAsyncVsFloor: point.growAsyncMs!.median / point.floorGrowMs!.median,
    shrinkVsFloor: point.shrinkMs.median / point.floorShrinkMs!.median,
  }));
  const file = writeResults('resize', { pageSize, runs, basePoolBytes: basePool, byAmount, byPoolSize, ratios }, quickMode);
  process.stdout.write(
    `resize a mounted ${formatSize(pageSize)}-page pool (median of ${runs}), against a bare file's ftruncate + fallocate:\n`,
  );
  for (const point of byAmount) {
    process.stdout.write(
      `  ${formatSize(point.poolBytes)} +${formatSize(point.amountBytes).padEnd(8)} ` +
        `grow ${point.growMs.median.toFixed(2).padStart(8)} ms ` +
        `(floor ${point.floorGrowMs!.median.toFixed(2)})   shrink ${point.shrinkMs.median.toFixed(3).padStart(7)} ms ` +
        `(floor ${point.floorShrinkMs!.median.toFixed(3)})   async grow ${point.growAsyncMs!.median.toFixed(2)} ms\n`,
    );
  }
  for (const point of byPoolSize) {
    process.stdout.write(
      `  pool of ${formatSize(point.poolBytes).padEnd(8)} +${formatSize(point.amountBytes)}: grow ${point.growMs.median.toFixed(2)} ms, ` +
        `shrink ${point.shrinkMs.median.toFixed(3)} ms\n`,
    );
  }
  process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);
}

void main();

// npm run bench:zero — how to zero pool blocks that go back to a file: memset vs punch-hole + re-fallocate + refault.
//
// memset keeps every page allocated and reserved. Punch-hole returns the pages to the kernel, which zeroes them
// when fallocate takes them back; between the two calls another process can take them, so it is only a
// candidate if it is much faster.
import * as path from 'node:path';
import { allocateRange, punchHole } from '../lib/probes';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import { quickMode, repoRoot, reserveForBench, runsArg, stats, writeResults } from './common';

const pageSize = 2 * MiB;
const size = quickMode ? 64 * MiB : 1 * GiB;
const runs = runsArg(7);

const reservation = reserveForBench(pageSize, size / pageSize);
const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(reservation.mountpoint!, 'bench-zero'), size });

function timeMs(fn: () => void): number {
  const started = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

async function main(): Promise<void> {
  const mapping = pool.mapAll({ populate: true });
  const samples: Record<string, number[]> = { memset: [], memset_worker_thread: [], punch_hole_fallocate_refault: [] };
  try {
    for (let run = 0; run < runs; run++) {
      mapping.bytes().fill(0xa5);
      samples.memset!.push(timeMs(() => mapping.zero()));

      mapping.bytes().fill(0xa5);
      const started = process.hrtime.bigint();
      await mapping.zeroAsync();
      samples.memset_worker_thread!.push(Number(process.hrtime.bigint() - started) / 1e6);

      mapping.bytes().fill(0xa5);
      samples.punch_hole_fallocate_refault!.push(
        timeMs(() => {
          punchHole(pool, 0, size);
          allocateRange(pool, 0, size);
          mapping.advise('MADV_POPULATE_WRITE');
        }),
      );
      if (mapping.bytes().some((byte) => byte !== 0)) throw new Error('punch-hole path left non-zero bytes');
    }
  } finally {
    mapping.unmap();
    pool.destroy();
    reservation.release();
  }
  const summary = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, stats(values)]));
  const gbPerSecond = Object.fromEntries(Object.entries(summary).map(([key, value]) => [key, size / GiB / (value.median / 1000)]));
  const memsetMs = summary.memset!.median;
  const punchMs = summary.punch_hole_fallocate_refault!.median;
  // The design uses memset (Mapping.zero/zeroAsync) because it is the safe one; the run checks it is not slower.
  const memsetIsFaster = memsetMs <= punchMs;
  const file = writeResults(
    'zero',
    {
      size,
      pageSize,
      runs,
      ms: summary,
      gibPerSecond: gbPerSecond,
      ratios: { punch_hole_vs_memset: punchMs / memsetMs },
      primitive: 'memset (Mapping.zero / Mapping.zeroAsync)',
      memsetIsFaster,
      reason:
        'memset keeps the pages allocated and reserved; punch-hole releases them, so a concurrent allocation can take them before ' +
        'fallocate',
    },
    quickMode,
  );
  process.stdout.write(`zero ${formatSize(size)} of ${formatSize(pageSize)} pages (median of ${runs}):\n`);
  for (const [key, value] of Object.entries(summary)) {
    process.stdout.write(`  ${key.padEnd(30)} ${value.median.toFixed(2).padStart(8)} ms  ${gbPerSecond[key]!.toFixed(1)} GiB/s\n`);
  }
  process.stdout.write(
    `  punch-hole path takes ${(punchMs / memsetMs).toFixed(2)}x memset's time: memset, the safe primitive, ` +
      `is ${memsetIsFaster ? 'also the faster' : 'SLOWER here'}\n`,
  );
  process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);
}

void main();

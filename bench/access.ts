// npm run bench:access — random 8-byte reads over a 4 GiB guest file mapped by guestmemfs, beside the same loop (shared
// source, native/gmfs_probe_loop.h) over a raw mmap of a hugetlbfs file of the same page size, and over 4 KiB pages.
//
// Throughput: independent reads (the CPU overlaps their misses). Latency: each address derived from the value read
// before. The gain of huge pages is mostly TLB reach: 4 GiB is 2,048 TLB entries of 2 MiB, 1M of 4 KiB.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { mkfs } from '../lib/fs/format';
import { probeRandomReads } from '../lib/probes';
import { scratchDirectory } from '../lib/scratch';
import { mount } from '../lib/fs/mount';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, KiB, MiB } from '../lib/units';
import {
  buildBaseline,
  childEnv,
  quickMode,
  repoRoot,
  reserveBenchPages,
  runJson,
  runsArg,
  stats,
  type Stats,
  writeResults,
} from './common';

const size = quickMode ? 64 * MiB : 4 * GiB;
const ops = quickMode ? 200_000 : 10_000_000;
/** Dependent reads take a full miss each: fewer give as steady a median. */
const dependentOps = ops / 5;
const runs = runsArg(9);
const seed = 12345;
const baseline = buildBaseline('random_access');

interface Sides {
  throughputNsPerRead: Stats;
  latencyNsPerRead: Stats;
}
interface PageSizeResult {
  pageSize: number;
  raw: Sides;
  guestmemfs?: Sides;
  /** guestmemfs throughput relative to the raw mapping (raw ns / guestmemfs ns: 1 = as fast, target >= 0.98). */
  throughputVsRaw?: number;
  latencyVsRaw?: number;
  /** Whether the runs were interleaved and the ratios are medians of per-run ratios. */
  paired?: boolean;
  skipped?: string;
}

function raw(file: string, small: boolean): { throughputNsPerRead: number; latencyNsPerRead: number } {
  return runJson(
    baseline,
    [file, String(size), String(ops), String(dependentOps), String(seed), small ? 'small-pages' : 'huge-pages'],
    childEnv,
  );
}

function hugePages(pageSize: number): PageSizeResult {
  const poolSize = size + Math.max(pageSize, 64 * MiB);
  // Both files at once when the pages are there (runs interleaved, paired); otherwise one after the other (1 GiB pages
  // are often too fragmented for both).
  let reservation;
  let together = true;
  try {
    reservation = reserveBenchPages(pageSize, (poolSize + size) / pageSize);
  } catch {
    together = false;
    try {
      reservation = reserveBenchPages(pageSize, poolSize / pageSize);
    } catch (error) {
      return {
        pageSize,
        raw: undefined!,
        skipped: `${poolSize / pageSize} pages of ${formatSize(pageSize)} not available: ${(error as Error).message}`,
      };
    }
  }
  const poolPath = path.join(reservation.mountpoint!, 'bench-access-pool');
  const rawPath = path.join(reservation.mountpoint!, 'bench-access-raw');
  const samples = { gThroughput: [] as number[], gLatency: [] as number[], rThroughput: [] as number[], rLatency: [] as number[] };
  const measureRaw = () => {
    const r = raw(rawPath, false);
    samples.rThroughput.push(r.throughputNsPerRead);
    samples.rLatency.push(r.latencyNsPerRead);
  };
  try {
    const pool = Pool.create({ backend: 'hugetlbfs', path: poolPath, size: poolSize, pageSize });
    try {
      if (together) Pool.create({ backend: 'hugetlbfs', path: rawPath, size, pageSize }).close();
      mkfs(pool, { force: true });
      const gfs = mount(pool);
      gfs.create('/ram', { type: 'guest' });
      gfs.truncate('/ram', size);
      const ram = gfs.map('/ram');
      try {
        for (let run = 0; run < runs; run++) {
          probeRandomReads(ram, { ops: ops / 10, seed: seed + 1 }); // warm-up, as the C side does before its timing
          samples.gThroughput.push(probeRandomReads(ram, { ops, seed }));
          samples.gLatency.push(probeRandomReads(ram, { ops: dependentOps, seed, dependent: true }));
          if (together) measureRaw();
        }
      } finally {
        ram.unmap();
        gfs.unmount();
      }
    } finally {
      pool.destroy();
    }
    if (!together) {
      Pool.create({ backend: 'hugetlbfs', path: rawPath, size, pageSize }).close();
      for (let run = 0; run < runs; run++) measureRaw();
    }
  } finally {
    fs.rmSync(rawPath, { force: true });
    reservation.release();
  }
  const guestmemfs = { throughputNsPerRead: stats(samples.gThroughput), latencyNsPerRead: stats(samples.gLatency) };
  const rawSides = { throughputNsPerRead: stats(samples.rThroughput), latencyNsPerRead: stats(samples.rLatency) };
  // Paired (each run's raw over its guestmemfs sample) when interleaved, which cancels the machine's drift.
  const ratio = (rawSamples: number[], gSamples: number[], rawMedian: number, gMedian: number) =>
    together ? stats(rawSamples.map((value, index) => value / gSamples[index]!)).median : rawMedian / gMedian;
  return {
    pageSize,
    raw: rawSides,
    guestmemfs,
    paired: together,
    throughputVsRaw: ratio(
      samples.rThroughput,
      samples.gThroughput,
      rawSides.throughputNsPerRead.median,
      guestmemfs.throughputNsPerRead.median,
    ),
    latencyVsRaw: ratio(samples.rLatency, samples.gLatency, rawSides.latencyNsPerRead.median, guestmemfs.latencyNsPerRead.median),
  };
}

function smallPages(): PageSizeResult {
  const scratch = scratchDirectory('/dev/shm', 'guestmemfs-bench-access');
  const file = path.join(scratch.path, 'small-pages');
  fs.writeFileSync(file, '', { flag: 'wx', mode: 0o600 });
  try {
    const samples = { throughput: [] as number[], latency: [] as number[] };
    for (let run = 0; run < runs; run++) {
      const r = raw(file, true);
      samples.throughput.push(r.throughputNsPerRead);
      samples.latency.push(r.latencyNsPerRead);
    }
    return { pageSize: 4 * KiB, raw: { throughputNsPerRead: stats(samples.throughput), latencyNsPerRead: stats(samples.latency) } };
  } finally {
    scratch.remove();
  }
}

const results = [smallPages(), hugePages(2 * MiB), quickMode ? { pageSize: GiB, raw: undefined!, skipped: 'quick mode' } : hugePages(GiB)];
const small = results[0]!;
const twoMiB = results[1]!;
const hugeGain = {
  throughput2MiBVs4KiB: small.raw.throughputNsPerRead.median / twoMiB.raw.throughputNsPerRead.median,
  latency2MiBVs4KiB: small.raw.latencyNsPerRead.median / twoMiB.raw.latencyNsPerRead.median,
};
const file = writeResults(
  'access',
  {
    size,
    opsPerRun: ops,
    dependentOpsPerRun: dependentOps,
    runs,
    seed,
    results,
    hugeGain,
    target: 'guestmemfs throughput >= 0.98x the raw hugetlbfs mapping (throughputVsRaw)',
  },
  quickMode,
);
process.stdout.write(
  `random 8-byte reads over ${formatSize(size)} (median of ${runs} runs of ${ops} independent and ${dependentOps} dependent reads):\n`,
);
for (const result of results) {
  if (result.skipped) {
    process.stdout.write(`  ${formatSize(result.pageSize).padStart(7)} pages: skipped (${result.skipped})\n`);
    continue;
  }
  const line = (name: string, sides: Sides) =>
    `  ${formatSize(result.pageSize).padStart(7)} pages, ${name.padEnd(10)}: ` +
    `${sides.throughputNsPerRead.median.toFixed(2)} ns/read independent, ${sides.latencyNsPerRead.median.toFixed(1)} ns/read dependent\n`;
  process.stdout.write(line('raw mmap', result.raw));
  if (result.guestmemfs) {
    process.stdout.write(line('guestmemfs', result.guestmemfs));
    process.stdout.write(
      `      guestmemfs vs raw: throughput ${result.throughputVsRaw!.toFixed(3)}x, latency ${result.latencyVsRaw!.toFixed(3)}x\n`,
    );
  }
}
process.stdout.write(
  `  2 MiB vs 4 KiB pages: throughput ${hugeGain.throughput2MiBVs4KiB.toFixed(2)}x, ` +
    `latency ${hugeGain.latency2MiBVs4KiB.toFixed(2)}x\nresults: ${path.relative(repoRoot, file)}\n`,
);

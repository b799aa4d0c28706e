// npm run bench:alloc — first allocation of a 4 GiB guest file (zero + populate), beside a C program faulting the same
// amount of fresh huge pages (which the kernel zeroes on fault), in the same run.
//
// guestmemfs zeroes a block when it goes to a new file if an earlier file wrote it ("dirty"): that is the case timed
// against the baseline. A block never used since the pool was created is already zero (the kernel zeroed it when the
// pool was fallocated) and only needs mapping: reported apart, as the cost on a fresh pool.
import * as path from 'node:path';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import { buildBaseline, childEnv, quickMode, repoRoot, reserveForBench, runJson, runsArg, stats, writeResults } from './common';

const pageSize = 2 * MiB;
const size = quickMode ? 64 * MiB : 4 * GiB;
const runs = runsArg(5);
const baseline = buildBaseline('fault_hugepages');
const poolSize = size + 64 * MiB;
const reservation = reserveForBench(pageSize, (poolSize + size) / pageSize);
const poolPath = path.join(reservation.mountpoint!, 'bench-alloc');

function timeMs(fn: () => void): number {
  const started = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

const samples = { guestmemfs_dirty_blocks: [] as number[], guestmemfs_fresh_pool: [] as number[], c_fault_fresh_hugepages: [] as number[] };
try {
  for (let run = 0; run < runs; run++) {
    // A fresh pool: its blocks were zeroed by the kernel when it was fallocated.
    const pool = Pool.create({ backend: 'hugetlbfs', path: poolPath, size: poolSize });
    try {
      mkfs(pool, { force: true });
      const gfs = mount(pool);
      samples.guestmemfs_fresh_pool.push(
        timeMs(() => {
          gfs.create('/fresh', { type: 'guest' });
          gfs.truncate('/fresh', size);
          gfs.map('/fresh', { populate: true }).unmap();
        }),
      );
      // An earlier guest wrote every block, then its file went: the next file's blocks must be zeroed first.
      const old = gfs.map('/fresh');
      for (let offset = 0; offset < size; offset += GiB) old.bytes(offset, Math.min(GiB, size - offset)).fill(0xa5);
      old.unmap();
      gfs.unlink('/fresh');
      samples.guestmemfs_dirty_blocks.push(
        timeMs(() => {
          gfs.create('/ram', { type: 'guest' });
          gfs.truncate('/ram', size);
          gfs.map('/ram', { populate: true }).unmap();
        }),
      );
      gfs.unmount();
    } finally {
      pool.destroy();
    }
    samples.c_fault_fresh_hugepages.push(runJson<{ ms: number }>(baseline, [String(size), String(Math.log2(pageSize))], childEnv).ms);
  }
  const summary = Object.fromEntries(Object.entries(samples).map(([key, values]) => [key, stats(values)]));
  const floor = summary.c_fault_fresh_hugepages!.median;
  const ratios = { dirtyVsC: summary.guestmemfs_dirty_blocks!.median / floor, freshPoolVsC: summary.guestmemfs_fresh_pool!.median / floor };
  const file = writeResults('alloc', { size, pageSize, runs, ms: summary, ratios, target: 'dirtyVsC <= 1.1' }, quickMode);
  process.stdout.write(`first allocation of a ${formatSize(size)} guest file, ${formatSize(pageSize)} pages (median of ${runs}):\n`);
  for (const [key, value] of Object.entries(summary))
    process.stdout.write(
      `  ${key.padEnd(24)} ${value.median.toFixed(1).padStart(8)} ms  [${value.min.toFixed(1)} .. ${value.max.toFixed(1)}]\n`,
    );
  process.stdout.write(
    `  zeroing dirty blocks vs the kernel faulting fresh pages: ${ratios.dirtyVsC.toFixed(2)}x; fresh pool: ` +
      `${ratios.freshPoolVsC.toFixed(3)}x\nresults: ${path.relative(repoRoot, file)}\n`,
  );
} finally {
  reservation.release();
}

// npm run bench:hybrid — a 4.5 GiB guest file in a hybrid pool (4 GiB on 1 GiB pages, 512 MiB on 2 MiB pages) beside
// the same file in a pool of 2 MiB pages only, in the same run: map time (stitch + pre-fault) and random 8-byte reads,
// independent (throughput) and dependent (latency). The gain of 1 GiB pages is TLB reach: 4.5 GiB is 2,304 entries
// of 2 MiB, 4 of 1 GiB plus 256 of 2 MiB.
import * as path from 'node:path';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import { probeRandomReads } from '../lib/probes';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB } from '../lib/units';
import { quickMode, reserveBenchPages, runsArg, stats, type Stats, writeResults } from './common';

const largeBytes = quickMode ? 1 * GiB : 4 * GiB;
const fileSize = largeBytes + 512 * MiB;
const ops = quickMode ? 200_000 : 10_000_000;
const dependentOps = ops / 5;
const runs = runsArg(7);
const seed = 4242;

interface Side {
  layout: string;
  mapMs: Stats;
  throughputNsPerRead: Stats;
  latencyNsPerRead: Stats;
}

/** Times map() of the file (pre-faulted, as a VMM maps guest RAM) and reads from it, `runs` times. */
function measure(layout: string, pool: Pool): Side {
  mkfs(pool, { force: true });
  const gfs = mount(pool);
  const samples = { map: [] as number[], throughput: [] as number[], latency: [] as number[] };
  try {
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', fileSize);
    for (let run = 0; run < runs; run++) {
      const started = process.hrtime.bigint();
      const ram = gfs.map('/ram');
      samples.map.push(Number(process.hrtime.bigint() - started) / 1e6);
      try {
        probeRandomReads(ram, { ops: ops / 10, seed: seed + 1 });
        samples.throughput.push(probeRandomReads(ram, { ops, seed }));
        samples.latency.push(probeRandomReads(ram, { ops: dependentOps, seed, dependent: true }));
      } finally {
        ram.unmap();
      }
    }
  } finally {
    gfs.unmount();
  }
  return { layout, mapMs: stats(samples.map), throughputNsPerRead: stats(samples.throughput), latencyNsPerRead: stats(samples.latency) };
}

function run(): Record<string, unknown> {
  // The 2 MiB-page file of the hybrid pool: the file's 512 MiB tail plus the metadata, in whole GiB.
  const smallBytes = 1 * GiB;
  const pureBytes = fileSize + 64 * MiB;
  let small;
  let large;
  try {
    // 1 GiB pages first: once 2 MiB pages are taken, memory is often too fragmented for whole GiBs.
    large = reserveBenchPages(GiB, largeBytes / GiB);
    small = reserveBenchPages(2 * MiB, Math.max(smallBytes, pureBytes) / (2 * MiB));
  } catch (error) {
    large?.release();
    process.stderr.write(
      `needs ${formatSize(largeBytes)} of 1 GiB pages and ${formatSize(pureBytes)} of 2 MiB pages: ${(error as Error).message}\n`,
    );
    process.exit(3);
  }
  try {
    const hybridPool = Pool.create({
      backend: 'hugetlbfs',
      path: path.join(small.mountpoint!, 'bench-hybrid'),
      size: smallBytes,
      large: { size: largeBytes, path: path.join(large.mountpoint!, 'bench-hybrid-1g') },
    });
    let hybrid: Side;
    try {
      hybrid = measure('hybrid (1 GiB + 2 MiB pages)', hybridPool);
    } finally {
      hybridPool.destroy();
    }
    // One pool at a time: the machine's 2 MiB pages hold one of them.
    const purePool = Pool.create({ backend: 'hugetlbfs', path: path.join(small.mountpoint!, 'bench-hybrid-2m'), size: pureBytes });
    let pure: Side;
    try {
      pure = measure('2 MiB pages only', purePool);
    } finally {
      purePool.destroy();
    }
    return {
      hybrid,
      pure,
      /** Pure 2 MiB over hybrid: above 1 means the hybrid file is faster. */
      mapVsPure: pure.mapMs.median / hybrid.mapMs.median,
      throughputVsPure: pure.throughputNsPerRead.median / hybrid.throughputNsPerRead.median,
      latencyVsPure: pure.latencyNsPerRead.median / hybrid.latencyNsPerRead.median,
    };
  } finally {
    large.release();
    small.release();
  }
}

const file = writeResults(
  'hybrid',
  {
    fileBytes: fileSize,
    largeBytes,
    opsPerRun: ops,
    dependentOpsPerRun: dependentOps,
    runs,
    seed,
    ...run(),
    target: 'hybrid random access at least as fast as 2 MiB pages only (throughputVsPure, latencyVsPure >= 1)',
  },
  quickMode,
);
process.stdout.write(`${file}\n`);

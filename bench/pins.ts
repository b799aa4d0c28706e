// npm run bench:pins — what pins cost: mapping 4 GiB of guest RAM with its pin against the same map without one, and
// the probe the owner makes before it frees blocks (a shrink, an unlink) with 0, 1 and 1,000 pins on the pool.
//
// A pin is an OFD read lock per extent on a description of its own (one open(/proc/self/fd/N) and one fcntl per
// extent), owned by the mapping; a probe is one F_OFD_GETLK per extent, whose cost grows with the locks on the file.
import * as path from 'node:path';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import { Pin } from '../lib/pool/pins';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, KiB, MiB } from '../lib/units';
import { quickMode, repoRoot, reserveForBench, runsArg, stats, type Stats, writeResults } from './common';

const pageSize = 2 * MiB;
const ramBytes = quickMode ? 64 * MiB : 4 * GiB;
const runs = runsArg(101);
const pinCounts = [0, 1, 1000] as const;
const probeOps = quickMode ? 50 : 2000;

function elapsedMs(from: bigint): number {
  return Number(process.hrtime.bigint() - from) / 1e6;
}

/** map with its pin against the same map without one, interleaved round by round, on warm code. */
function mapCost(): { pinned: Stats; unpinned: Stats; ratio: Stats } {
  const poolBytes = ramBytes + 64 * MiB;
  const reservation = reserveForBench(pageSize, poolBytes / pageSize);
  const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(reservation.mountpoint!, 'bench-pins'), size: poolBytes });
  try {
    mkfs(pool, { force: true });
    const gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', ramBytes);
    const extents = gfs.extents('/ram');
    gfs.unmount();
    const options = { populate: true, dontDump: true, dontFork: true };
    const time = (pin: boolean) => {
      const started = process.hrtime.bigint();
      const mapping = pool.map(extents, { ...options, pin });
      const ms = elapsedMs(started);
      mapping.unmap();
      return ms;
    };
    for (let round = 0; round < 5; round++) time(round % 2 === 0); // compile both paths first
    const pinned: number[] = [];
    const unpinned: number[] = [];
    for (let round = 0; round < runs; round++) {
      // Alternate which goes first, so a drift of the machine weighs on both alike.
      if (round % 2 === 0) {
        pinned.push(time(true));
        unpinned.push(time(false));
      } else {
        unpinned.push(time(false));
        pinned.push(time(true));
      }
    }
    return { pinned: stats(pinned), unpinned: stats(unpinned), ratio: stats(pinned.map((value, index) => value / unpinned[index]!)) };
  } finally {
    pool.destroy();
    reservation.release();
  }
}

/** Microseconds per shrink and per unlink of an unpinned file while `pins` other files of the pool are pinned. */
function probeCost(): Array<{ pins: number; shrinkUs: Stats; unlinkUs: Stats }> {
  const blockSize = 64 * KiB;
  const files = 2 * Math.max(...pinCounts) + 64;
  const pool = Pool.create({ backend: 'memfd-4k', size: (files + 64) * blockSize * 2 });
  try {
    mkfs(pool, { blockSize, inodes: files + probeOps + 64 });
    const gfs = mount(pool);
    for (let index = 0; index < files; index++) {
      gfs.create(`/f${index}`, { type: 'state' });
      gfs.truncate(`/f${index}`, blockSize);
    }
    const results = [];
    for (const count of pinCounts) {
      // Every other file, so that no two pinned ranges touch and the kernel keeps each lock apart.
      const ranges = Array.from({ length: count }, (_, index) => gfs.extents(`/f${2 * index}`)[0]!);
      const pin = count > 0 ? Pin.take(pool, ranges) : undefined;
      const target = `/f${files - 1}`;
      const shrink: number[] = [];
      const unlink: number[] = [];
      // The first round of each count only warms the code up; the second is measured.
      for (let op = 0; op < 2 * probeOps; op++) {
        if (op === probeOps) {
          shrink.length = 0;
          unlink.length = 0;
        }
        let started = process.hrtime.bigint();
        gfs.truncate(target, 0);
        shrink.push(elapsedMs(started) * 1000);
        gfs.truncate(target, blockSize);
        gfs.create('/victim', { type: 'state' });
        gfs.truncate('/victim', blockSize);
        started = process.hrtime.bigint();
        gfs.unlink('/victim');
        unlink.push(elapsedMs(started) * 1000);
      }
      pin?.release();
      results.push({ pins: count, shrinkUs: stats(shrink), unlinkUs: stats(unlink) });
    }
    gfs.unmount();
    return results;
  } finally {
    pool.close();
  }
}

const map = mapCost();
const probes = probeCost();
const file = writeResults(
  'pins',
  {
    ramBytes,
    pageSize,
    runs,
    probeOps,
    map: { pinnedMs: map.pinned, unpinnedMs: map.unpinned, ratio: map.ratio },
    target: 'map with its pin <= 1.05x the same map without (median of paired ratios)',
    probes,
  },
  quickMode,
);
process.stdout.write(`map ${formatSize(ramBytes)} of ${formatSize(pageSize)} pages (median of ${runs}):\n`);
process.stdout.write(
  `  with its pin ${map.pinned.median.toFixed(3)} ms, without ${map.unpinned.median.toFixed(3)} ms: ${map.ratio.median.toFixed(3)}x\n`,
);
for (const probe of probes) {
  process.stdout.write(
    `  ${String(probe.pins).padStart(5)} pins on the pool: shrink ${probe.shrinkUs.median.toFixed(1)} us, ` +
      `unlink ${probe.unlinkUs.median.toFixed(1)} us (median of ${probeOps})\n`,
  );
}
process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);

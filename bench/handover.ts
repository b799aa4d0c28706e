// npm run bench:handover — serialise + restore time against the number of files (1 to 100,000) and against the
// amount of guest memory described (up to 1 TiB of 2 MiB blocks, on sparse pools so the pages need not exist).
import * as path from 'node:path';
import { crc32 } from '../lib/checksum';
import type { Filesystem } from '../lib/fs/filesystem';
import { INODE_SIZE } from '../lib/fs/geometry';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB, TiB } from '../lib/units';
import { quickMode, repoRoot, runsArg, stats, type Stats, writeResults } from './common';

const runs = runsArg(7);

interface Point {
  label: string;
  files: number;
  /**
   * The checksum floor: CRC-32 (zlib.crc32, the fastest checksum Node has) over as many bytes as the live-metadata
   * checksum covers (every live inode's 512-byte record), twice: a handover that verifies its metadata reads them
   * on each side. Timed in the same run, over resident memory.
   */
  checksumFloorMs?: Stats;
  describedBytes: number;
  blobBytes: number;
  serialiseMs: Stats;
  restoreMs: Stats;
  totalMs: Stats;
}

/** Serialise, let go, mount again (restoring), `runs` times; the first round is a warm-up. */
function measure(pool: Pool, fs: Filesystem, label: string, files: number, describedBytes: number): { point: Point; fs: Filesystem } {
  const serialise: number[] = [];
  const restore: number[] = [];
  let blobBytes = 0;
  let current = fs;
  for (let round = 0; round <= runs; round++) {
    const started = process.hrtime.bigint();
    const result = current.serialise();
    const serialised = process.hrtime.bigint();
    current.unmount();
    const unmounted = process.hrtime.bigint();
    current = mount(pool);
    const restored = process.hrtime.bigint();
    if (!current.restored) throw new Error('mount did not restore from the handover');
    blobBytes = result.blob.length;
    if (round === 0) continue;
    serialise.push(Number(serialised - started) / 1e6);
    restore.push(Number(restored - unmounted) / 1e6);
  }
  const total = serialise.map((ms, index) => ms + restore[index]!);
  return {
    point: { label, files, describedBytes, blobBytes, serialiseMs: stats(serialise), restoreMs: stats(restore), totalMs: stats(total) },
    fs: current,
  };
}

function byFileCount(): Point[] {
  const counts = quickMode ? [1, 100, 1000] : [1, 10, 100, 1000, 10_000, 100_000];
  const points: Point[] = [];
  const pool = Pool.create({ backend: 'memfd-4k', size: 512 * MiB, sparse: true });
  try {
    mkfs(pool, { inodes: counts.at(-1)! + 16 });
    let fs = mount(pool);
    let made = 0;
    for (const count of counts) {
      for (; made < count; made++) {
        fs.create(`/vm-${made}`, { type: 'guest' });
      }
      const { point, fs: next } = measure(pool, fs, `${count} files`, count, 0);
      fs = next;
      points.push({ ...point, checksumFloorMs: checksumFloor((count + 1) * INODE_SIZE) });
    }
    fs.unmount();
  } finally {
    pool.close();
  }
  return points;
}

function byDescribedSize(): Point[] {
  const sizes = quickMode ? [GiB, 16 * GiB] : [GiB, 10 * GiB, 100 * GiB, TiB];
  const points: Point[] = [];
  for (const size of sizes) {
    // A sparse 4 KiB-page pool with 2 MiB blocks: the blocks are described, never touched.
    const pool = Pool.create({ backend: 'memfd-4k', size: size + 256 * MiB, sparse: true });
    try {
      mkfs(pool, { blockSize: 2 * MiB });
      const fs = mount(pool);
      fs.create('/ram', { type: 'guest' });
      fs.truncate('/ram', size);
      const { point, fs: last } = measure(pool, fs, `${formatSize(size)} in one file`, 1, size);
      last.unmount();
      points.push(point);
    } finally {
      pool.close();
    }
  }
  return points;
}

/** The checksum floor for `bytes` of live records (see Point.checksumFloorMs), `runs` times after a warm-up. */
function checksumFloor(bytes: number): Stats {
  const records = new Uint8Array(bytes).fill(0x5a);
  const samples: number[] = [];
  for (let round = 0; round <= runs; round++) {
    const started = process.hrtime.bigint();
    crc32(records, crc32(records));
    if (round > 0) samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return stats(samples);
}

/** Least-squares slope of y over x. */
function slope(points: Point[], x: (point: Point) => number): number {
  const xs = points.map(x);
  const ys = points.map((point) => point.totalMs.median);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((sum, value, index) => sum + (value - mx) * (ys[index]! - my), 0);
  const den = xs.reduce((sum, value) => sum + (value - mx) ** 2, 0);
  return num / den;
}

const files = byFileCount();
const sizes = byDescribedSize();
const hundredGiB = sizes.find((point) => point.describedBytes === 100 * GiB);
const file = writeResults(
  'handover',
  {
    runs,
    byFileCount: files,
    byDescribedSize: sizes,
    slopes: {
      msPerThousandFiles: slope(files, (point) => point.files / 1000),
      msPerTiBDescribed: slope(sizes, (point) => point.describedBytes / TiB),
    },
    target: '100 GiB described (51,200 blocks): serialise + restore <= 1 ms',
    anchors: { pkramSave100GiBMs: 13, pkramLoad100GiBMs: 101 },
    pool: 'memfd-4k, sparse, 2 MiB blocks (restore includes mapping the pool and building the name index)',
  },
  quickMode,
);
const out = (line: string) => process.stdout.write(`${line}\n`);
out(`handover (serialise + unmount, then mount restoring), median of ${runs}:`);
for (const point of [...files, ...sizes]) {
  out(
    `  ${point.label.padEnd(22)} blob ${String(point.blobBytes).padStart(8)} B  serialise ` +
      `${point.serialiseMs.median.toFixed(3).padStart(8)} ms  restore ${point.restoreMs.median.toFixed(3).padStart(8)} ms  total ` +
      `${point.totalMs.median.toFixed(3).padStart(8)} ms` +
      (point.checksumFloorMs ? `  (checksum floor ${point.checksumFloorMs.median.toFixed(3)} ms)` : ''),
  );
}
if (hundredGiB)
  out(`100 GiB described: ${hundredGiB.totalMs.median.toFixed(3)} ms in total (target <= 1 ms; PKRAM: 13 ms save + 101 ms load)`);
out(`results: ${path.relative(repoRoot, file)}`);

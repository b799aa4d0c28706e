// npm run bench:handover — serialise + restore time against the number of files (1 to 100,000) on a pool of 2 MiB
// pages and on the 4 KiB fallback, beside a floor measured in the same run; handover version 1 on the same pool; a
// restore in a fresh process; and the time against the amount of guest memory described (up to 1 TiB of 2 MiB
// blocks, on sparse pools so the pages need not exist).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Filesystem } from '../lib/fs/filesystem';
import { mkfs } from '../lib/fs/format';
import { mount } from '../lib/fs/mount';
import type { HandoverVersion } from '../lib/handover/blob';
import { Pool } from '../lib/pool/pool';
import { formatSize, GiB, MiB, TiB } from '../lib/units';
import { quickMode, repoRoot, reserveBenchPages, runsArg, stats, type Stats, writeResults } from './common';

const runs = runsArg(7);
const counts = quickMode ? [1, 100, 1000] : [1, 10, 100, 1000, 10_000, 100_000];
const mostFiles = counts.at(-1)!;

interface Point {
  label: string;
  files: number;
  describedBytes: number;
  blobBytes: number;
  /** The first serialise after the files were made: the records of every group they are in are hashed. */
  firstSerialiseMs: number;
  serialiseMs: Stats;
  restoreMs: Stats;
  totalMs: Stats;
  /**
   * The floor: what any handover that verifies every live record reads, on each side: one word of each cache line a
   * live record uses (its fields, bytes [0, 136), and its name's first line), from a fresh mapping of the metadata
   * (the restore), then again from that mapping (the serialise, whose mount maps it already). Timed in the same run,
   * on the same pool.
   */
  recordFloorMs?: Stats;
}

/**
 * Serialise, let go, mount again (restoring), `runs` times for each of `versions`, their rounds alternating so that
 * neither is measured in a quieter minute than the other; each version's first round is a warm-up (its serialise, the
 * first since the files were made, is kept apart). Before each serialise one file's times change, as some metadata
 * changes on a host between two updates: a version-2 serialise rehashes the groups written since the last handover.
 */
function measure(
  pool: Pool,
  fs: Filesystem,
  label: string,
  files: number,
  describedBytes: number,
  versions: readonly HandoverVersion[],
  changed: string,
): { points: Point[]; fs: Filesystem } {
  const samples = versions.map(() => ({ serialise: [] as number[], restore: [] as number[], firstSerialiseMs: 0, blobBytes: 0 }));
  let current = fs;
  for (let round = 0; round < (runs + 1) * versions.length; round++) {
    const version = versions[round % versions.length]!;
    const sample = samples[round % versions.length]!;
    current.utimes(changed, BigInt(round), BigInt(round));
    const started = process.hrtime.bigint();
    const result = current.serialise({ handoverVersion: version });
    const serialised = process.hrtime.bigint();
    current.unmount();
    const unmounted = process.hrtime.bigint();
    current = mount(pool);
    const restored = process.hrtime.bigint();
    if (current.restored?.description.handoverVersion !== version) throw new Error(`mount did not restore a version-${version} handover`);
    sample.blobBytes = result.blob.length;
    if (round < versions.length) {
      sample.firstSerialiseMs = Number(serialised - started) / 1e6;
      continue;
    }
    sample.serialise.push(Number(serialised - started) / 1e6);
    sample.restore.push(Number(restored - unmounted) / 1e6);
  }
  const points = samples.map((sample) => ({
    label,
    files,
    describedBytes,
    blobBytes: sample.blobBytes,
    firstSerialiseMs: sample.firstSerialiseMs,
    serialiseMs: stats(sample.serialise),
    restoreMs: stats(sample.restore),
    totalMs: stats(sample.serialise.map((ms, index) => ms + sample.restore[index]!)),
  }));
  return { points, fs: current };
}

/**
 * See Point.recordFloorMs: the restore side reads from a fresh mapping, the serialise side from the one its mount
 * holds (warm), as a handover does. Inodes 1 to `live` are the live ones (the root and files made one after another).
 */
function recordFloor(pool: Pool, fs: Filesystem, live: number): Stats {
  const { metadataBytes, inodeOffset } = fs.geometry;
  const samples: number[] = [];
  let sink = 0;
  for (let round = 0; round <= runs; round++) {
    const started = process.hrtime.bigint();
    const mapping = pool.map([{ offset: 0, length: metadataBytes }], { populate: false, dontDump: true, dontFork: true });
    const bytes = mapping.bytes();
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset + inodeOffset, ((live + 1) * 512) / 4);
    for (let side = 0; side < 2; side++)
      for (let word = 128, end = (live + 1) * 128; word < end; word += 128)
        sink += words[word]! + words[word + 16]! + words[word + 32]! + words[word + 64]!;
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    mapping.unmap();
    if (round > 0) samples.push(ms);
  }
  if (sink < 0) throw new Error('unreachable: keeps the reads');
  return stats(samples);
}

/** The file-count series on one pool: each count for each of `versions`, with the record floor beside version 2. */
function byFileCount(pool: Pool, versions: readonly HandoverVersion[]): Point[][] {
  const series: Point[][] = versions.map(() => []);
  mkfs(pool, { inodes: mostFiles + 16, force: true });
  let fs = mount(pool);
  let made = 0;
  for (const count of counts) {
    for (; made < count; made++) fs.create(`/vm-${made}`, { type: 'guest' });
    const { points, fs: next } = measure(pool, fs, `${count} files`, count, 0, versions, '/vm-0');
    fs = next;
    const floor = recordFloor(pool, fs, count + 1);
    points.forEach((point, index) => series[index]!.push(versions[index] === 2 ? { ...point, recordFloorMs: floor } : point));
  }
  fs.unmount();
  return series;
}

/** Restores in a fresh process `runs` times (the successor of a live update), on a pool holding `files` files. */
function freshProcessRestore(pool: Pool): { files: number; restoreMs: Stats; serialiseMs: Stats } {
  mkfs(pool, { inodes: mostFiles + 16, force: true });
  const fs = mount(pool);
  for (let made = 0; made < mostFiles; made++) fs.create(`/vm-${made}`, { type: 'guest' });
  fs.serialise();
  fs.unmount();
  const child = path.join(repoRoot, 'dist', 'bench', 'handover-child.js');
  const restore: number[] = [];
  const serialise: number[] = [];
  for (let round = 0; round < runs; round++) {
    const result = spawnSync(process.execPath, [child, pool.path!], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`handover child failed: ${result.stderr}`);
    const measured = JSON.parse(result.stdout) as { restoreMs: number; serialiseMs: number; files: number };
    if (measured.files !== mostFiles + 1) throw new Error(`the child restored ${measured.files} inodes, not ${mostFiles + 1}`);
    restore.push(measured.restoreMs);
    serialise.push(measured.serialiseMs);
  }
  mount(pool).unmount();
  return { files: mostFiles, restoreMs: stats(restore), serialiseMs: stats(serialise) };
}

/** The series on a pool of 2 MiB pages (what a VMM's pool is), or why there is none. */
function onHugePages(): { v2: Point[]; v1: Point[]; fresh: ReturnType<typeof freshProcessRestore> } | { skipped: string } {
  const size = quickMode ? 64 * MiB : 128 * MiB;
  let reservation;
  try {
    reservation = reserveBenchPages(2 * MiB, size / (2 * MiB));
  } catch (error) {
    return { skipped: (error as Error).message };
  }
  const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(reservation.mountpoint!, `handover-${process.pid}`), size });
  try {
    const [v2, v1] = byFileCount(pool, [2, 1]);
    return { v2: v2!, v1: v1!, fresh: freshProcessRestore(pool) };
  } finally {
    pool.close();
    fs.rmSync(pool.path!, { force: true });
    reservation.release();
  }
}

function onSmallPages(): Point[] {
  const pool = Pool.create({ backend: 'memfd-4k', size: 512 * MiB, sparse: true });
  try {
    return byFileCount(pool, [2])[0]!;
  } finally {
    pool.close();
  }
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
      const {
        points: [point],
        fs: last,
      } = measure(pool, fs, `${formatSize(size)} in one file`, 1, size, [2], '/ram');
      last.unmount();
      points.push(point!);
    } finally {
      pool.close();
    }
  }
  return points;
}

/** Least-squares slope of the total over x. */
function slope(points: Point[], x: (point: Point) => number): number {
  const xs = points.map(x);
  const ys = points.map((point) => point.totalMs.median);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const num = xs.reduce((sum, value, index) => sum + (value - mx) * (ys[index]! - my), 0);
  const den = xs.reduce((sum, value) => sum + (value - mx) ** 2, 0);
  return num / den;
}

/**
 * Handovers of both versions on a small pool before anything is timed, so that neither version's series pays for
 * compiling the code both share (the first series run would otherwise be the slower at a few files).
 */
function warmUp(): void {
  const pool = Pool.create({ backend: 'memfd-4k', size: 16 * MiB });
  try {
    mkfs(pool, { inodes: 4096 });
    let fs = mount(pool);
    for (let made = 0; made < 3000; made++) fs.create(`/vm-${made}`, { type: 'guest' });
    for (let round = 0; round < 40; round++) {
      fs.utimes('/vm-0', BigInt(round), BigInt(round));
      fs.serialise({ handoverVersion: round % 2 === 0 ? 2 : 1 });
      fs.unmount();
      fs = mount(pool);
    }
    fs.unmount();
  } finally {
    pool.close();
  }
}

warmUp();
// The size series first: what it measures is a fraction of a millisecond, which the garbage of the 100,000-file series
// (their filesystems and live lists, freed only by the collector) would otherwise weigh on.
const sizes = byDescribedSize();
const huge = onHugePages();
const small = onSmallPages();
const files = 'skipped' in huge ? small : huge.v2;
const file = writeResults(
  'handover',
  {
    runs,
    byFileCount: files,
    byFileCountPool: 'skipped' in huge ? 'memfd-4k (no 2 MiB pages here)' : 'hugetlbfs, 2 MiB pages',
    byFileCount4KiB: small,
    byFileCountVersion1: 'skipped' in huge ? [] : huge.v1,
    freshProcess: 'skipped' in huge ? null : huge.fresh,
    hugePagesSkipped: 'skipped' in huge ? huge.skipped : null,
    byDescribedSize: sizes,
    slopes: {
      msPerThousandFiles: slope(files, (point) => point.files / 1000),
      msPerTiBDescribed: slope(sizes, (point) => point.describedBytes / TiB),
    },
    targets: {
      files: '100,000 files: serialise + restore <= 20 ms (issue 17), on the pool of 2 MiB pages',
      described: '100 GiB described (51,200 blocks): serialise + restore <= 1 ms',
    },
    anchors: { pkramSave100GiBMs: 13, pkramLoad100GiBMs: 101, committedBeforeVersion2Ms: 66.3, issue17BaselineMs: 188 },
    pool: 'restore includes mapping the metadata, checking the blob and the records, and building the name index',
  },
  quickMode,
);
const out = (line: string) => process.stdout.write(`${line}\n`);
out(`handover (serialise + unmount, then mount restoring), median of ${runs}:`);
const series: Array<[string, Point[]]> = [
  ['2 MiB pages, v2', 'skipped' in huge ? [] : huge.v2],
  ['2 MiB pages, v1', 'skipped' in huge ? [] : huge.v1],
  ['4 KiB pages, v2', small],
  ['described', sizes],
];
for (const [name, points] of series)
  for (const point of points)
    out(
      `  ${name.padEnd(16)} ${point.label.padEnd(20)} blob ${String(point.blobBytes).padStart(8)} B  serialise ` +
        `${point.serialiseMs.median.toFixed(3).padStart(8)} ms  restore ${point.restoreMs.median.toFixed(3).padStart(8)} ms  total ` +
        `${point.totalMs.median.toFixed(3).padStart(8)} ms` +
        (point.recordFloorMs ? `  (record floor ${point.recordFloorMs.median.toFixed(3)} ms)` : '') +
        `  first serialise ${point.firstSerialiseMs.toFixed(3)} ms`,
    );
if ('skipped' in huge) out(`no 2 MiB-page series: ${huge.skipped}`);
else out(`fresh process, ${huge.fresh.files} files: restore ${huge.fresh.restoreMs.median.toFixed(3)} ms (median of ${runs})`);
out(`results: ${path.relative(repoRoot, file)}`);

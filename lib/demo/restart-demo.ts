// The foundation demo: guest memory in a pool survives the process that wrote it, on the same physical pages.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { hugePageSizeInfo } from '../pool/hugepages';
import type { Mapping } from '../pool/mapping';
import { Pool } from '../pool/pool';
import { reserveHugePages, type Reservation } from '../pool/reserve';
import { formatSize, MiB } from '../units';

export interface DemoOptions {
  size: number;
  log: (line: string) => void;
  /** Script that runs `verifyInFreshProcess` in a new Node process (the CLI passes itself). */
  verifierArgv: (poolPath: string, checksum: string, framesFile: string) => string[];
}

/** Fills the mapping with a position-dependent pattern and returns its checksum. */
export function writePattern(mapping: Mapping, seed: number): bigint {
  const words = new Uint32Array(mapping.buffer);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[i] = state >>> 0;
  }
  return checksum(mapping);
}

/** 64-bit sum of the mapping's 64-bit words. */
export function checksum(mapping: Mapping): bigint {
  const words = new BigUint64Array(mapping.buffer);
  let sum = 0n;
  const stride = 4096; // summing every word of GiBs in BigInt is slow; page-strided sums still catch any lost page
  for (let i = 0; i < words.length; i += stride / 8) sum = (sum + words[i]! + words[i + 1]! + words[i + 511]!) & 0xffffffffffffffffn;
  return sum;
}

function choosePool(size: number, log: (line: string) => void): { pool: Pool; reservation: Reservation | undefined; cleanup: () => void } {
  const pageSize = 2 * MiB;
  const pages = size / pageSize;
  let reservation: Reservation | undefined;
  try {
    if (hugePageSizeInfo(pageSize)) {
      reservation = reserveHugePages({ pageSize, pages, mount: true });
      for (const change of reservation.changes) log(`  machine: ${change}`);
      const pool = Pool.create({ backend: 'hugetlbfs', path: path.join(reservation.mountpoint!, 'demo-pool'), size });
      return { pool, reservation, cleanup: () => { pool.destroy(); reservation!.release(); } };
    }
  } catch (error) {
    reservation?.release();
    log(`  huge pages unavailable (${(error as Error).message})`);
  }
  log('  using the 4 KiB fallback (shm-4k under /dev/shm): guest memory will not be on huge pages');
  const pool = Pool.create({ backend: 'shm-4k', path: path.join('/dev/shm', `guestmemfs-demo-${process.pid}`), size });
  return { pool, reservation: undefined, cleanup: () => pool.destroy() };
}

export function runRestartDemo(options: DemoOptions): void {
  const { log } = options;
  log(`guestmemfs demo: ${formatSize(options.size)} of guest memory outlives the process that wrote it`);
  const { pool, cleanup } = choosePool(options.size, log);
  const framesFile = path.join(os.tmpdir(), `guestmemfs-demo-frames-${process.pid}.json`);
  try {
    log(`  pool: ${pool.describe()}`);
    const started = process.hrtime.bigint();
    const mapping = pool.mapAll({ dontDump: true, dontFork: true });
    log(`  mapped and pre-faulted in ${ms(started)} ms (${mapping.mmapCalls} mmap call, page size ${formatSize(mapping.kernelPageSizes()[0]!)})`);
    const sum = writePattern(mapping, 0x9e3779b9);
    let frames: string[] | null = null;
    try {
      frames = mapping.physicalFrames().map((frame) => String(frame));
      log(`  wrote a pattern, checksum ${sum.toString(16)}; physical frames ${frames[0]}..${frames.at(-1)} (${frames.length} pages)`);
    } catch (error) {
      log(`  wrote a pattern, checksum ${sum.toString(16)}; physical frames not readable (${(error as Error).message})`);
    }
    fs.writeFileSync(framesFile, JSON.stringify(frames));
    mapping.unmap();
    log('  this process lets go of the memory; a fresh process opens the pool:');
    const argv = options.verifierArgv(pool.path!, sum.toString(16), framesFile);
    const child = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    for (const line of child.stdout.split('\n').filter(Boolean)) log(`  ${line}`);
    if (child.status !== 0) throw new GuestmemfsError('EIO', `the fresh process could not verify the pool: ${child.stderr.trim()}`);
  } finally {
    fs.rmSync(framesFile, { force: true });
    cleanup();
  }
}

/** Runs in the fresh process: maps the pool and checks every page came through, on the same frames. */
export function verifyInFreshProcess(poolPath: string, expectedChecksum: string, framesFile: string, log: (line: string) => void): void {
  const started = process.hrtime.bigint();
  const pool = Pool.open(poolPath);
  const mapping = pool.mapAll();
  const mapMs = ms(started);
  const sum = checksum(mapping).toString(16);
  const expectedFrames = JSON.parse(fs.readFileSync(framesFile, 'utf8')) as string[] | null;
  let framesVerdict = 'physical frames not compared (needs root)';
  if (expectedFrames) {
    const frames = mapping.physicalFrames().map((frame) => String(frame));
    const same = frames.length === expectedFrames.length && frames.every((frame, index) => frame === expectedFrames[index]);
    framesVerdict = same ? `all ${frames.length} physical frames identical` : 'PHYSICAL FRAMES DIFFER';
    if (!same) process.exitCode = 1;
  }
  log(`pid ${process.pid}: re-mapped ${formatSize(pool.size)} in ${mapMs} ms; checksum ${sum} ${sum === expectedChecksum ? 'matches' : 'DIFFERS'}; ${framesVerdict}`);
  if (sum !== expectedChecksum) process.exitCode = 1;
  mapping.unmap();
  pool.close();
}

function ms(since: bigint): string {
  return (Number(process.hrtime.bigint() - since) / 1e6).toFixed(2);
}

// The main demo (npm start): guest memory in a guestmemfs file survives a live update of its owner, a kexec into a fresh
// process with the same PID, on the same physical pages, restored from the KHO-style handover.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import type { Filesystem } from '../fs/filesystem';
import { mkfs } from '../fs/format';
import { mount } from '../fs/mount';
import { openHandedOverPool } from '../fs/successor';
import { hugePageSizeInfo } from '../pool/hugepages';
import type { Mapping } from '../pool/mapping';
import { Pool } from '../pool/pool';
import { releaseReservation, reserveHugePages, type ReservationRecord } from '../pool/reserve';
import { scratchDirectory } from '../scratch';
import { formatSize, MiB } from '../units';

const T0_ENV = 'GUESTMEMFS_DEMO_T0';
const CLEANUP_ENV = 'GUESTMEMFS_DEMO_CLEANUP';

export interface DemoOptions {
  size: number;
  /** argv that runs `verifyHandoverDemo` in the new process image (the CLI passes itself with `demo-verify`). */
  verifierArgv: string[];
}

export interface Cleanup {
  reservation?: ReservationRecord;
  poolPath: string;
  /** The private directory the 4 KiB fallback pool was made in. */
  scratchDir?: string;
}

/** Output that must not be lost at execve: written straight to fd 1. */
export function log(line: string): void {
  fs.writeSync(1, `${line}\n`);
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

/** A 64-bit sum over every 4 KiB page (three words of each), enough to catch any page that moved or was lost. */
export function checksum(mapping: Mapping): bigint {
  const words = new BigUint64Array(mapping.buffer);
  let sum = 0n;
  for (let i = 0; i < words.length; i += 512) sum = (sum + words[i]! + words[i + 1]! + words[i + 511]!) & 0xffffffffffffffffn;
  return sum;
}

/** A pool for `size` bytes of files: huge pages when they can be reserved, else the 4 KiB fallback, saying which. */
export function choosePool(size: number): { pool: Pool; cleanup: Cleanup } {
  const pageSize = 2 * MiB;
  const poolSize = size + 64 * MiB; // room for the metadata blocks
  try {
    if (hugePageSizeInfo(pageSize)) {
      const reservation = reserveHugePages({ pageSize, pages: poolSize / pageSize, mount: true });
      for (const change of reservation.changes) log(`  machine: ${change}`);
      const poolPath = path.join(reservation.mountpoint!, 'demo-pool');
      try {
        return {
          pool: Pool.create({ backend: 'hugetlbfs', path: poolPath, size: poolSize }),
          cleanup: { reservation: reservation.record(), poolPath },
        };
      } catch (error) {
        reservation.release();
        throw error;
      }
    }
  } catch (error) {
    log(`  huge pages unavailable (${(error as Error).message})`);
  }
  log('  using the 4 KiB fallback (shm-4k under /dev/shm): guest memory will not be on huge pages');
  const scratch = scratchDirectory('/dev/shm', 'guestmemfs-demo');
  const poolPath = path.join(scratch.path, 'pool');
  try {
    return { pool: Pool.create({ backend: 'shm-4k', path: poolPath, size: poolSize }), cleanup: { poolPath, scratchDir: scratch.path } };
  } catch (error) {
    scratch.remove();
    throw error;
  }
}

export function undo(cleanup: Cleanup): void {
  fs.rmSync(cleanup.poolPath, { force: true });
  if (cleanup.scratchDir) fs.rmSync(cleanup.scratchDir, { recursive: true, force: true });
  if (cleanup.reservation) releaseReservation(cleanup.reservation);
}

export function runHandoverDemo(options: DemoOptions): void {
  log(`guestmemfs demo: ${formatSize(options.size)} of guest RAM survives a live update of its owner, without a copy`);
  const { pool, cleanup } = choosePool(options.size);
  let gfs: Filesystem | undefined;
  try {
    log(`  pool: ${pool.describe()}`);
    mkfs(pool);
    gfs = mount(pool);
    gfs.mkdir('/vm0');
    gfs.create('/vm0/ram', { type: 'guest' });
    gfs.truncate('/vm0/ram', options.size);
    const ram = gfs.map('/vm0/ram');
    const sum = writePattern(ram, 0x9e3779b9);
    let frames: string[] | null = null;
    try {
      frames = ram.physicalFrames().map(String);
    } catch {
      frames = null; // not root: the kernel hides frame numbers
    }
    ram.unmap();
    gfs.create('/vm0/vcpu-state', { type: 'state' });
    gfs.write('/vm0/vcpu-state', new TextEncoder().encode(JSON.stringify({ checksum: sum.toString(16), frames })));
    log(
      `  pid ${process.pid}: wrote /vm0/ram (${formatSize(options.size)}, checksum ` +
        `${sum.toString(16)}${frames ? `, physical frames ${frames[0]}..${frames.at(-1)}` : ''})`,
    );
    log(`  serialising the filesystem and exec'ing a new guestmemfs process (the userspace "kexec")...`);
    const env = { ...process.env, [T0_ENV]: process.hrtime.bigint().toString(), [CLEANUP_ENV]: JSON.stringify(cleanup) };
    gfs.kexec(options.verifierArgv, { env });
  } catch (error) {
    if (gfs?.mounted) gfs.unmount();
    pool.close();
    undo(cleanup);
    throw error;
  }
}

/** Runs in the new process image: restores from the handover and proves nothing moved. */
export function verifyHandoverDemo(env: NodeJS.ProcessEnv = process.env): void {
  const t0 = BigInt(env[T0_ENV] ?? '0');
  const cleanup = JSON.parse(env[CLEANUP_ENV] ?? '{}') as Cleanup;
  const pool = openHandedOverPool(env);
  try {
    const gfs = mount(pool);
    const restoredAt = process.hrtime.bigint();
    if (!gfs.restored) throw new GuestmemfsError('EIO', 'the new process did not find a handover to restore');
    const expected = JSON.parse(new TextDecoder().decode(gfs.read('/vm0/vcpu-state'))) as { checksum: string; frames: string[] | null };
    const ram = gfs.map('/vm0/ram');
    const sum = checksum(ram).toString(16);
    let framesVerdict = 'physical frames not compared (needs root)';
    let ok = sum === expected.checksum;
    if (expected.frames) {
      const frames = ram.physicalFrames().map(String);
      const same = frames.length === expected.frames.length && frames.every((frame, index) => frame === expected.frames![index]);
      framesVerdict = same ? `all ${frames.length} physical frames identical` : 'PHYSICAL FRAMES DIFFER';
      ok &&= same;
    }
    ram.unmap();
    log(
      `  pid ${process.pid}: restored ${gfs.restored.files} inodes from the handover (generation ${gfs.restored.generation}) ` +
        `in ${gfs.restored.ms.toFixed(2)} ms`,
    );
    log(`  exec + Node start-up + restore: ${(Number(restoredAt - t0) / 1e6).toFixed(1)} ms`);
    log(`  /vm0/ram checksum ${sum} ${sum === expected.checksum ? 'matches' : 'DIFFERS'}; ${framesVerdict}`);
    if (!ok) process.exitCode = 1;
    gfs.unmount();
  } finally {
    pool.close();
    undo(cleanup);
  }
}

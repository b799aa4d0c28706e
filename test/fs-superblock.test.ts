// Superblock and format: mkfs, versioned header with two checksummed copies, refusals, exclusive mount, unclean detection.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32 } from '../lib/checksum';
import { SLOT_CHECKED_BYTES } from '../lib/fs/layout';
import { KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, repoRoot } from './helpers';

const pools: Pool[] = [];
afterEach(() => {
  while (pools.length) pools.pop()!.close();
});
function freshPool(size = 4 * MiB): Pool {
  const pool = Pool.create({ backend: 'memfd-4k', size });
  pools.push(pool);
  return pool;
}

/** Raw access to the pool's header bytes, as a corruption would see them. */
function withHeader(pool: Pool, edit: (bytes: Uint8Array, view: DataView) => void): void {
  const mapping = pool.map([{ offset: 0, length: 16 * KiB }]);
  const bytes = mapping.bytes();
  edit(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  mapping.unmap();
}

describe('mkfs', () => {
  it('writes a superblock that mount reads back: geometry, uuid, version, clean state', () => {
    const pool = freshPool();
    const info = mkfs(pool, { blockSize: 64 * KiB, inodes: 100 });
    expect(info.uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(info.geometry).toMatchObject({ poolSize: 4 * MiB, pageSize: 4096, blockSize: 64 * KiB, blockCount: 64, inodeCount: 100 });
    const fs = mount(pool);
    expect(fs.uuid).toBe(info.uuid);
    expect(fs.superblock).toMatchObject({ major: 1, minor: 0, state: 1, ownerPid: process.pid, mountCount: 1n });
    expect(fs.statfs()).toMatchObject({
      blockSize: 64 * KiB,
      totalBlocks: 64,
      dataBlocks: 64 - info.geometry.metadataBlocks,
      totalInodes: 99,
      freeInodes: 98,
    });
    fs.unmount();
    const again = mount(pool);
    expect(again.superblock).toMatchObject({ state: 1, mountCount: 2n });
    expect(again.superblock.generation).toBe(2n);
    again.unmount();
  });

  it('defaults the block size to the page size on huge pages and 2 MiB on the 4 KiB fallback', () => {
    expect(mkfs(freshPool(8 * MiB)).geometry.blockSize).toBe(2 * MiB);
  });

  it('refuses to reformat a formatted pool unless forced', () => {
    const pool = freshPool();
    mkfs(pool, { blockSize: 64 * KiB });
    const error = captureError(() => mkfs(pool, { blockSize: 64 * KiB }));
    expect(error).toMatchObject({ code: 'EEXIST', syscall: 'mkfs' });
    expect(error.message).toContain('pass force to reformat');
    const forced = mkfs(pool, { blockSize: 64 * KiB, force: true });
    const fs = mount(pool);
    expect(fs.uuid).toBe(forced.uuid);
    // Data blocks of a reformatted pool may hold old bytes: all of them are dirty until zeroed.
    expect(fs.statfs().dirtyFreeBlocks).toBe(fs.statfs().dataBlocks);
    fs.unmount();
  });

  it('refuses pools too small for their metadata, bad block sizes and inode counts', () => {
    expect(captureError(() => mkfs(freshPool(64 * KiB), { blockSize: 64 * KiB })).code).toBe('ENOSPC');
    expect(captureError(() => mkfs(freshPool(), { blockSize: 3000 })).code).toBe('EINVAL');
    expect(captureError(() => mkfs(freshPool(), { blockSize: 2048 })).message).toContain('multiple of the pool');
    expect(captureError(() => mkfs(freshPool(), { blockSize: 64 * KiB, inodes: 1 })).code).toBe('EINVAL');
    expect(captureError(() => mkfs(freshPool(8192))).message).toContain('too small');
  });
});

describe('mount refuses what it does not understand, leaving the pool untouched', () => {
  function formatted(): Pool {
    const pool = freshPool();
    mkfs(pool, { blockSize: 64 * KiB });
    return pool;
  }

  it('an unformatted pool', () => {
    const error = captureError(() => mount(freshPool()));
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'mount' });
    expect(error.message).toContain('holds no guestmemfs filesystem: format it first with mkfs');
  });

  it('a newer major version', () => {
    const pool = formatted();
    withHeader(pool, (_bytes, view) => {
      for (const base of [0, 4096]) view.setUint16(base + 8, 2, true);
    });
    // The CRC no longer matches either: fix it up so the version check is what refuses.
    refreshChecksums(pool);
    const error = captureError(() => mount(pool));
    expect(error).toMatchObject({ code: 'EINVAL' });
    expect(error.message).toContain('format version 2.0 is not supported');
  });

  it('an unknown incompatible feature, and an unknown read-only-compatible one', () => {
    const pool = formatted();
    withHeader(pool, (_bytes, view) => {
      for (const base of [0, 4096]) view.setUint32(base + 20, 0x10, true);
    });
    refreshChecksums(pool);
    expect(captureError(() => mount(pool)).message).toContain('incompatible features 0x10');
    withHeader(pool, (_bytes, view) => {
      for (const base of [0, 4096]) {
        view.setUint32(base + 20, 0, true);
        view.setUint32(base + 24, 0x80, true);
      }
    });
    refreshChecksums(pool);
    expect(captureError(() => mount(pool))).toMatchObject({ code: 'EROFS' });
  });

  it('one damaged copy is survived using the other; two are refused with EUCLEAN', () => {
    const pool = formatted();
    withHeader(pool, (bytes) => {
      bytes[100] = bytes[100]! ^ 0xff; // slot A, the newer copy after mkfs (sequence 2)
    });
    // Mount falls back to slot B (sequence 1) and writes its update over the damaged slot A.
    const fs = mount(pool);
    expect(fs.superblock).toMatchObject({ slot: 0, sequence: 2n, state: 1 });
    fs.unmount();
    withHeader(pool, (bytes) => {
      bytes[200] = bytes[200]! ^ 0xff;
      bytes[4096 + 200] = bytes[4096 + 200]! ^ 0xff;
    });
    const error = captureError(() => mount(pool));
    expect(error).toMatchObject({ code: 'EUCLEAN' });
    expect(error.message).toContain('both superblock copies are damaged');
    expect(error.message).toContain('checksum mismatch');
  });

  it('a superblock whose geometry does not fit the pool', () => {
    const pool = formatted();
    withHeader(pool, (_bytes, view) => {
      for (const base of [0, 4096]) view.setUint32(base + 80, 7, true); // inode count
    });
    refreshChecksums(pool);
    const error = captureError(() => mount(pool));
    expect(error).toMatchObject({ code: 'EUCLEAN' });
    expect(error.message).toContain('geometry does not fit this pool');
  });
});

describe('exclusive mount', () => {
  it('a second mount in this process fails with EBUSY naming this pid', () => {
    const pool = freshPool();
    mkfs(pool, { blockSize: 64 * KiB });
    const fs = mount(pool);
    const error = captureError(() => mount(pool));
    expect(error).toMatchObject({ code: 'EBUSY', syscall: 'mount' });
    expect(error.message).toContain(`pid ${process.pid}`);
    expect(captureError(() => mkfs(pool, { force: true })).code).toBe('EBUSY');
    fs.unmount();
    mount(pool).unmount();
  });

  it('another process holding the mount makes ours fail with its pid; its death by SIGKILL is detected and recovered', async () => {
    const dir = '/dev/shm';
    const poolPath = path.join(dir, `guestmemfs-excl-${process.pid}`);
    const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 4 * MiB });
    try {
      mkfs(pool, { blockSize: 64 * KiB });
      mount(pool).unmount();
      const script =
        `const g=require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});const ` +
        `p=g.Pool.open(${JSON.stringify(poolPath)});g.mount(p);process.stdout.write('mounted\\n');setInterval(()=>{},1000);`;
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      const busy = captureError(() => mount(pool));
      expect(busy).toMatchObject({ code: 'EBUSY' });
      expect(busy.message).toContain(`pool is mounted by pid ${child.pid}`);
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const unclean = captureError(() => mount(pool, { repair: false }));
      expect(unclean).toMatchObject({ code: 'EUCLEAN' });
      expect(unclean.message).toContain(`owner (pid ${child.pid}) died while it was mounted`);
      const recovered = mount(pool);
      expect(recovered.recovery).toMatchObject({ previousOwnerPid: child.pid });
      expect(recovered.audit().problems).toEqual([]);
      recovered.unmount();
      const clean = mount(pool);
      expect(clean.recovery).toBeUndefined();
      clean.unmount();
    } finally {
      pool.destroy();
    }
  });
});

/** Recomputes both slots' CRC32 after a deliberate edit, so that a later check is the one under test. */
function refreshChecksums(pool: Pool): void {
  withHeader(pool, (bytes, view) => {
    for (const base of [0, 4096]) view.setUint32(base + SLOT_CHECKED_BYTES, crc32(bytes.subarray(base, base + SLOT_CHECKED_BYTES)), true);
  });
}

// Quarantined blocks: never allocated again, kept by the file that holds one (which is flagged), carried by the
// superblock, the handover blob and the checker, recovered after a kill, and refused where they cannot be.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPoolSuperblock } from '../lib/fs/format';
import { MAX_BAD_BLOCKS } from '../lib/fs/bad-block-list';
import { RO_COMPAT_BADBLOCKS } from '../lib/fs/layout';
import { check, decodeHandoverBlob, type Filesystem, KiB, mkfs, mount, type Pool } from '../lib/index';
import { rewriteSuperblock, smallFs } from './fs-helpers';
import { captureError, repoRoot, uniquePath } from './helpers';

const B = 64 * KiB;
const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

/** The blocks a file's extents cover. */
function blocksOf(gfs: Filesystem, file: string): number[] {
  return gfs.extents(file).flatMap(({ offset, length }) => Array.from({ length: length / B }, (_, index) => offset / B + index));
}

/** Gives one file every free block, and returns the blocks it got. */
function fillPool(gfs: Filesystem, file: string): number[] {
  gfs.create(file);
  gfs.truncate(file, gfs.statfs().freeBlocks * B);
  return blocksOf(gfs, file);
}

describe('quarantining a block', () => {
  it('a free block is never allocated again, across mounts and handovers, and the checker lists it', () => {
    const t = smallFs({ size: 4 * 1024 * KiB, blockSize: B });
    try {
      const bad = t.fs.geometry.metadataBlocks + 3;
      const before = t.fs.statfs();
      expect(t.fs.quarantineBlock(bad)).toEqual({ block: bad, alreadyQuarantined: false, heldBy: null });
      expect(t.fs.statfs()).toMatchObject({ freeBlocks: before.freeBlocks - 1, quarantinedBlocks: 1 });
      expect(fillPool(t.fs, '/all')).not.toContain(bad);
      expect(captureError(() => t.fs.truncate('/all', (t.fs.stat('/all').blocks + 1) * B))).toMatchObject({ code: 'ENOSPC' });
      t.fs.unmount();
      const sb = readPoolSuperblock(t.pool);
      expect(sb.badBlocks).toEqual([bad]);
      expect(sb.roCompat & RO_COMPAT_BADBLOCKS).toBe(RO_COMPAT_BADBLOCKS);

      const again = mount(t.pool);
      expect(again.badBlocks()).toEqual([bad]);
      expect(again.quarantineBlock(bad)).toEqual({ block: bad, alreadyQuarantined: true, heldBy: null });
      expect(decodeHandoverBlob(again.serialise().blob).badBlocks).toEqual([bad]);
      again.unmount();
      const successor = mount(t.pool, { requireHandover: true });
      successor.unlink('/all');
      expect(fillPool(successor, '/again')).not.toContain(bad);
      expect(successor.audit().problems).toEqual([]);
      successor.unmount();
      expect(check(t.pool)).toMatchObject({ state: 'consistent', quarantined: [{ block: bad, ino: null }] });
    } finally {
      t.close();
    }
  });

  it('a block a file holds stays in it and flags it; once the file lets go, the block stays out of service', () => {
    const t = smallFs({ size: 4 * 1024 * KiB, blockSize: B });
    try {
      t.fs.create('/ram', { type: 'guest' });
      t.fs.truncate('/ram', 4 * B);
      const bad = blocksOf(t.fs, '/ram')[1]!;
      const ino = t.fs.stat('/ram').ino;
      expect(t.fs.quarantineBlock(bad)).toEqual({ block: bad, alreadyQuarantined: false, heldBy: { ino, path: '/ram' } });
      expect(t.fs.stat('/ram')).toMatchObject({ blocks: 4, quarantinedBlocks: 1 });
      expect(blocksOf(t.fs, '/ram')).toContain(bad); // a guest may be using it: nothing is taken from under it
      t.fs.unmount();
      expect(check(t.pool)).toMatchObject({ state: 'consistent', quarantined: [{ block: bad, ino }] });
      const again = mount(t.pool);
      const free = again.statfs().freeBlocks;
      again.truncate('/ram', 0);
      expect(again.stat('/ram').quarantinedBlocks).toBe(0);
      expect(again.statfs().freeBlocks).toBe(free + 3); // four blocks let go of, the bad one kept out
      expect(fillPool(again, '/all')).not.toContain(bad);
      expect(again.audit().problems).toEqual([]);
      again.unmount();
    } finally {
      t.close();
    }
  });

  it('what cannot be quarantined is refused, and the list does not change', () => {
    const t = smallFs({ size: 8 * 1024 * KiB, blockSize: B });
    try {
      const { metadataBlocks, blockCount } = t.fs.geometry;
      const unchanged = () => expect(t.fs.badBlocks()).toEqual([]);
      expect(captureError(() => t.fs.quarantineBlock('9' as unknown as number))).toBeInstanceOf(TypeError);
      for (const block of [-1, 1.5, blockCount, Number.NaN])
        expect(captureError(() => t.fs.quarantineBlock(block))).toBeInstanceOf(RangeError);
      const metadata = captureError(() => t.fs.quarantineBlock(metadataBlocks - 1));
      expect(metadata).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'badblock' });
      expect(metadata.message).toContain("holds the pool's metadata");
      expect(captureError(() => t.fs.actingAs({ uid: 1000, gid: 1000 }, () => t.fs.quarantineBlock(metadataBlocks)))).toMatchObject({
        code: 'EPERM',
        syscall: 'badblock',
      });
      t.fs.serialise();
      expect(captureError(() => t.fs.quarantineBlock(metadataBlocks))).toMatchObject({ code: 'EBUSY' });
      t.fs.abort();
      unchanged();
      const view = mount(t.pool, { readOnly: true });
      expect(captureError(() => view.quarantineBlock(metadataBlocks))).toMatchObject({ code: 'EROFS' });
      view.unmount();
      for (let index = 0; index < MAX_BAD_BLOCKS; index++) t.fs.quarantineBlock(metadataBlocks + index);
      const full = captureError(() => t.fs.quarantineBlock(metadataBlocks + MAX_BAD_BLOCKS));
      expect(full).toMatchObject({ code: 'ENOSPC' });
      expect(full.message).toContain(`the bad-block list is full (${MAX_BAD_BLOCKS} blocks)`);
      expect(t.fs.badBlocks()).toHaveLength(MAX_BAD_BLOCKS);
    } finally {
      t.close();
    }
  });

  it('a bitmap that lost a quarantined block (a kill after the superblock write) is mended at the next mount', () => {
    const t = smallFs({ size: 4 * 1024 * KiB, blockSize: B });
    try {
      const bad = t.fs.geometry.metadataBlocks + 2;
      t.fs.quarantineBlock(bad);
      const { bitmapOffset } = t.fs.geometry;
      t.fs.unmount();
      clearBitmapBit(t.pool, bitmapOffset, bad);
      expect(check(t.pool).problems).toContain(`block ${bad}: bitmap says free, the bad-block list says quarantined`);
      const again = mount(t.pool);
      expect(again.recovery?.fixes.length).toBeGreaterThan(0);
      expect(again.audit().problems).toEqual([]);
      expect(fillPool(again, '/all')).not.toContain(bad);
      again.unmount();
    } finally {
      t.close();
    }
  });

  it('a reformat keeps quarantined memory out of service, in the new block size, or is refused', () => {
    const t = smallFs({ size: 4 * 1024 * KiB, blockSize: B });
    try {
      const bad = t.fs.geometry.metadataBlocks + 1;
      t.fs.quarantineBlock(bad);
      t.fs.unmount();
      // Metadata of 4,000 inodes would reach past that block: refused, and the pool keeps its filesystem and list.
      const refused = captureError(() => mkfs(t.pool, { blockSize: B, inodes: 4000, force: true }));
      expect(refused).toMatchObject({ code: 'EINVAL', syscall: 'mkfs' });
      expect(refused.message).toContain(`would hold quarantined memory (block ${bad})`);
      expect(readPoolSuperblock(t.pool).badBlocks).toEqual([bad]);
      // Half the block size: the same 64 KiB are two blocks now, both out of service.
      mkfs(t.pool, { blockSize: B / 2, force: true });
      expect(readPoolSuperblock(t.pool).badBlocks).toEqual([2 * bad, 2 * bad + 1]);
      const again = mount(t.pool);
      expect(again.statfs().quarantinedBlocks).toBe(2);
      again.create('/all');
      again.truncate('/all', again.statfs().freeBlocks * (B / 2));
      const held = again.extents('/all').flatMap(({ offset, length }) => [offset, offset + length]);
      for (let at = 0; at < held.length; at += 2) expect(held[at + 1]! <= bad * B || held[at]! >= (bad + 1) * B).toBe(true);
      expect(again.audit().problems).toEqual([]);
      again.unmount();
      mkfs(t.pool, { blockSize: B, force: true, forgetBadBlocks: true });
      expect(readPoolSuperblock(t.pool).badBlocks).toEqual([]);
    } finally {
      t.close();
    }
  });

  it('a handover whose bad-block list disagrees with the superblock is refused', () => {
    const t = smallFs({ size: 4 * 1024 * KiB, blockSize: B });
    try {
      t.fs.quarantineBlock(t.fs.geometry.metadataBlocks);
      t.fs.serialise();
      t.fs.unmount();
      rewriteSuperblock(t.pool, { badBlocks: [] });
      const error = captureError(() => mount(t.pool, { requireHandover: true }));
      expect(error).toMatchObject({ code: 'EUCLEAN' });
      expect(error.message).toContain('handover refused (bad-blocks)');
    } finally {
      t.close();
    }
  });
});

/** Clears one block's bit in the allocated bitmap, as a kill between the superblock write and the bitmap would leave it. */
function clearBitmapBit(pool: Pool, bitmapOffset: number, block: number): void {
  const mapping = pool.map([{ offset: 0, length: bitmapOffset + 4096 }], { populate: true });
  try {
    const word = new Uint32Array(mapping.buffer, bitmapOffset + (block >>> 5) * 4, 1);
    word[0] = word[0]! & ~(1 << (block & 31));
  } finally {
    mapping.unmap();
  }
}

describe('guestmemfs badblock', () => {
  it('quarantines by block or by byte offset; ls, stat, status and check flag it', () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-badblock');
    try {
      expect(run('mkfs', pool, '--size', '16M', '-q').status).toBe(0);
      expect(run('touch', '--type', 'guest', pool, '/ram').status).toBe(0);
      expect(run('truncate', '-s', '4M', pool, '/ram').status).toBe(0);
      const extents = JSON.parse(run('stat', '--json', pool, '/ram').stdout) as { extents: Array<{ offset: number }> };
      const held = extents.extents[0]!.offset;
      const byOffset = run('badblock', pool, `0x${(held + 4096).toString(16)}`);
      expect(byOffset.stderr).toBe('');
      expect(byOffset.stdout).toBe(
        `${pool}: block ${held / (2 * 1024 * KiB)} quarantined; /ram (inode 2) holds it, keeps it and is flagged\n`,
      );
      const last = 7;
      expect(run('badblock', pool, String(last)).stdout).toBe(
        `${pool}: block ${last} quarantined; it was free and is never allocated again\n`,
      );
      expect(run('ls', '-l', pool, '/').stdout).toContain('ram   [holds 1 quarantined block]');
      expect(run('stat', pool, '/ram').stdout).toContain('[holds 1 quarantined block]');
      expect(run('status', pool).stdout).toContain(`bad blocks: 2 quarantined (${held / (2 * 1024 * KiB)}, ${last})`);
      const checked = run('check', pool);
      expect(checked.status).toBe(0);
      expect(checked.stdout).toContain(`  quarantined: block ${last}, out of service`);
      expect(run('badblock', pool, 'lots').status).toBe(2);
      const metadata = run('badblock', pool, '0');
      expect(metadata.status).toBe(1);
      expect(metadata.stderr).toContain("holds the pool's metadata");
    } finally {
      fs.rmSync(pool, { force: true });
    }
  });
});

// Helpers for filesystem tests: small formatted pools on the 4 KiB fallback (no huge pages needed) with small blocks.
import { readPoolSuperblock } from '../lib/fs/format';
import { type Superblock, writeSuperblockSlot } from '../lib/fs/layout';
import { type Filesystem, KiB, mkfs, type MkfsOptions, mount, type MountOptions, Pool } from '../lib/index';

export interface TestFs {
  pool: Pool;
  fs: Filesystem;
  /** Unmounts if still mounted and closes the pool. */
  close(): void;
}

/** A memfd-4k pool of `size` bytes formatted with `blockSize` blocks (64 KiB by default) and mounted. */
export function smallFs(
  options: { size?: number; blockSize?: number; inodes?: number; maxSize?: number; mount?: MountOptions } = {},
): TestFs {
  const pool = Pool.create({ backend: 'memfd-4k', size: options.size ?? 4 * 1024 * KiB });
  const format: MkfsOptions = { blockSize: options.blockSize ?? 64 * KiB };
  if (options.inodes) format.inodes = options.inodes;
  if (options.maxSize) format.maxSize = options.maxSize;
  mkfs(pool, format);
  const fs = mount(pool, options.mount);
  return {
    pool,
    fs,
    close() {
      if (fs.mounted) fs.unmount();
      pool.close();
    },
  };
}

/** Rewrites both superblock copies of an unmounted pool with `change` applied (what a stray writer or another release could leave). */
export function rewriteSuperblock(pool: Pool, change: Partial<Superblock>): void {
  const sb = readPoolSuperblock(pool);
  const header = pool.map([{ offset: 0, length: Math.max(pool.pageSize, 16384) }], { populate: true });
  try {
    const bytes = header.bytes(0, 8192);
    writeSuperblockSlot(bytes, 1 - sb.slot, { ...sb, ...change, sequence: sb.sequence + 1n });
    writeSuperblockSlot(bytes, sb.slot, { ...sb, ...change, sequence: sb.sequence + 2n });
  } finally {
    header.unmap();
  }
}

/**
 * Leaves the free space as `holes` holes of one block each, every other block of a run of 2 x `holes` one-block files
 * (`${prefix}0`, `${prefix}1`, ...), with the rest of the pool in '/filler': a file truncated next lands in pieces.
 */
export function leaveHoles(fs: Filesystem, holes: number, prefix: string): void {
  const blockSize = fs.geometry.blockSize;
  for (let i = 0; i < 2 * holes; i++) {
    fs.create(`${prefix}${i}`);
    fs.truncate(`${prefix}${i}`, blockSize);
  }
  fs.create('/filler');
  fs.truncate('/filler', fs.statfs().freeBlocks * blockSize);
  for (let i = 0; i < 2 * holes; i += 2) fs.unlink(`${prefix}${i}`);
}

// Pool geometry: where each metadata region goes and how large it is, for a pool's block size, inode count and the
// most blocks it may ever hold (its capacity: a pool formatted for growth has metadata sized for it from the start).
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';

/** Each of the four records of the fixed header (two superblock slots, intent, hints) is one 4 KiB page. */
export const HEADER_RECORD_BYTES = 4096;
export const FIXED_HEADER_BYTES = 4 * HEADER_RECORD_BYTES;
/** Every region after the fixed header starts on a 4 KiB boundary, so each can be mapped and checked on its own. */
export const REGION_ALIGNMENT = 4096;
/** The handover area's room for the blob's fixed nodes; per-inode and per-extent-page entries come on top. */
const HANDOVER_FIXED_BYTES = 65536;

export const INODE_SIZE = 512;
export const EXTENT_PAGE_SIZE = 512;
export const INLINE_EXTENTS = 4;
export const EXTENTS_PER_PAGE = 62;

/**
 * Pool geometry. Everything but `poolSize` and `blockCount` is fixed at mkfs; those two change only when the pool is
 * resized, within `maxBlockCount`.
 */
export interface Geometry {
  /** Bytes the filesystem spans now (blockCount x blockSize). */
  poolSize: number;
  pageSize: number;
  blockSize: number;
  /** Blocks the filesystem spans now: the metadata region and every data block. */
  blockCount: number;
  /** The most blocks the pool may grow to: the bitmaps and extent pages are sized for this many. */
  maxBlockCount: number;
  metadataBlocks: number;
  inodeCount: number;
  extentPageCount: number;
  bitmapOffset: number;
  bitmapLength: number;
  dirtyOffset: number;
  inodeOffset: number;
  extentOffset: number;
  handoverOffset: number;
  handoverLength: number;
  /** Bytes of the metadata region (metadataBlocks x blockSize). */
  metadataBytes: number;
}

const align = (value: number, to: number) => Math.ceil(value / to) * to;

const DEFAULT_MIN_INODES = 1024;
const DEFAULT_MAX_INODES = 65536;

/** Default inode count: two per block, at least 1024 and at most 65536. */
export function defaultInodeCount(blockCount: number): number {
  return Math.min(DEFAULT_MAX_INODES, Math.max(DEFAULT_MIN_INODES, blockCount * 2));
}

/**
 * Extent pages needed so that the extent store can never run out: a file with E > 4 extents uses at most
 * ceil((E - 4) / 62) pages, every extent holds at least one block, so at most blockCount / 5 files overflow.
 */
export function extentPagesFor(blockCount: number): number {
  return Math.ceil(blockCount / 5) + Math.ceil(blockCount / EXTENTS_PER_PAGE) + 8;
}

/**
 * The geometry of a pool of `poolSize` bytes whose metadata is sized for `maxSize` bytes (the same, for a pool that
 * never grows).
 */
export function computeGeometry(
  poolSize: number,
  pageSize: number,
  blockSize: number,
  inodeCount: number,
  maxSize: number = poolSize,
): Geometry {
  if (blockSize % pageSize !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `block size ${formatSize(blockSize)} must be a multiple of the pool's ${formatSize(pageSize)} pages`,
    );
  }
  if (poolSize % blockSize !== 0) {
    throw new GuestmemfsError('EINVAL', `pool size ${formatSize(poolSize)} is not a multiple of the ${formatSize(blockSize)} block size`);
  }
  if (!Number.isSafeInteger(maxSize) || maxSize < poolSize || maxSize % blockSize !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `maximum size ${formatSize(maxSize)} must be a multiple of the ${formatSize(blockSize)} block size and at least the ` +
        `pool's ${formatSize(poolSize)}`,
    );
  }
  const blockCount = poolSize / blockSize;
  const maxBlockCount = maxSize / blockSize;
  if (maxBlockCount > 0xffffffff)
    throw new GuestmemfsError('EINVAL', `pool has ${maxBlockCount} blocks; at most 2^32 are supported: use a larger block size`);
  if (!Number.isSafeInteger(inodeCount) || inodeCount < 2 || inodeCount > 0x7fffffff) {
    throw new GuestmemfsError('EINVAL', `inode count ${inodeCount} must be an integer between 2 and 2^31`);
  }
  const extentPageCount = extentPagesFor(maxBlockCount);
  const bitmapLength = align(Math.ceil(maxBlockCount / 8), 8);
  const bitmapOffset = FIXED_HEADER_BYTES;
  const dirtyOffset = align(bitmapOffset + bitmapLength, REGION_ALIGNMENT);
  const inodeOffset = align(dirtyOffset + bitmapLength, REGION_ALIGNMENT);
  const extentOffset = align(inodeOffset + inodeCount * INODE_SIZE, REGION_ALIGNMENT);
  const handoverOffset = align(extentOffset + extentPageCount * EXTENT_PAGE_SIZE, REGION_ALIGNMENT);
  // Room for the handover blob: fixed nodes plus per-inode and per-extent-page entries.
  const handoverLength = align(HANDOVER_FIXED_BYTES + 8 * inodeCount + 8 * extentPageCount, REGION_ALIGNMENT);
  const metadataBlocks = Math.ceil((handoverOffset + handoverLength) / blockSize);
  if (metadataBlocks >= blockCount) {
    throw new GuestmemfsError(
      'ENOSPC',
      `pool of ${formatSize(poolSize)} is too small: its metadata (${inodeCount} inodes) ` +
        `needs ${metadataBlocks} of its ${blockCount} ${formatSize(blockSize)} blocks; use a larger pool or fewer inodes`,
    );
  }
  return {
    poolSize,
    pageSize,
    blockSize,
    blockCount,
    maxBlockCount,
    metadataBlocks,
    inodeCount,
    extentPageCount,
    bitmapOffset,
    bitmapLength,
    dirtyOffset,
    inodeOffset,
    extentOffset,
    handoverOffset,
    handoverLength,
    metadataBytes: metadataBlocks * blockSize,
  };
}

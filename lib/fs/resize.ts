// Online resize: a mounted pool grows into more memory or gives free blocks at its end back, while its files stay
// mapped. The superblock's size is the commit point; the pool file is never smaller than it says.
//
// Growing: reserve and allocate the new pages (the file is now larger than the filesystem), forget dirty bits past
// the end (the pages are fresh zeroes), commit the new size, then free the new blocks. Shrinking: take the free
// blocks of the tail, commit the smaller size, give the tail's pages back, then forget its dirty bits. A kill between
// two steps leaves a state the next mount recovers: a file larger than the filesystem is cut back to it
// (trimExcess), blocks taken but not yet freed (or not yet given back) are leaked blocks that repair frees.
import { GuestmemfsError } from '../errors';
import { describeHolders, isPinned, pinHolders } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { elapsedMs, formatSize } from '../units';
import { type MountContext, POOL_BUSY } from './context';
import { excessBytes, INCOMPAT_RESIZABLE, numaNodeOf } from './layout';
import { holderOf } from './badblocks';
import { FLAG_ORPHAN } from './inodes';
import type { MetadataViews } from './views';

export interface ResizeResult {
  /** Bytes the filesystem spanned before and spans now. */
  from: number;
  to: number;
  /** Blocks that joined (positive) or left (negative) the free space. */
  blocks: number;
  /** How long the resize took, most of it the kernel allocating and zeroing new pages. */
  ms: number;
}

export interface ResizeOptions {
  /** Called as new pages are allocated (growing many GiB takes seconds). */
  onProgress?: (done: number, total: number) => void;
}

/** The sizes a pool may be resized to now: from just past its last used block up to its capacity. */
export function resizeLimits(views: MetadataViews): { minSize: number; maxSize: number } {
  const { blockSize, maxBlockCount, metadataBlocks } = views.geometry;
  return { minSize: Math.max(metadataBlocks + 1, views.allocator.usedEnd()) * blockSize, maxSize: maxBlockCount * blockSize };
}

/** Resizes the filesystem (root only) to `size` bytes, a multiple of the block size within resizeLimits(). */
export function resize(ctx: MountContext, size: number, options: ResizeOptions = {}): ResizeResult {
  const started = process.hrtime.bigint();
  const { from, target, blockCount } = planResize(ctx, size);
  if (target > blockCount) {
    prepareGrow(ctx);
    ctx.pool.resize(target * ctx.geometry.blockSize, { node: numaNodeOf(ctx.superblock), onProgress: options.onProgress });
    commitGrow(ctx, target);
  } else if (target < blockCount) shrink(ctx, target);
  return { from, to: size, blocks: target - blockCount, ms: elapsedMs(started) };
}

/**
 * resize(), with a grow's new pages allocated by a worker thread: this thread (a mount service) serves other calls
 * meanwhile. Until it settles the pool counts as busy: no other resize, serialise or unmount, and a kill leaves the
 * uncommitted state the next mount recovers from.
 */
export async function resizeAsync(ctx: MountContext, size: number, options: ResizeOptions = {}): Promise<ResizeResult> {
  const started = process.hrtime.bigint();
  const { from, target, blockCount } = planResize(ctx, size);
  // A shrink, or no change, has nothing to wait for: done at once, as resize() does it.
  if (target < blockCount) shrink(ctx, target);
  if (target <= blockCount) return { from, to: size, blocks: target - blockCount, ms: elapsedMs(started) };
  prepareGrow(ctx);
  ctx.busy.add(POOL_BUSY);
  try {
    await ctx.pool.resizeAsync(target * ctx.geometry.blockSize, { node: numaNodeOf(ctx.superblock), onProgress: options.onProgress });
  } finally {
    ctx.endBusy(POOL_BUSY);
  }
  commitGrow(ctx, target);
  return { from, to: size, blocks: target - blockCount, ms: elapsedMs(started) };
}

/** Checks a resize to `size` bytes before anything changes. */
function planResize(ctx: MountContext, size: number): { from: number; target: number; blockCount: number } {
  const syscall = 'resize';
  const label = ctx.pool.label;
  const fields = { syscall, path: label };
  if (typeof size !== 'number') throw new TypeError(`size must be a number of bytes, got ${typeof size}`);
  ctx.requireWritable(syscall);
  ctx.requireRoot(syscall, label, 'resize the pool');
  if (ctx.views.allocator.largeFrom !== undefined) {
    throw new GuestmemfsError(
      'ENOTSUP',
      'a hybrid pool (2 MiB and 1 GiB pages) cannot be resized: its 1 GiB pages follow the 2 MiB ones; ' +
        'use pools of one page size to resize',
      fields,
    );
  }
  const { blockSize, blockCount, maxBlockCount, metadataBlocks } = ctx.geometry;
  if (!Number.isSafeInteger(size) || size <= 0 || size % blockSize !== 0)
    throw new RangeError(`size must be a positive multiple of the ${formatSize(blockSize)} block size, got ${size}`);
  const target = size / blockSize;
  if (target > maxBlockCount) {
    throw new GuestmemfsError(
      'EFBIG',
      `the pool was formatted for at most ${formatSize(maxBlockCount * blockSize)}: reformat it with a larger maxSize ` +
        `(mkfs --max-size) to grow it to ${formatSize(size)}`,
      fields,
    );
  }
  if (target <= metadataBlocks) {
    throw new GuestmemfsError(
      'EINVAL',
      `${formatSize(size)} would leave no data block: the metadata alone takes ${formatSize(metadataBlocks * blockSize)}`,
      fields,
    );
  }
  // Zeroing in flight uses the mapping of the whole pool that a shrink takes away; another resize would race this one.
  if (ctx.busy.size > 0) throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before resizing', fields);
  return { from: ctx.geometry.poolSize, target, blockCount };
}

/** Commits the filesystem's new extent: the superblock's size, and the flag that says capacity and size may differ. */
function commitSize(ctx: MountContext, blocks: number): void {
  ctx.views.allocator.setBlockCount(blocks);
  // The geometry object is shared by every view of this mount: they all see the new extent at once.
  Object.assign(ctx.geometry, { blockCount: blocks, poolSize: blocks * ctx.geometry.blockSize });
  ctx.writeSuperblock({ incompat: ctx.superblock.incompat | INCOMPAT_RESIZABLE });
}

/**
 * Pages past the filesystem left by an interrupted resize may hold old bytes: they go back before fresh ones come,
 * through the same check as the mount's recovery, so that memory a process still maps is never given back.
 */
function prepareGrow(ctx: MountContext): void {
  const outcome = trimExcess(ctx.pool, ctx.views);
  if (excessBytes(ctx.superblock, ctx.pool) > 0) {
    throw new GuestmemfsError('EBUSY', `cannot grow over it: ${outcome}; those processes must unmap it first`, {
      syscall: 'resize',
      path: ctx.pool.label,
    });
  }
}

/** After the new pages are allocated: they hold zeroes, the new size commits, then their blocks become free. */
function commitGrow(ctx: MountContext, target: number): void {
  const { blockCount } = ctx.geometry;
  const allocator = ctx.views.allocator;
  allocator.forgetDirtyBeyondEnd();
  commitSize(ctx, target);
  allocator.openTail(blockCount);
}

function shrink(ctx: MountContext, target: number): void {
  const { blockSize, blockCount } = ctx.geometry;
  const allocator = ctx.views.allocator;
  const fields = { syscall: 'resize', path: ctx.pool.label };
  const usedEnd = allocator.usedEnd();
  if (usedEnd > target) {
    const limits = resizeLimits(ctx.views);
    throw new GuestmemfsError(
      'EBUSY',
      `block ${usedEnd - 1} is ${describeUse(ctx, usedEnd - 1)}: the pool can shrink to ${formatSize(limits.minSize)} now, ` +
        `not ${formatSize(target * blockSize)} (move or remove what holds the end of the pool first)`,
      fields,
    );
  }
  const tail = [{ offset: target * blockSize, length: (blockCount - target) * blockSize }];
  if (ctx.pinned(tail)) {
    throw new GuestmemfsError(
      'EBUSY',
      `free memory at the end of the pool is ${describeHolders(ctx.pinHolders(tail))}: those processes must unmap it ` +
        `before the pool gives it back`,
      fields,
    );
  }
  allocator.closeTail(target);
  commitSize(ctx, target);
  ctx.dropDataMapping();
  ctx.pool.resize(target * blockSize);
  allocator.forgetDirtyBeyondEnd();
}

/** What holds a block, for a message: a file (its path), the bad-block list, or nothing. */
function describeUse(ctx: MountContext, block: number): string {
  if (ctx.views.allocator.isQuarantined(block)) return 'quarantined (bad memory is never given back to the kernel)';
  const holder = holderOf(ctx, block);
  if (!holder) return 'in use';
  return `held by ${ctx.inodes.flags(holder.ino) & FLAG_ORPHAN ? `unlinked inode ${holder.ino}, still mapped` : `'${holder.path}'`}`;
}

/**
 * After a kill mid-resize: the pool file is cut back to the size the superblock commits (the excess is outside the
 * filesystem). Memory someone still maps is never given back: a pinned excess stays. Returns the fix made, if any.
 */
export function trimExcess(pool: Pool, views: Pick<MetadataViews, 'allocator' | 'geometry'>): string | undefined {
  const { poolSize } = views.geometry;
  const excess = pool.size - poolSize;
  if (excess <= 0) return undefined;
  const range = [{ offset: poolSize, length: excess }];
  if (isPinned(pool, range))
    return `left ${formatSize(excess)} past the end of the filesystem: it is ${describeHolders(pinHolders(pool, range))}`;
  pool.resize(poolSize);
  views.allocator.forgetDirtyBeyondEnd();
  return `gave back ${formatSize(excess)} past the end of the filesystem (a resize was interrupted)`;
}

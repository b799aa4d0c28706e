// Quarantined blocks, the userspace analogue of the memory-failure handling guestmemfs's cover letter leaves undone:
// a block named bad is recorded in the superblock, never allocated again, and the file that holds it is flagged.
import { GuestmemfsError } from '../errors';
import type { MountContext } from './context';
import { MAX_BAD_BLOCKS } from './bad-block-list';
import { type Superblock, RO_COMPAT_BADBLOCKS } from './layout';
import { pathOf } from './names';
import { FLAG_ORPHAN } from './inodes';
import { scanOwnership } from './ownership';
import type { BlockRun } from './runs';
import type { MetadataViews } from './views';

/** What quarantining a block found and did. */
export interface QuarantineResult {
  block: number;
  /** It was on the list already: nothing changed. */
  alreadyQuarantined: boolean;
  /** The file that holds the block, which keeps it (a guest may be using it) and is flagged; null when it was free. */
  heldBy: { ino: number; path: string } | null;
}

/**
 * Quarantines a data block (root only): the superblock's bad-block list gets it first, which is the commit point,
 * then the allocator marks it allocated for good. A file holding it keeps it until it lets go of it, and then the
 * block stays out of service instead of going back to the free space.
 */
export function quarantine(ctx: MountContext, block: number): QuarantineResult {
  const syscall = 'badblock';
  const label = ctx.pool.label;
  ctx.requireWritable(syscall);
  ctx.requireRoot(syscall, label, 'quarantine memory');
  if (typeof block !== 'number') throw new TypeError(`block must be a number, got ${typeof block}`);
  const { blockCount, metadataBlocks } = ctx.geometry;
  if (!Number.isSafeInteger(block) || block < 0 || block >= blockCount)
    throw new RangeError(`block must be an integer in [0, ${blockCount}), got ${block}`);
  if (block < metadataBlocks) {
    throw new GuestmemfsError(
      'EINVAL',
      `block ${block} holds the pool's metadata (blocks 0 to ${metadataBlocks - 1}), which cannot be moved off it: copy the ` +
        `files to another pool and retire this one`,
      { syscall, path: label },
    );
  }
  const listed = ctx.superblock.badBlocks;
  if (listed.includes(block)) return { block, alreadyQuarantined: true, heldBy: holderOf(ctx, block) };
  if (ctx.busy.size > 0)
    throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before quarantining', { syscall, path: label });
  if (listed.length >= MAX_BAD_BLOCKS) {
    throw new GuestmemfsError(
      'ENOSPC',
      `the bad-block list is full (${MAX_BAD_BLOCKS} blocks): this pool's memory is failing; copy its files to another pool and retire it`,
      { syscall, path: label },
    );
  }
  const heldBy = holderOf(ctx, block);
  ctx.writeSuperblock({ badBlocks: [...listed, block].sort((a, b) => a - b), roCompat: ctx.superblock.roCompat | RO_COMPAT_BADBLOCKS });
  ctx.views.allocator.quarantine(block);
  return { block, alreadyQuarantined: false, heldBy };
}

/** The live file whose extents hold `block`, if any (a scan of every file: for quarantining and for messages). */
export function holderOf(ctx: MountContext, block: number): { ino: number; path: string } | null {
  const inodes = ctx.inodes;
  for (let ino = 2; ino < inodes.count; ino++) {
    if (inodes.blockCount(ino) === 0 || !holds(ctx.views, ino, block)) continue;
    return { ino, path: inodes.flags(ino) & FLAG_ORPHAN ? '(unlinked)' : pathOf(ctx, ino) };
  }
  return null;
}

function holds(views: Pick<MetadataViews, 'extents'>, ino: number, block: number): boolean {
  return heldAmong(views.extents.read(ino), block);
}

function heldAmong(runs: readonly BlockRun[], block: number): boolean {
  return runs.some((run) => block >= run.start && block < run.start + run.length);
}

/** How many quarantined blocks a file holds (what stat and ls flag). */
export function quarantinedIn(views: Pick<MetadataViews, 'extents'>, sb: Pick<Superblock, 'badBlocks'>, ino: number): number {
  if (sb.badBlocks.length === 0) return 0;
  // Read once: stat runs this for every file ls lists.
  const runs = views.extents.read(ino);
  return sb.badBlocks.reduce((count, block) => (heldAmong(runs, block) ? count + 1 : count), 0);
}

/** Every quarantined block with the inode that holds it (null: none, it is out of service), for the checker. */
export function quarantineReport(views: MetadataViews, sb: Pick<Superblock, 'badBlocks'>): Array<{ block: number; ino: number | null }> {
  if (sb.badBlocks.length === 0) return [];
  const { owner } = scanOwnership(views);
  return sb.badBlocks.map((block) => ({ block, ino: owner[block]! > 0 ? owner[block]! : null }));
}

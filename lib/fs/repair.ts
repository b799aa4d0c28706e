// Recovery after the owner died mid-operation: roll a committed rename forward, free orphans and blocks past each
// file's size, and rebuild everything derived (bitmap, free lists, entry lists, link counts, counters) from the primary
// state. Idempotent: a kill during recovery is recovered from by running it again.
import { ExtentStore } from './extents';
import { replayRename } from './intent';
import { InodeType, FLAG_ORPHAN } from './inodes';
import { blocksToKeep } from './large-region';
import { ROOT_INO } from './layout';
import { findUnrepairable, scanOwnership } from './ownership';
import { appendRun, type BlockRun, cutAfter, totalBlocks } from './runs';
import type { MetadataViews } from './views';

export type RepairViews = Pick<MetadataViews, 'geometry' | 'inodes' | 'extents' | 'allocator' | 'hints' | 'intent' | 'intentBytes'> & {
  /** Whether a process still pins (maps) any of these blocks: recovery frees none of them then. */
  isPinned?: (runs: readonly BlockRun[]) => boolean;
};

export interface RepairResult {
  /** What was changed, one line each. */
  fixes: string[];
  /** What could not be repaired; the caller must not mount when this is non-empty. */
  unrepairable: string[];
}

export function repairDerived(views: RepairViews): RepairResult {
  const { geometry, inodes, extents, allocator, hints } = views;
  const fixes: string[] = [];
  const unrepairable = findUnrepairable(views);
  if (unrepairable.length > 0) return { fixes, unrepairable };
  const replayed = replayRename(views.intent, views.intentBytes, inodes);
  if (replayed) fixes.push(replayed);

  // 1. Files: free orphans, cut blocks past the size, fix block counts. This changes primary state in the same
  //    order as the operations themselves (dirty first, then unlink, then free), so it is safe to interrupt.
  for (let ino = 1; ino < inodes.count; ino++) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) continue;
    const runs = extents.read(ino);
    if (ino !== ROOT_INO && inodes.flags(ino) & FLAG_ORPHAN) {
      if (views.isPinned?.(runs)) {
        // Unlinked while mapped, and the process that maps it is alive: it is freed when its last pin goes.
        fixes.push(`kept unlinked inode ${ino} (${totalBlocks(runs)} blocks): a live process still pins it`);
        continue;
      }
      allocator.markDirty(runs, true);
      extents.truncate(ino, 0);
      inodes.setBlockCount(ino, 0);
      inodes.setSize(ino, 0);
      inodes.setType(ino, InodeType.Free);
      fixes.push(`freed unlinked inode ${ino} (${totalBlocks(runs)} blocks) left by the dead owner`);
      continue;
    }
    const needed = type === InodeType.File ? blocksToKeep(runs, inodes.size(ino), geometry.blockSize, allocator.largeFrom) : 0;
    const held = totalBlocks(runs);
    let kept = Math.min(held, needed);
    if (held > needed && views.isPinned?.(cutAfter(runs, needed))) {
      kept = held;
      // Blocks past the size that a live process maps: the size grows back over them rather than freeing them.
      inodes.setSize(ino, held * geometry.blockSize);
      fixes.push(`inode ${ino}: size raised to the ${held} blocks it holds, which a live process pins`);
    } else if (held > needed) {
      const cut = cutAfter(runs, needed);
      allocator.markDirty(cut, true);
      extents.truncate(ino, needed);
      fixes.push(`inode ${ino}: released ${held - needed} blocks past its size`);
    } else if (held < needed) {
      inodes.setSize(ino, held * geometry.blockSize);
      fixes.push(`inode ${ino}: size cut to the ${held} blocks it holds`);
    }
    if (inodes.blockCount(ino) !== kept) inodes.setBlockCount(ino, kept);
    // A kill between linking a new extent page and raising the extent count (append), or between lowering the count
    // and freeing the pages (truncate), leaves pages no extent uses: they go back.
    const surplus = extents.chain(ino).length - ExtentStore.pagesFor(inodes.extentCount(ino));
    if (surplus > 0) {
      extents.truncate(ino, kept);
      fixes.push(`inode ${ino}: released ${surplus} extent page(s) past its extents`);
    }
  }
  // Who holds each block now that the files hold only what their sizes need.
  const { owner } = scanOwnership(views);

  // 2. Bitmaps: allocated = metadata + extents + quarantined blocks; blocks in use are not dirty; leaked blocks keep
  // their dirty bit.
  const used: BlockRun[] = [];
  const free: BlockRun[] = [];
  let leaked = 0;
  let unmarked = 0;
  for (let block = 0; block < geometry.blockCount; block++) {
    const inUse = owner[block] !== -1 || allocator.isQuarantined(block);
    if (!inUse && allocator.isAllocated(block)) leaked++;
    if (inUse && !allocator.isAllocated(block)) unmarked++;
    appendRun(inUse ? used : free, block);
  }
  allocator.markFree(free);
  allocator.markAllocated(used);
  allocator.markDirty(
    used.filter((run) => run.start >= geometry.metadataBlocks),
    false,
  );
  const counts = allocator.count();
  hints.freeBlocks = geometry.blockCount - counts.allocated;
  hints.dirtyBlocks = counts.dirty;
  if (leaked) fixes.push(`freed ${leaked} allocated blocks no file held`);
  if (unmarked) fixes.push(`marked allocated ${unmarked} blocks a file or the bad-block list holds`);

  // 3. Extent pages: those in a chain belong to it, the rest form the free list.
  const pageUsed = new Uint8Array(extents.pageCount);
  for (let ino = 1; ino < inodes.count; ino++) {
    if (inodes.type(ino) === InodeType.Free) continue;
    for (const page of extents.chain(ino)) pageUsed[page] = 1;
  }
  extents.rebuildFreeList(pageUsed);

  // 4. Namespace: entry lists from parent pointers, link counts, the free inode list.
  const children = new Map<number, number[]>();
  let freeHead = 0;
  let freeInodes = 0;
  for (let ino = inodes.count - 1; ino >= 1; ino--) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) {
      inodes.setNextFree(ino, freeHead);
      freeHead = ino;
      freeInodes++;
      continue;
    }
    // Orphans are in no directory: they keep their old parent pointer, but no entry list names them.
    if (ino === ROOT_INO || inodes.flags(ino) & FLAG_ORPHAN) continue;
    const parent = inodes.parent(ino);
    children.set(parent, [ino, ...(children.get(parent) ?? [])]);
  }
  hints.freeInodeHead = freeHead;
  hints.freeInodes = freeInodes;
  for (let dir = 1; dir < inodes.count; dir++) {
    if (inodes.type(dir) !== InodeType.Directory) continue;
    const list = children.get(dir) ?? [];
    const names = new Set<string>();
    let prev = 0;
    inodes.setFirstChild(dir, list[0] ?? 0);
    for (const child of list) {
      const name = inodes.name(child);
      if (names.has(name)) fixes.push(`directory ${dir} holds the name "${name}" twice: inode ${child} kept as is; rename one of them`);
      names.add(name);
      inodes.setPrev(child, prev);
      if (prev) inodes.setNext(prev, child);
      prev = child;
    }
    if (prev) inodes.setNext(prev, 0);
    const links = 2 + list.filter((child) => inodes.type(child) === InodeType.Directory).length;
    if (inodes.nlink(dir) !== links) {
      inodes.setNlink(dir, links);
      fixes.push(`directory ${dir}: link count set to ${links}`);
    }
  }
  return { fixes, unrepairable };
}

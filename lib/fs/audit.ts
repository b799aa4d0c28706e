// Audit: recomputes everything derived (bitmap, free lists, sibling lists, link counts, counters) from the primary
// state (inode types, parents, names, extents, sizes) and lists every disagreement. The checker builds on it.
import { ExtentStore } from './extents';
import { FLAG_CONTIGUOUS, FLAG_ORPHAN, InodeType } from './inodes';
import { blocksToKeep, largeGroupProblems } from './large-region';
import { ROOT_INO } from './layout';
import { scanOwnership } from './ownership';
import { totalBlocks } from './runs';
import type { MetadataViews } from './views';

export type AuditViews = Pick<MetadataViews, 'geometry' | 'inodes' | 'extents' | 'allocator' | 'hints'>;

export interface AuditReport {
  problems: string[];
  liveInodes: number;
  usedBlocks: number;
}

export function auditMetadata(views: AuditViews): AuditReport {
  const { geometry, inodes, extents, allocator, hints } = views;
  // Types, parents, names and who holds each block: the scan recovery trusts, so audit and repair agree on them.
  const { problems, owner } = scanOwnership(views);
  const children = new Map<number, number[]>();
  const pageOwner = new Int32Array(geometry.extentPageCount).fill(-1);
  let liveInodes = 0;
  let usedBlocks = geometry.metadataBlocks;

  if (inodes.type(ROOT_INO) !== InodeType.Directory) problems.push('root inode is not a directory');
  for (let ino = 1; ino < inodes.count; ino++) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) continue;
    if (type !== InodeType.Directory && type !== InodeType.File) continue;
    liveInodes++;
    const orphan = (inodes.flags(ino) & FLAG_ORPHAN) !== 0;
    if (ino !== ROOT_INO && !orphan) {
      const parent = inodes.parent(ino);
      if (inodes.isValidIno(parent) && inodes.type(parent) === InodeType.Directory)
        children.set(parent, [...(children.get(parent) ?? []), ino]);
    }
    const runs = extents.read(ino);
    if (runs.length !== inodes.extentCount(ino))
      problems.push(`inode ${ino}: ${inodes.extentCount(ino)} extents recorded, ${runs.length} readable`);
    if (inodes.flags(ino) & FLAG_CONTIGUOUS && runs.length > 1) problems.push(`inode ${ino}: contiguous, but in ${runs.length} extents`);
    const blocks = totalBlocks(runs);
    usedBlocks += blocks;
    if (blocks !== inodes.blockCount(ino)) problems.push(`inode ${ino}: blockCount ${inodes.blockCount(ino)} but extents hold ${blocks}`);
    const size = inodes.size(ino);
    const needs = blocksToKeep(runs, size, geometry.blockSize, allocator.largeFrom);
    if (needs !== blocks) problems.push(`inode ${ino}: size ${size} needs ${needs} blocks, has ${blocks}`);
    if (allocator.largeFrom !== undefined) problems.push(...largeGroupProblems(ino, runs, geometry.blockSize, allocator.largeFrom));
    const chain = extents.chain(ino);
    if (chain.length !== ExtentStore.pagesFor(runs.length))
      problems.push(`inode ${ino}: ${chain.length} extent pages for ${runs.length} extents`);
    for (const page of chain) {
      if (pageOwner[page] !== -1) problems.push(`extent page ${page} in two chains`);
      pageOwner[page] = ino;
      if (extents.pageOwner(page) !== ino)
        problems.push(`extent page ${page}: owner field ${extents.pageOwner(page)}, chained from ${ino}`);
    }
    if (type === InodeType.Directory && runs.length > 0) problems.push(`directory ${ino} has data blocks`);
  }

  // Bitmaps: allocated == union of extents + metadata + quarantined blocks; live and quarantined blocks are never dirty.
  for (let block = 0; block < geometry.blockCount; block++) {
    const quarantined = allocator.isQuarantined(block);
    const used = owner[block] !== -1 || quarantined;
    if (allocator.isAllocated(block) !== used)
      problems.push(
        `block ${block}: bitmap says ${allocator.isAllocated(block) ? 'allocated' : 'free'}, ` +
          `${quarantined ? 'the bad-block list says quarantined' : `extents say ${used ? 'used' : 'free'}`}`,
      );
    if (used && (owner[block]! > 0 || quarantined) && allocator.isDirty(block))
      problems.push(`block ${block}: ${quarantined ? 'quarantined' : `in use by inode ${owner[block]}`} but marked dirty`);
  }
  const counts = allocator.count();
  if (allocator.freeBlocks !== geometry.blockCount - counts.allocated)
    problems.push(`free block counter ${allocator.freeBlocks}, bitmap has ${geometry.blockCount - counts.allocated}`);
  if (allocator.dirtyBlocks !== counts.dirty) problems.push(`dirty block counter ${allocator.dirtyBlocks}, bitmap has ${counts.dirty}`);

  // Directory lists mirror parent pointers; link counts follow from them.
  for (let dir = 1; dir < inodes.count; dir++) {
    if (inodes.type(dir) !== InodeType.Directory || inodes.flags(dir) & FLAG_ORPHAN) continue;
    const expected = new Set(children.get(dir) ?? []);
    const listed = new Set<number>();
    let prev = 0;
    for (let child = inodes.firstChild(dir); child !== 0; child = inodes.next(child)) {
      if (listed.has(child) || listed.size > inodes.count) {
        problems.push(`directory ${dir}: entry list loops`);
        break;
      }
      if (inodes.prev(child) !== prev) problems.push(`directory ${dir}: entry ${child} has prev ${inodes.prev(child)}, expected ${prev}`);
      listed.add(child);
      prev = child;
    }
    for (const child of expected)
      if (!listed.has(child)) problems.push(`directory ${dir}: inode ${child} names it as parent but is not listed`);
    for (const child of listed) if (!expected.has(child)) problems.push(`directory ${dir}: lists inode ${child}, which is not its child`);
    const subdirs = [...expected].filter((child) => inodes.type(child) === InodeType.Directory).length;
    if (inodes.nlink(dir) !== 2 + subdirs) problems.push(`directory ${dir}: nlink ${inodes.nlink(dir)}, expected ${2 + subdirs}`);
    const names = new Set<string>();
    for (const child of expected) {
      const name = inodes.name(child);
      if (names.has(name)) problems.push(`directory ${dir}: name "${name}" appears twice`);
      names.add(name);
    }
  }

  // Free inode list: exactly the free inodes, each once.
  const freeInodes = new Set<number>();
  for (let ino = hints.freeInodeHead; ino !== 0; ino = inodes.nextFree(ino)) {
    if (freeInodes.has(ino) || !inodes.isValidIno(ino)) {
      problems.push(`free inode list loops or leaves the table at ${ino}`);
      break;
    }
    if (inodes.type(ino) !== InodeType.Free) problems.push(`inode ${ino} is on the free list but in use`);
    freeInodes.add(ino);
  }
  const expectedFree = inodes.count - 1 - liveInodes;
  if (freeInodes.size !== expectedFree) problems.push(`free inode list holds ${freeInodes.size}, ${expectedFree} inodes are free`);
  if (hints.freeInodes !== expectedFree) problems.push(`free inode counter ${hints.freeInodes}, ${expectedFree} are free`);

  // Free extent pages: exactly the pages no chain uses.
  const freePages = new Set<number>();
  for (let page = hints.freePageHead; page !== 0; page = extents.pageNextFree(page)) {
    if (freePages.has(page) || page >= geometry.extentPageCount) {
      problems.push(`free extent page list loops or leaves the area at ${page}`);
      break;
    }
    if (pageOwner[page] !== -1) problems.push(`extent page ${page} is free-listed but used by inode ${pageOwner[page]}`);
    freePages.add(page);
  }
  const usedPages = pageOwner.reduce((sum, value, page) => sum + (page > 0 && value !== -1 ? 1 : 0), 0);
  if (freePages.size + usedPages !== geometry.extentPageCount - 1) {
    problems.push(`extent pages: ${freePages.size} free + ${usedPages} used != ${geometry.extentPageCount - 1}`);
  }
  if (hints.freePages !== freePages.size) problems.push(`free extent page counter ${hints.freePages}, list holds ${freePages.size}`);

  return { problems, liveInodes, usedBlocks };
}

// Recovery after the owner died mid-operation: roll a committed rename forward, free orphans and blocks past each
// file's size, and rebuild everything derived (bitmap, free lists, entry lists, link counts, counters) from the primary
// state. Idempotent: a kill during recovery is recovered from by running it again.
import type { BlockAllocator } from './allocator';
import { type BlockRun, cutAfter, type ExtentStore } from './extents';
import { FILE_TYPE_NAMES, FLAG_ORPHAN, type InodeTable, InodeType, NAME_MAX } from './inodes';
import { type Geometry, HINTS, INTENT, INTENT_ACTIVE, INTENT_OP_RENAME, intentChecksum, ROOT_INO } from './layout';

export interface RepairViews {
  geometry: Geometry;
  inodes: InodeTable;
  extents: ExtentStore;
  allocator: BlockAllocator;
  hints: Uint32Array;
  intent: Uint32Array;
  intentBytes: Uint8Array;
}

export interface RepairResult {
  /** What was changed, one line each. */
  fixes: string[];
  /** What could not be repaired; the caller must not mount when this is non-empty. */
  unrepairable: string[];
}

/** Replays (or discards) the rename intent record. */
function settleIntent(views: RepairViews, fixes: string[]): void {
  const { intent, intentBytes, inodes } = views;
  if (intent[INTENT.magic / 4] !== INTENT_ACTIVE) return;
  const nameLength = intent[INTENT.nameLength / 4]!;
  const valid =
    intent[INTENT.op / 4] === INTENT_OP_RENAME &&
    nameLength >= 1 &&
    nameLength <= 255 &&
    intent[INTENT.crc / 4] === intentChecksum(intentBytes, nameLength) &&
    inodes.isValidIno(intent[INTENT.srcIno / 4]!) &&
    inodes.isValidIno(intent[INTENT.dstParent / 4]!);
  if (valid) {
    const src = intent[INTENT.srcIno / 4]!;
    const dstParent = intent[INTENT.dstParent / 4]!;
    const victim = intent[INTENT.victimIno / 4]!;
    if (victim !== 0 && inodes.isValidIno(victim) && inodes.type(victim) !== InodeType.Free) {
      inodes.setNlink(victim, 0);
      inodes.setFlags(victim, inodes.flags(victim) | FLAG_ORPHAN);
    }
    inodes.setName(src, intentBytes.slice(INTENT.name, INTENT.name + nameLength));
    inodes.setParent(src, dstParent);
    fixes.push(`finished an interrupted rename of inode ${src} into directory ${dstParent}`);
  } else {
    fixes.push('discarded a rename intent record that was never committed');
  }
  intent[INTENT.magic / 4] = 0;
}

/**
 * Read-only: what recovery cannot fix (unknown inode types, extents outside the data blocks, a block kept by two files,
 * an entry whose directory is not one). Recovery changes nothing unless this is empty.
 */
export function findUnrepairable(views: Pick<RepairViews, 'geometry' | 'inodes' | 'extents'>): string[] {
  const { problems } = scanOwnership(views);
  return problems.length > 0 ? problems : findUnreachable(views.inodes);
}

/** Every block's owning inode (-1 for none) and what makes the metadata unrepairable. */
export function scanOwnership(views: Pick<RepairViews, 'geometry' | 'inodes' | 'extents'>): { problems: string[]; owner: Int32Array } {
  const { geometry, inodes, extents } = views;
  const problems: string[] = [];
  const owner = new Int32Array(geometry.blockCount).fill(-1);
  owner.fill(0, 0, geometry.metadataBlocks);
  // The root can never be unlinked: a flag saying so is damage, and acting on it would free the whole tree.
  if (inodes.flags(ROOT_INO) & FLAG_ORPHAN) problems.push('the root directory is marked unlinked');
  for (let ino = 1; ino < inodes.count && problems.length < 20; ino++) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) continue;
    if (type !== InodeType.Directory && type !== InodeType.File) {
      problems.push(`inode ${ino} has unknown type ${type}`);
      continue;
    }
    const orphan = ino !== ROOT_INO && (inodes.flags(ino) & FLAG_ORPHAN) !== 0;
    if (type === InodeType.File && FILE_TYPE_NAMES[inodes.fileType(ino)] === undefined) problems.push(`inode ${ino} has unknown file type ${inodes.fileType(ino)}`);
    if (!orphan && ino !== ROOT_INO) {
      const parent = inodes.parent(ino);
      if (!inodes.isValidIno(parent) || inodes.type(parent) !== InodeType.Directory) {
        problems.push(`inode ${ino} names inode ${parent} as its directory, which is not one`);
      }
      const nameProblem = invalidName(inodes, ino);
      if (nameProblem) problems.push(`inode ${ino} ${nameProblem}`);
    }
    for (const run of extents.read(ino)) {
      if (run.length === 0 || run.start < geometry.metadataBlocks || run.start + run.length > geometry.blockCount) {
        problems.push(`inode ${ino} has extent [${run.start}, +${run.length}) outside the data blocks`);
        continue;
      }
      for (let block = run.start; block < run.start + run.length; block++) {
        if (owner[block] !== -1 && problems.length < 20) problems.push(`block ${block} belongs to inode ${owner[block]} and inode ${ino}`);
        owner[block] = ino;
      }
    }
  }
  return { problems, owner };
}

/** Why an inode's stored name could not have been created, or undefined when it is a valid name. */
function invalidName(inodes: InodeTable, ino: number): string | undefined {
  const bytes = inodes.nameBytes(ino);
  if (bytes.length === 0 || bytes.length > NAME_MAX) return `has a name of ${bytes.length} bytes`;
  if (bytes.includes(0x2f) || bytes.includes(0)) return 'has a name containing "/" or NUL';
  const name = inodes.name(ino);
  if (name === '.' || name === '..') return `is named "${name}"`;
  return undefined;
}

/** Inodes whose parent chain never reaches the root (a directory cycle), as reasons. */
export function findUnreachable(inodes: InodeTable): string[] {
  const problems: string[] = [];
  const reaches = new Uint8Array(inodes.count); // 1 once known to reach the root
  reaches[ROOT_INO] = 1;
  for (let ino = 2; ino < inodes.count && problems.length < 20; ino++) {
    if (inodes.type(ino) === InodeType.Free || inodes.flags(ino) & FLAG_ORPHAN || reaches[ino]) continue;
    const path: number[] = [];
    let cursor = ino;
    while (!reaches[cursor] && path.length <= inodes.count) {
      path.push(cursor);
      cursor = inodes.parent(cursor);
      if (!inodes.isValidIno(cursor) || inodes.type(cursor) !== InodeType.Directory) break;
    }
    if (reaches[cursor]) for (const member of path) reaches[member] = 1;
    else problems.push(`inode ${ino} is unreachable from the root (its directories form a cycle or lead nowhere)`);
  }
  return problems;
}

export function repairDerived(views: RepairViews): RepairResult {
  const { geometry, inodes, extents, allocator, hints } = views;
  const fixes: string[] = [];
  const unrepairable = findUnrepairable(views);
  if (unrepairable.length > 0) return { fixes, unrepairable };
  settleIntent(views, fixes);

  // 1. Files: free orphans, cut blocks past the size, fix block counts. This changes primary state in the same
  //    order as the operations themselves (dirty first, then unlink, then free), so it is safe to interrupt.
  const owner = new Int32Array(geometry.blockCount).fill(-1);
  for (let block = 0; block < geometry.metadataBlocks; block++) owner[block] = 0;
  for (let ino = 1; ino < inodes.count; ino++) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) continue;
    const runs = extents.read(ino);
    if (ino !== ROOT_INO && inodes.flags(ino) & FLAG_ORPHAN) {
      allocator.markDirty(runs, true);
      extents.truncate(ino, 0);
      inodes.setBlockCount(ino, 0);
      inodes.setSize(ino, 0);
      inodes.setType(ino, InodeType.Free);
      fixes.push(`freed unlinked inode ${ino} (${runs.reduce((sum, run) => sum + run.length, 0)} blocks) left by the dead owner`);
      continue;
    }
    const needed = type === InodeType.File ? Math.ceil(inodes.size(ino) / geometry.blockSize) : 0;
    const held = runs.reduce((sum, run) => sum + run.length, 0);
    if (held > needed) {
      const cut = cutAfter(runs, needed);
      allocator.markDirty(cut, true);
      extents.truncate(ino, needed);
      fixes.push(`inode ${ino}: released ${held - needed} blocks past its size`);
    } else if (held < needed) {
      inodes.setSize(ino, held * geometry.blockSize);
      fixes.push(`inode ${ino}: size cut to the ${held} blocks it holds`);
    }
    if (inodes.blockCount(ino) !== Math.min(held, needed)) inodes.setBlockCount(ino, Math.min(held, needed));
    for (const run of extents.read(ino)) owner.fill(ino, run.start, run.start + run.length);
  }

  // 2. Bitmaps: allocated = metadata + extents; blocks in use are not dirty; leaked blocks keep their dirty bit.
  const used: BlockRun[] = [];
  const free: BlockRun[] = [];
  let leaked = 0;
  for (let block = 0; block < geometry.blockCount; block++) {
    const inUse = owner[block] !== -1;
    if (!inUse && allocator.isAllocated(block)) leaked++;
    const list = inUse ? used : free;
    const last = list.at(-1);
    if (last && last.start + last.length === block) last.length++;
    else list.push({ start: block, length: 1 });
  }
  allocator.markFree(free);
  allocator.markAllocated(used);
  allocator.markDirty(used.filter((run) => run.start >= geometry.metadataBlocks), false);
  const counts = allocator.count();
  hints[HINTS.freeBlocks / 4] = geometry.blockCount - counts.allocated;
  hints[HINTS.dirtyBlocks / 4] = counts.dirty;
  if (leaked) fixes.push(`freed ${leaked} allocated blocks no file held`);

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
    if (ino === ROOT_INO) continue;
    const parent = inodes.parent(ino);
    children.set(parent, [ino, ...(children.get(parent) ?? [])]);
  }
  hints[HINTS.freeInodeHead / 4] = freeHead;
  hints[HINTS.freeInodes / 4] = freeInodes;
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

// The data path: truncate (the resize plan, grow and shrink), map, read and write, zeroing and scrub.
//
// Crash ordering. Blocks are claimed in the bitmap before they are zeroed or linked, so a kill leaks them to the
// checker and never hands them to another file; the extent count, then the size, are the commit points of a grow. A
// shrink publishes the smaller size first, then turns the cut blocks dirty, unlinks and frees them.
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import { type Extent, Mapping, type ProgressOptions } from '../pool/mapping';
import { describeHolders } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { formatSize, nowNs } from '../units';
import type { MountContext } from './context';
import { FileType, FLAG_CONTIGUOUS, FLAG_ORPHAN, InodeType } from './inodes';
import { resolve, resolveFileForWrite } from './names';
import { releaseIfUnpinned } from './namespace';
import { invalidateAndSettle, requireSettled, requireUserAccessible } from './notifier';
import * as quota from './quota';
import { R_OK, W_OK } from './permissions';
import { type BlockRun, blockRange, cutAfter, totalBlocks } from './runs';
import { blocksToKeep, chooseHybrid } from './large-region';
import type { FileMapOptions } from './types';

interface ResizePlan {
  grow: boolean;
  /** Blocks claimed for the grow, in file order. */
  runs: BlockRun[];
  /** The claimed blocks that still hold old bytes and must be zeroed before they are linked. */
  dirty: BlockRun[];
  size: number;
}

/** Mappings premapFile() made and no mount has adopted yet, with the pool they map: map() adopts only these. */
const unadoptedPremappings = new WeakMap<Mapping, string>();

function sameExtents(a: readonly Extent[], b: readonly Extent[]): boolean {
  return a.length === b.length && a.every((extent, index) => extent.offset === b[index]!.offset && extent.length === b[index]!.length);
}

/**
 * What mapping a file needs, checked the same way for map() and premapFile(): a file (not a directory) with blocks,
 * which the caller may access as asked, through a mount that may write when a writable mapping is asked for. Guest
 * files are mapped MADV_DONTDUMP|MADV_DONTFORK.
 */
export function mappableFile(
  ctx: MountContext,
  path: string,
  access: number,
  writableMount: boolean,
): { ino: number; extents: Extent[]; guest: boolean } {
  const ino = resolve(ctx, path, 'mmap');
  ctx.requireFile(ino, 'mmap', path);
  if (writableMount) ctx.requireNotReadOnly('mmap');
  ctx.requireAccess(ino, access, 'mmap', path);
  const extents = ctx.fileRanges(ino);
  if (extents.length === 0)
    throw new GuestmemfsError('EINVAL', `file is empty, mmap '${path}': truncate it to a size first`, { syscall: 'mmap', path });
  return { ino, extents, guest: ctx.inodes.fileType(ino) === FileType.Guest };
}

/** Maps the file for another mount to adopt (see premapFile): writable and pre-faulted. */
export function premap(ctx: MountContext, pool: Pool, path: string, options: Pick<FileMapOptions, 'sharePageTables'>): Mapping {
  // The view is read-only by construction; the successor that asks will own the pool by the time it writes.
  const { extents, guest } = mappableFile(ctx, path, R_OK | W_OK, false);
  // Pinned from the start: the successor's premapping holds the memory before the old owner lets go of it.
  const mapping = pool.map(extents, { ...options, writable: true, populate: true, dontDump: guest, dontFork: guest, pin: true });
  markPremapped(ctx, mapping);
  return mapping;
}

/** Lets map(path, { premapped }) in a mount of ctx's pool adopt a pinned mapping this process made ahead of it. */
export function markPremapped(ctx: MountContext, mapping: Mapping): void {
  unadoptedPremappings.set(mapping, ctx.key);
}

/** Maps a file; `asConsumer`: for its notifier's consumer, who may map it even while it is user-inaccessible. */
export function map(ctx: MountContext, path: string, options: FileMapOptions, asConsumer = false): Mapping {
  ctx.requireMounted('mmap');
  const writable = options.writable ?? !ctx.readOnly;
  const { ino, extents, guest } = mappableFile(ctx, path, writable ? R_OK | W_OK : R_OK, writable);
  if (!asConsumer) requireUserAccessible(ctx, ino, 'mmap', path);
  const { premapped, ...mapOptions } = options;
  if (
    premapped !== undefined &&
    (!(premapped instanceof Mapping) || unadoptedPremappings.get(premapped) !== ctx.key || !premapped.mapped)
  ) {
    throw new GuestmemfsError(
      'EINVAL',
      `premapped must be an unadopted, still mapped result of premapFile() on this pool, mmap '${path}'`,
      { syscall: 'mmap', path },
    );
  }
  let mapping: Mapping;
  if (premapped && writable && sameExtents(premapped.extents, extents)) {
    unadoptedPremappings.delete(premapped);
    premapped.attachUnmapHook(() => unmapped(ctx, ino));
    mapping = premapped;
  } else {
    mapping = ctx.pool.map(extents, {
      ...mapOptions,
      pin: true,
      writable,
      dontDump: guest || options.dontDump,
      dontFork: guest || options.dontFork,
      onUnmap: () => unmapped(ctx, ino),
    });
  }
  ctx.mapped.set(ino, (ctx.mapped.get(ino) ?? 0) + 1);
  ctx.touchAtime(ino);
  return mapping;
}

/** The last mapping of an unlinked file frees it. */
function unmapped(ctx: MountContext, ino: number): void {
  const count = (ctx.mapped.get(ino) ?? 1) - 1;
  if (count > 0) {
    ctx.mapped.set(ino, count);
    return;
  }
  ctx.mapped.delete(ino);
  const inodes = ctx.inodes;
  if (ctx.mounted && !ctx.readOnly && inodes.type(ino) !== InodeType.Free && inodes.flags(ino) & FLAG_ORPHAN) releaseIfUnpinned(ctx, ino);
}

export function truncate(ctx: MountContext, path: string, size: number): void {
  ctx.requireWritable('ftruncate');
  const ino = resolveFileForWrite(ctx, path, 'ftruncate');
  const plan = planResize(ctx, ino, size, path);
  if (!plan.grow) return shrink(ctx, ino, size, path);
  for (const run of plan.dirty) zeroRun(ctx, run);
  commitGrow(ctx, ino, plan);
}

export async function truncateAsync(ctx: MountContext, path: string, size: number, options: ProgressOptions): Promise<void> {
  ctx.requireWritable('ftruncate');
  const ino = resolveFileForWrite(ctx, path, 'ftruncate');
  const plan = planResize(ctx, ino, size, path);
  if (!plan.grow) {
    const oldSize = ctx.inodes.size(ino);
    if (ctx.notifiers.consumers(ino).length > 0 && size < oldSize) {
      shrinkCut(ctx, ino, size, path);
      await invalidateAndSettle(ctx, ino, size, oldSize, 'ftruncate', path);
    }
    shrink(ctx, ino, size, path, true);
    options.onProgress?.(0, 0);
    return;
  }
  const blockSize = ctx.geometry.blockSize;
  const total = totalBlocks(plan.dirty) * blockSize;
  ctx.busy.add(ino);
  try {
    let done = 0;
    for (const run of plan.dirty) {
      const length = run.length * blockSize;
      await zeroRunAsync(ctx, run, (chunk) => options.onProgress?.(done + chunk, total));
      done += length;
    }
  } catch (error) {
    // The chosen blocks go back; those not yet zeroed are still marked dirty.
    ctx.views.allocator.markFree(plan.runs);
    quota.charge(ctx, ino, -totalBlocks(plan.runs));
    throw error;
  } finally {
    ctx.endBusy(ino);
  }
  commitGrow(ctx, ino, plan);
  options.onProgress?.(total, total);
}

function requireReadWritable(ctx: MountContext, ino: number, syscall: string, path: string): void {
  ctx.requireFile(ino, syscall, path);
  if (ctx.inodes.fileType(ino) === FileType.Guest) {
    throw new GuestmemfsError(
      'EPERM',
      `guest files have no ${syscall}(): their memory is only reachable through map(), ${syscall} '${path}'`,
      { syscall, path },
    );
  }
}

function requirePosition(position: number, syscall: string, path: string): void {
  if (!Number.isSafeInteger(position) || position < 0)
    throw new GuestmemfsError('EINVAL', `position ${position} must be a non-negative integer`, { syscall, path });
}

export function read(ctx: MountContext, path: string, position: number, length: number | undefined): Uint8Array {
  ctx.requireMounted('read');
  const ino = resolve(ctx, path, 'read');
  requireReadWritable(ctx, ino, 'read', path);
  requireUserAccessible(ctx, ino, 'read', path);
  ctx.requireAccess(ino, R_OK, 'read', path);
  const size = ctx.inodes.size(ino);
  requirePosition(position, 'read', path);
  const end = Math.min(size, length === undefined ? size : position + length);
  const out = new Uint8Array(Math.max(0, end - position));
  copy(ctx, ino, position, out, 'read');
  ctx.touchAtime(ino);
  return out;
}

export function write(ctx: MountContext, path: string, data: Uint8Array, position: number): number {
  ctx.requireWritable('write');
  const ino = resolveFileForWrite(ctx, path, 'write');
  requireReadWritable(ctx, ino, 'write', path);
  requireUserAccessible(ctx, ino, 'write', path);
  if (!(data instanceof Uint8Array)) throw new GuestmemfsError('EINVAL', 'data must be a Uint8Array or Buffer', { syscall: 'write', path });
  requirePosition(position, 'write', path);
  const inodes = ctx.inodes;
  const end = position + data.length;
  const extending = end > inodes.size(ino);
  if (extending) {
    // Blocks first, then the bytes, then the size: a kill never shows the new size without the new bytes.
    const plan = planResize(ctx, ino, end, path);
    for (const run of plan.dirty) zeroRun(ctx, run);
    commitGrow(ctx, ino, plan, false);
  }
  copy(ctx, ino, position, data, 'write');
  if (extending) inodes.setSize(ino, end); // commit point of an extending write
  const now = nowNs();
  inodes.setTime(ino, 'mtime', now);
  inodes.setTime(ino, 'ctime', now);
  return data.length;
}

/** Zeroes free blocks that still hold old bytes, off the JS thread, so later allocations need no zeroing. */
export async function scrub(ctx: MountContext, options: ProgressOptions): Promise<number> {
  ctx.requireWritable('scrub');
  const allocator = ctx.views.allocator;
  const runs = allocator.dirtyFreeRuns();
  const blockSize = ctx.geometry.blockSize;
  const total = totalBlocks(runs) * blockSize;
  let done = 0;
  for (const run of runs) {
    // Claim the run while it is zeroed so no allocation hands it out half-zeroed.
    allocator.markAllocated([run]);
    try {
      await zeroRunAsync(ctx, run, (chunk) => options.onProgress?.(done + chunk, total));
      allocator.markDirty([run], false);
    } finally {
      allocator.markFree([run]);
    }
    done += run.length * blockSize;
  }
  options.onProgress?.(total, total);
  return total;
}

function planResize(ctx: MountContext, ino: number, size: number, path: string): ResizePlan {
  if (!Number.isSafeInteger(size) || size < 0)
    throw new GuestmemfsError('EINVAL', `size ${size} must be a non-negative integer`, { syscall: 'ftruncate', path });
  const { inodes, extents, allocator } = ctx.views;
  const blockSize = ctx.geometry.blockSize;
  const oldSize = inodes.size(ino);
  const have = inodes.blockCount(ino);
  const want = Math.ceil(size / blockSize);
  if (size <= oldSize) return { grow: false, runs: [], dirty: [], size };
  if (want <= have) return { grow: true, runs: [], dirty: [], size };
  const needed = want - have;
  quota.requireRoom(ctx, ino, needed, 'ftruncate', path);
  const existing = extents.read(ino);
  const last = existing.at(-1);
  const after = last ? last.start + last.length : -1;
  const contiguous = (inodes.flags(ino) & FLAG_CONTIGUOUS) !== 0;
  const runs = contiguous ? allocator.chooseContiguous(needed, after) : chooseForFile(ctx, have, want, after, path);
  if (!runs && contiguous) {
    const largest = allocator.largestFreeRun();
    throw new GuestmemfsError(
      'ENOSPC',
      `contiguous file needs ${needed} more ${formatSize(blockSize)} blocks (${formatSize(needed * blockSize)}) in one run` +
        `${after >= 0 ? ' right after its end' : ''}, ftruncate '${path}': the largest free run is ${largest} blocks ` +
        `(${formatSize(largest * blockSize)}); free space there, or use a larger pool`,
      { syscall: 'ftruncate', path },
    );
  }
  if (!runs) {
    const free = allocator.freeSmallBlocks;
    const large = allocator.largeFrom === undefined ? '' : ' of 2 MiB pages (whole free 1 GiB pages aside)';
    throw new GuestmemfsError(
      'ENOSPC',
      `pool has ${free} free ${formatSize(blockSize)} blocks${large}, truncate needs ${needed} of them ` +
        `(${formatSize(needed * blockSize)}, ${formatSize(free * blockSize)} free), ftruncate '${path}': ` +
        `delete files or use a larger pool`,
      { syscall: 'ftruncate', path },
    );
  }
  const mergesWithLast = last !== undefined && last.start + last.length === runs[0]!.start ? 1 : 0;
  if (extents.pagesNeeded(ino, runs.length - mergesWithLast) > extents.freePages) {
    throw new GuestmemfsError('ENOSPC', `no free extent pages for ${runs.length} more extents, ftruncate '${path}': run the checker`, {
      syscall: 'ftruncate',
      path,
    });
  }
  // Blocks are claimed before they are zeroed or linked: a kill now leaks them to the checker, never to another file.
  allocator.markAllocated(runs);
  // Counted from the claim on, so that a grow still zeroing off the JS thread holds its share of the limit.
  quota.charge(ctx, ino, needed);
  return { grow: true, runs, dirty: allocator.dirtyWithin(runs), size };
}

/**
 * A file's new blocks: in a hybrid pool, 1 GiB pages where they fit and 2 MiB blocks for the rest. A GiB that gets
 * 2 MiB blocks because no 1 GiB page is free is counted and warned of (GUESTMEMFS_LARGE_FALLBACK): the guest loses
 * the TLB reach it was formatted for, but keeps running.
 */
function chooseForFile(ctx: MountContext, have: number, want: number, after: number, path: string): BlockRun[] | null {
  const allocator = ctx.views.allocator;
  if (allocator.largeFrom === undefined) return allocator.choose(want - have, after);
  const chosen = chooseHybrid(allocator, have, want, after);
  if (chosen && chosen.fellBack > 0) {
    ctx.largeFallbacks += chosen.fellBack;
    process.emitWarning(
      `${chosen.fellBack} GiB of '${path}' got 2 MiB pages: no 1 GiB page is free (${allocator.largeGroups().total} in the pool); ` +
        'free some, or make the pool with more 1 GiB pages',
      { code: 'GUESTMEMFS_LARGE_FALLBACK' },
    );
  }
  return chosen?.runs ?? null;
}

function zeroRun(ctx: MountContext, run: BlockRun): void {
  native.zero(ctx.dataMapping().id, run.start * ctx.geometry.blockSize, run.length * ctx.geometry.blockSize);
  dropDataPages(ctx, run);
}

/** zeroRun() off the JS thread, telling `onChunk` the bytes of each chunk zeroed. */
async function zeroRunAsync(ctx: MountContext, run: BlockRun, onChunk: (bytes: number) => void): Promise<void> {
  await native.zeroAsync(ctx.dataMapping().id, run.start * ctx.geometry.blockSize, run.length * ctx.geometry.blockSize, onChunk);
  dropDataPages(ctx, run);
}

/**
 * Drops the mount's own page-table entries over blocks it has just zeroed (the pages and their zeroes stay in the
 * pool file: the mapping is shared). Otherwise the owner would carry an entry for every block it ever zeroed until it
 * exits or execs: 4 GiB of guest RAM zeroed at boot cost an exec-mode VMM 1 to 2 ms of teardown inside its blackout.
 */
function dropDataPages(ctx: MountContext, run: BlockRun): void {
  native.madvise(
    ctx.dataMapping().id,
    run.start * ctx.geometry.blockSize,
    run.length * ctx.geometry.blockSize,
    native.advice.MADV_DONTNEED,
  );
}

/** Links zeroed blocks into the file (extent count is the commit point), then publishes the size unless told not to. */
function commitGrow(ctx: MountContext, ino: number, plan: ResizePlan, publishSize = true): void {
  const { inodes, extents, allocator } = ctx.views;
  const blockSize = ctx.geometry.blockSize;
  allocator.markDirty(plan.dirty, false);
  // Bytes past the old size inside the old last block may hold data from before a shrink: zero them first.
  const oldSize = inodes.size(ino);
  const allocatedEnd = inodes.blockCount(ino) * blockSize;
  if (oldSize < allocatedEnd) zeroFileRange(ctx, ino, oldSize, Math.min(plan.size, allocatedEnd));
  if (plan.runs.length > 0) {
    extents.append(ino, plan.runs);
    inodes.setBlockCount(ino, inodes.blockCount(ino) + totalBlocks(plan.runs));
  }
  if (!publishSize) return;
  inodes.setSize(ino, plan.size); // commit point
  const now = nowNs();
  inodes.setTime(ino, 'mtime', now);
  inodes.setTime(ino, 'ctime', now);
}

/** The blocks a new, smaller size keeps, and those past them, refused with EBUSY while any process maps them. */
function shrinkCut(ctx: MountContext, ino: number, size: number, path: string): { keep: number; cut: BlockRun[] } {
  const { inodes, extents } = ctx.views;
  const runs = extents.read(ino);
  const keep = blocksToKeep(runs, size, ctx.geometry.blockSize, ctx.views.allocator.largeFrom);
  const cut = keep < inodes.blockCount(ino) ? cutAfter(runs, keep) : [];
  if (cut.length > 0) {
    const ranges = cut.map((run) => blockRange(ctx.geometry, run));
    if (ctx.inUse(ino, ranges)) {
      throw new GuestmemfsError(
        'EBUSY',
        `file is mapped, ftruncate '${path}': the blocks past the new size are ${describeHolders(ctx.pinHolders(ranges))}; ` +
          'unmap them there before shrinking (they would be freed under the mapping)',
        { syscall: 'ftruncate', path },
      );
    }
  }
  return { keep, cut };
}

/**
 * Cuts the file to `size`: the blocks past it are checked for pins, the file's consumers told (unless `told`: the
 * caller told them and waited), and then freed (setSize leaves the extents alone).
 */
function shrink(ctx: MountContext, ino: number, size: number, path: string, told = false): void {
  const { inodes, extents, allocator } = ctx.views;
  const { keep, cut } = shrinkCut(ctx, ino, size, path);
  if (!told) {
    ctx.notifiers.invalidate(ino, size, inodes.size(ino));
    requireSettled(ctx, ino, 'ftruncate', path);
  }
  inodes.setSize(ino, size); // commit point
  if (cut.length > 0) {
    allocator.markDirty(cut, true);
    extents.truncate(ino, keep);
    allocator.markFree(cut);
    quota.charge(ctx, ino, keep - inodes.blockCount(ino));
    inodes.setBlockCount(ino, keep);
  }
  const now = nowNs();
  inodes.setTime(ino, 'mtime', now);
  inodes.setTime(ino, 'ctime', now);
}

/** Visits the pool byte ranges behind [from, to) of a file. */
export function forEachRange(
  ctx: MountContext,
  ino: number,
  from: number,
  to: number,
  visit: (poolOffset: number, fileOffset: number, length: number) => void,
): void {
  const blockSize = ctx.geometry.blockSize;
  let fileOffset = 0;
  for (const run of ctx.views.extents.read(ino)) {
    const runBytes = run.length * blockSize;
    const start = Math.max(from, fileOffset);
    const end = Math.min(to, fileOffset + runBytes);
    if (start < end) visit(run.start * blockSize + (start - fileOffset), start, end - start);
    fileOffset += runBytes;
    if (fileOffset >= to) break;
  }
}

export function zeroFileRange(ctx: MountContext, ino: number, from: number, to: number): void {
  forEachRange(ctx, ino, from, to, (poolOffset, _fileOffset, length) => native.zero(ctx.dataMapping().id, poolOffset, length));
}

function copy(ctx: MountContext, ino: number, position: number, buffer: Uint8Array, direction: 'read' | 'write'): void {
  forEachRange(ctx, ino, position, position + buffer.length, (poolOffset, fileOffset, length) => {
    const window = ctx.dataMapping().bytes(poolOffset, length);
    const slice = buffer.subarray(fileOffset - position, fileOffset - position + length);
    if (direction === 'read') slice.set(window);
    else window.set(slice);
  });
}

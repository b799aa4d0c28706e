// Block allocator over the pool's bitmaps: one bit per block allocated, one bit per block dirty (freed, not yet zeroed).
//
// Allocation prefers, in order: growing the file's last extent in place, one contiguous run, the smallest that fits
// (so the file maps with a single mmap, and large runs stay for large files), then several runs first-fit. It only
// chooses; the caller orders the stores (see data.ts).
//
// In a hybrid pool the blocks from `largeFrom` on are 1 GiB pages: those are handed out only as whole groups (one
// page each, chooseGroups), and every other choice keeps below them.
import { groupBlocks } from './large-region';
import { type Geometry, type Hints } from './layout';
import type { MetadataSource } from './metadata';
import { appendRun, type BlockRun, totalBlocks } from './runs';

const FULL = 0xffffffff;

function popcount32(word: number): number {
  let v = word - ((word >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export class BlockAllocator {
  /** Blocks the filesystem spans now; the bits past it, up to the bitmaps' capacity, are always allocated. */
  #blockCount: number;
  readonly metadataBlocks: number;
  readonly #allocated: Uint32Array;
  readonly #dirty: Uint32Array;
  readonly #hints: Hints;
  /** Quarantined blocks (the superblock's bad-block list): allocated for good, never freed, never dirty. */
  readonly #quarantined: Set<number>;
  /** A hybrid pool's first block of 1 GiB pages (undefined for a pool of one page size). */
  readonly largeFrom: number | undefined;
  /** Blocks per 1 GiB page. */
  readonly groupBlocks: number;

  constructor(source: MetadataSource, geometry: Geometry, hints: Hints, quarantined: readonly number[] = [], largeFrom?: number) {
    this.#quarantined = new Set(quarantined);
    this.largeFrom = largeFrom;
    this.groupBlocks = groupBlocks(geometry.blockSize);
    this.#blockCount = geometry.blockCount;
    this.metadataBlocks = geometry.metadataBlocks;
    const allocated = source.window(geometry.bitmapOffset, geometry.bitmapLength);
    const dirty = source.window(geometry.dirtyOffset, geometry.bitmapLength);
    this.#allocated = new Uint32Array(allocated.buffer, allocated.byteOffset, geometry.bitmapLength / 4);
    this.#dirty = new Uint32Array(dirty.buffer, dirty.byteOffset, geometry.bitmapLength / 4);
    this.#hints = hints;
  }

  /** Both bitmaps' bytes (for the handover checksum). */
  bitmapBytes(): [Uint8Array, Uint8Array] {
    return [
      new Uint8Array(this.#allocated.buffer, this.#allocated.byteOffset, this.#allocated.byteLength),
      new Uint8Array(this.#dirty.buffer, this.#dirty.byteOffset, this.#dirty.byteLength),
    ];
  }

  get blockCount(): number {
    return this.#blockCount;
  }

  /** One past the last block of 2 MiB pages: every choice but chooseGroups() keeps below it. */
  get #smallEnd(): number {
    return this.largeFrom ?? this.#blockCount;
  }

  /** Free blocks of 2 MiB pages (all free blocks, in a pool of one page size). */
  get freeSmallBlocks(): number {
    if (this.largeFrom === undefined) return this.freeBlocks;
    let freeLarge = 0;
    for (let word = this.largeFrom >>> 5; word < this.#blockCount >>> 5; word++) freeLarge += 32 - popcount32(this.#allocated[word]!);
    return this.freeBlocks - freeLarge;
  }

  /** A hybrid pool's 1 GiB pages: how many there are and how many are wholly free. */
  largeGroups(): { total: number; free: number } {
    if (this.largeFrom === undefined) return { total: 0, free: 0 };
    let free = 0;
    for (let group = this.largeFrom; group < this.#blockCount; group += this.groupBlocks) if (this.#groupFree(group)) free++;
    return { total: (this.#blockCount - this.largeFrom) / this.groupBlocks, free };
  }

  /** Up to `count` wholly free 1 GiB pages, first-fit, as runs (adjacent ones merged); fewer when fewer are free. */
  chooseGroups(count: number): BlockRun[] {
    const runs: BlockRun[] = [];
    if (this.largeFrom === undefined) return runs;
    let found = 0;
    for (let group = this.largeFrom; group < this.#blockCount && found < count; group += this.groupBlocks) {
      if (!this.#groupFree(group)) continue;
      found++;
      appendRun(runs, group, this.groupBlocks);
    }
    return runs;
  }

  #groupFree(group: number): boolean {
    for (let word = group >>> 5; word < (group + this.groupBlocks) >>> 5; word++) if (this.#allocated[word] !== 0) return false;
    return true;
  }

  get freeBlocks(): number {
    return this.#hints.freeBlocks;
  }
  get dirtyBlocks(): number {
    return this.#hints.dirtyBlocks;
  }
  /** Blocks files can use: all but the metadata region. */
  get dataBlocks(): number {
    return this.#blockCount - this.metadataBlocks;
  }

  /** mkfs: metadata blocks allocated, every data block free and clean (fallocate hands out zeroed pages). */
  format(): void {
    this.#allocated.fill(0);
    this.#dirty.fill(0);
    this.#setRange(this.#allocated, 0, this.metadataBlocks, true);
    // Bits past the last block stay set so no search can return them.
    this.#setRange(this.#allocated, this.#blockCount, this.#allocated.length * 32 - this.#blockCount, true);
    this.#hints.freeBlocks = this.dataBlocks;
    this.#hints.dirtyBlocks = 0;
  }

  // ---------------------------------------------------------------- resizing (resize.ts orders these steps)

  /** One past the last allocated data block, quarantined ones included: the fewest blocks the pool could shrink to. */
  usedEnd(): number {
    for (let block = this.#blockCount - 1; block >= this.metadataBlocks; block--) if (this.isAllocated(block)) return block + 1;
    return this.metadataBlocks;
  }

  /** Shrinking, before the commit: the free blocks from `count` on are taken so nothing is allocated there. */
  closeTail(count: number): void {
    this.#setRange(this.#allocated, count, this.#blockCount - count, true);
  }

  /**
   * The commit of a resize: the filesystem spans `count` blocks. Blocks that leave were closed first and no longer
   * count as free or dirty; blocks that join stay allocated until openTail().
   */
  setBlockCount(count: number): void {
    if (count < this.#blockCount) {
      const leaving = [{ start: count, length: this.#blockCount - count }];
      this.#hints.freeBlocks = this.freeBlocks - (this.#blockCount - count);
      this.#hints.dirtyBlocks = this.dirtyBlocks - totalBlocks(this.dirtyWithin(leaving));
    }
    this.#blockCount = count;
  }

  /** Growing, after the commit: the blocks from `from` to the end become free. */
  openTail(from: number): void {
    const opened = this.#setRange(this.#allocated, from, this.#blockCount - from, false);
    this.#hints.freeBlocks = this.freeBlocks + opened;
  }

  /** Blocks past the end hold no bytes worth zeroing: their memory was given back, and a grow brings in zeroed pages. */
  forgetDirtyBeyondEnd(): void {
    this.#setRange(this.#dirty, this.#blockCount, this.#dirty.length * 32 - this.#blockCount, false);
  }

  isQuarantined(block: number): boolean {
    return this.#quarantined.has(block);
  }

  /**
   * Takes a block out of service: allocated from now on, whoever holds it, and never dirty (nothing will zero it).
   * The caller records it in the superblock first: that is the commit point, and the bitmap is derived.
   */
  quarantine(block: number): void {
    this.#quarantined.add(block);
    if (!this.isAllocated(block)) this.markAllocated([{ start: block, length: 1 }]);
    if (this.isDirty(block)) {
      this.#setRange(this.#dirty, block, 1, false);
      this.#hints.dirtyBlocks = this.dirtyBlocks - 1;
    }
  }

  /** Runs without their quarantined blocks: what a file that lets go of them really frees. */
  #withoutQuarantined(runs: readonly BlockRun[]): readonly BlockRun[] {
    if (this.#quarantined.size === 0) return runs;
    const kept: BlockRun[] = [];
    for (const run of runs) {
      for (let block = run.start; block < run.start + run.length; block++) if (!this.#quarantined.has(block)) appendRun(kept, block);
    }
    return kept;
  }

  isAllocated(block: number): boolean {
    return (this.#allocated[block >>> 5]! & (1 << (block & 31))) !== 0;
  }
  isDirty(block: number): boolean {
    return (this.#dirty[block >>> 5]! & (1 << (block & 31))) !== 0;
  }

  /** Picks blocks for `count` more blocks of a file whose data currently ends at block `after` (or -1). Null when short. */
  choose(count: number, after: number): BlockRun[] | null {
    if (count === 0) return [];
    if (count > this.freeSmallBlocks) return null;
    if (after >= 0 && this.#isFreeRange(after, count)) return [{ start: after, length: count }];
    const run = this.#bestRun(count);
    if (run >= 0) return [{ start: run, length: count }];
    return this.#gather(count);
  }

  /**
   * Blocks for a contiguous file of `count` more blocks: in place after its end (`after`), or, for an empty file
   * (after -1), the smallest free run that holds them all (best fit keeps large runs for large files). Null when none.
   */
  chooseContiguous(count: number, after: number): BlockRun[] | null {
    if (count === 0) return [];
    if (count > this.freeSmallBlocks) return null;
    if (after >= 0) return this.#isFreeRange(after, count) ? [{ start: after, length: count }] : null;
    const run = this.#bestRun(count);
    return run >= 0 ? [{ start: run, length: count }] : null;
  }

  /** Every run of free blocks, in order. */
  freeRuns(): BlockRun[] {
    const runs: BlockRun[] = [];
    this.#forEachFreeRun((start, length) => {
      runs.push({ start, length });
      return false;
    });
    return runs;
  }

  /** The longest run of free blocks of 2 MiB pages (what the largest contiguous file could still get). */
  largestFreeRun(): number {
    return this.fragmentation().largestFreeRun;
  }

  /**
   * How broken up free space is: the number of free runs and the longest (in blocks), in one pass; in a hybrid pool,
   * of its 2 MiB pages (its 1 GiB pages are whole or taken: largeGroups() counts them).
   */
  fragmentation(): { freeRuns: number; largestFreeRun: number } {
    let freeRuns = 0;
    let largestFreeRun = 0;
    this.#forEachFreeRun((_, length) => {
      freeRuns++;
      largestFreeRun = Math.max(largestFreeRun, length);
      return false;
    }, this.#smallEnd);
    return { freeRuns, largestFreeRun };
  }

  /** Marks runs allocated (and updates the free count). */
  markAllocated(runs: readonly BlockRun[]): void {
    let total = 0;
    for (const run of runs) {
      this.#setRange(this.#allocated, run.start, run.length, true);
      total += run.length;
    }
    this.#hints.freeBlocks = this.freeBlocks - total;
  }

  /** Marks runs free, but for quarantined blocks, which stay allocated. */
  markFree(given: readonly BlockRun[]): void {
    const runs = this.#withoutQuarantined(given);
    let total = 0;
    for (const run of runs) {
      this.#setRange(this.#allocated, run.start, run.length, false);
      total += run.length;
    }
    this.#hints.freeBlocks = this.freeBlocks + total;
  }

  /** Marks runs dirty (their bytes belonged to a file) or clean (zeroed), keeping the dirty count; never a quarantined block dirty. */
  markDirty(given: readonly BlockRun[], dirty: boolean): void {
    const runs = dirty ? this.#withoutQuarantined(given) : given;
    let changed = 0;
    for (const run of runs) changed += this.#setRange(this.#dirty, run.start, run.length, dirty);
    this.#hints.dirtyBlocks = this.dirtyBlocks + (dirty ? changed : -changed);
  }

  /** The dirty blocks among runs, as runs, in order (a word at a time; nothing to scan when no block is dirty). */
  dirtyWithin(runs: readonly BlockRun[]): BlockRun[] {
    const out: BlockRun[] = [];
    if (this.dirtyBlocks === 0) return out;
    for (const run of runs) {
      const end = run.start + run.length;
      let block = run.start;
      while (block < end) {
        if ((block & 31) === 0 && block + 32 <= end && this.#dirty[block >>> 5] === 0) {
          block += 32;
          continue;
        }
        if (!this.isDirty(block)) {
          block++;
          continue;
        }
        appendRun(out, block);
        block++;
      }
    }
    return out;
  }

  /** Free blocks that are dirty, as runs (what a scrub must zero). */
  dirtyFreeRuns(limit = Infinity): BlockRun[] {
    const out: BlockRun[] = [];
    let taken = 0;
    for (let word = 0; word < this.#dirty.length && taken < limit; word++) {
      const candidates = this.#dirty[word]! & ~this.#allocated[word]!;
      if (candidates === 0) continue;
      for (let bit = 0; bit < 32 && taken < limit; bit++) {
        if ((candidates & (1 << bit)) === 0) continue;
        appendRun(out, word * 32 + bit);
        taken++;
      }
    }
    return out;
  }

  /** Popcounts of both bitmaps over real blocks (used at mount to check the hints, and by the checker). */
  count(): { allocated: number; dirty: number } {
    let allocated = 0;
    let dirty = 0;
    for (let block = 0; block < this.#blockCount; block += 32) {
      const word = block >>> 5;
      const valid = Math.min(32, this.#blockCount - block);
      const mask = valid === 32 ? FULL : (1 << valid) - 1;
      allocated += popcount32(this.#allocated[word]! & mask);
      dirty += popcount32(this.#dirty[word]! & mask);
    }
    return { allocated, dirty };
  }

  #isFreeRange(start: number, count: number): boolean {
    if (start < this.metadataBlocks || start + count > this.#smallEnd) return false;
    for (let block = start; block < start + count;) {
      if ((block & 31) === 0 && block + 32 <= start + count) {
        if (this.#allocated[block >>> 5] !== 0) return false;
        block += 32;
      } else {
        if (this.isAllocated(block)) return false;
        block++;
      }
    }
    return true;
  }

  /**
   * Best fit: the start of the smallest free run of at least `count` blocks (the first of equals), or -1. An exact fit
   * ends the search.
   */
  #bestRun(count: number): number {
    let bestStart = -1;
    let bestLength = Infinity;
    this.#forEachFreeRun((start, length) => {
      if (length < count || length >= bestLength) return false;
      bestStart = start;
      bestLength = length;
      return length === count;
    }, this.#smallEnd);
    return bestStart;
  }

  /**
   * Calls visit(start, length) for each maximal run of free blocks in order, a word at a time where words are all-free
   * or all-used, until it returns true; only below block `end` (a multiple of 32) when given.
   */
  #forEachFreeRun(visit: (start: number, length: number) => boolean, end?: number): void {
    let runStart = -1;
    let runLength = 0;
    const words = end === undefined ? this.#allocated.length : Math.ceil(end / 32);
    for (let word = 0; word < words; word++) {
      const bits = this.#allocated[word]!;
      if (bits === 0) {
        if (runLength === 0) runStart = word * 32;
        runLength += 32;
        continue;
      }
      for (let bit = 0; bit < 32; bit++) {
        if ((bits & (1 << bit)) === 0) {
          if (runLength === 0) runStart = word * 32 + bit;
          runLength++;
        } else if (runLength > 0) {
          if (visit(runStart, runLength)) return;
          runLength = 0;
        }
        if (bits === FULL) break;
      }
    }
    if (runLength > 0) visit(runStart, runLength);
  }

  /** Several runs, first-fit, adding up to exactly `count` (the caller checked the free count). */
  #gather(count: number): BlockRun[] | null {
    const runs: BlockRun[] = [];
    let needed = count;
    const words = Math.ceil(this.#smallEnd / 32);
    for (let word = 0; word < words && needed > 0; word++) {
      const bits = this.#allocated[word]!;
      if (bits === FULL) continue;
      for (let bit = 0; bit < 32 && needed > 0; bit++) {
        if ((bits & (1 << bit)) !== 0) continue;
        appendRun(runs, word * 32 + bit);
        needed--;
      }
    }
    return needed === 0 ? runs : null;
  }

  /** Sets or clears a range of bits a word at a time; returns how many bits changed. */
  #setRange(bitmap: Uint32Array, start: number, length: number, value: boolean): number {
    let block = start;
    let changed = 0;
    const end = start + length;
    while (block < end) {
      const word = block >>> 5;
      const bit = block & 31;
      const span = Math.min(32 - bit, end - block);
      const mask = (span === 32 ? FULL : ((1 << span) - 1) << bit) >>> 0;
      const before = bitmap[word]!;
      const after = value ? (before | mask) >>> 0 : (before & ~mask) >>> 0;
      changed += popcount32((before ^ after) >>> 0);
      bitmap[word] = after;
      block += span;
    }
    return changed;
  }
}

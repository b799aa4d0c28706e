// Per-file block mappings as extents (runs of blocks): four inline in the inode, the rest in a chain of 512-byte
// extent pages, so a file can grow to the whole pool.
//
// Extent page layout: 0 owner ino u32, 4 next page u32, 8 nextFree u32 (free list link), 12 reserved,
// 16.. 62 extents of (start u32, length u32). Page 0 is never used, so 0 means "none".
//
// Ordering (see data.ts): new extent entries and pages are written and linked first and the inode's
// extentCount is raised last, so the count is the commit point; a kill before it leaves unused entries that
// readers ignore and the checker frees.
import { GuestmemfsError } from '../errors';
import { EXTENT_PAGE_SIZE, EXTENTS_PER_PAGE, type Geometry, type Hints, INLINE_EXTENTS } from './layout';
import type { InodeTable } from './inodes';
import { ChunkedRecords, type MetadataSource } from './metadata';
import type { BlockRun } from './runs';

const PAGE_WORDS = EXTENT_PAGE_SIZE / 4;
const P = { owner: 0, next: 1, nextFree: 2, extents: 4 } as const;

/** 2048 pages (1 MiB) per window. */
const CHUNK_SHIFT = 11;

export class ExtentStore {
  readonly pageCount: number;
  readonly #pages: ChunkedRecords;
  readonly #hints: Hints;
  readonly #inodes: InodeTable;

  constructor(source: MetadataSource, geometry: Geometry, hints: Hints, inodes: InodeTable) {
    this.pageCount = geometry.extentPageCount;
    this.#pages = new ChunkedRecords(source, geometry.extentOffset, EXTENT_PAGE_SIZE, geometry.extentPageCount, CHUNK_SHIFT);
    this.#hints = hints;
    this.#inodes = inodes;
  }

  /** Word `word` of page `page`. */
  #word(page: number, word: number): number {
    return this.#pages.u32(page)[this.#pages.local(page) * PAGE_WORDS + word]!;
  }
  #setWord(page: number, word: number, value: number): void {
    this.#pages.u32(page)[this.#pages.local(page) * PAGE_WORDS + word] = value;
  }
  #clearPage(page: number): void {
    const start = this.#pages.local(page) * PAGE_WORDS;
    this.#pages.u32(page).fill(0, start, start + PAGE_WORDS);
  }

  /** The 512 bytes of `count` pages from `first` (for the handover checksum), one view per stored chunk. */
  pageRecords(first: number, count: number): Uint8Array[] {
    return this.#pages.run(first, count);
  }

  get freePages(): number {
    return this.#hints.freePages;
  }

  pageOwner(page: number): number {
    return this.#word(page, P.owner);
  }
  pageNext(page: number): number {
    return this.#word(page, P.next);
  }
  pageNextFree(page: number): number {
    return this.#word(page, P.nextFree);
  }

  /** mkfs: every page except page 0 on the free list, in order. */
  format(): void {
    for (let page = 1; page < this.pageCount; page++) {
      this.#clearPage(page);
      this.#setWord(page, P.nextFree, page + 1 < this.pageCount ? page + 1 : 0);
    }
    this.#hints.freePageHead = this.pageCount > 1 ? 1 : 0;
    this.#hints.freePages = this.pageCount - 1;
  }

  /** Recovery: every page not marked used goes on the free list, in order. */
  rebuildFreeList(used: Uint8Array): void {
    let head = 0;
    let free = 0;
    for (let page = this.pageCount - 1; page >= 1; page--) {
      if (used[page]) continue;
      this.#clearPage(page);
      this.#setWord(page, P.nextFree, head);
      head = page;
      free++;
    }
    this.#hints.freePageHead = head;
    this.#hints.freePages = free;
  }

  /** The file's extents in file order. Entries are bounds-checked: a damaged chain ends the list early. */
  read(ino: number): BlockRun[] {
    const inodes = this.#inodes;
    const count = inodes.extentCount(ino);
    const runs: BlockRun[] = [];
    for (let i = 0; i < Math.min(count, INLINE_EXTENTS); i++) {
      runs.push({ start: inodes.inlineStart(ino, i), length: inodes.inlineLength(ino, i) });
    }
    let page = inodes.firstPage(ino);
    let index = INLINE_EXTENTS;
    let hops = 0;
    while (index < count && page > 0 && page < this.pageCount && hops++ < this.pageCount) {
      const words = this.#pages.u32(page);
      const base = this.#pages.local(page) * PAGE_WORDS + P.extents;
      for (let slot = 0; slot < EXTENTS_PER_PAGE && index < count; slot++, index++) {
        runs.push({ start: words[base + slot * 2]!, length: words[base + slot * 2 + 1]! });
      }
      page = this.pageNext(page);
    }
    return runs;
  }

  /** Pages in the inode's chain, in order (bounded, so a damaged cycle cannot hang). */
  chain(ino: number): number[] {
    const pages: number[] = [];
    let page = this.#inodes.firstPage(ino);
    while (page > 0 && page < this.pageCount && pages.length < this.pageCount) {
      pages.push(page);
      page = this.pageNext(page);
    }
    return pages;
  }

  /** Extent pages a file with `count` extents needs. */
  static pagesFor(count: number): number {
    return count <= INLINE_EXTENTS ? 0 : Math.ceil((count - INLINE_EXTENTS) / EXTENTS_PER_PAGE);
  }

  /**
   * Appends runs after the file's existing extents, merging the first into the last extent when contiguous.
   * The caller has checked pagesNeeded() against freePages, so this cannot fail half-way.
   */
  append(ino: number, runs: readonly BlockRun[]): void {
    const inodes = this.#inodes;
    let count = inodes.extentCount(ino);
    let pending = runs;
    if (count > 0 && pending.length > 0) {
      const last = this.#entryIndex(ino, count - 1);
      const lastStart = this.#entryStart(last);
      const lastLength = this.#entryLength(last);
      if (lastStart + lastLength === pending[0]!.start) {
        // A single 32-bit store grows the last extent: it is its own commit point.
        this.#setEntryLength(last, lastLength + pending[0]!.length);
        pending = pending.slice(1);
      }
    }
    if (pending.length === 0) return;
    const target = count + pending.length;
    const chain = this.chain(ino);
    const needed = ExtentStore.pagesFor(target);
    // Link the pages first; they stay unused until extentCount covers them.
    while (chain.length < needed) {
      const page = this.#popFreePage(ino);
      if (chain.length === 0) inodes.setFirstPage(ino, page);
      else this.#setWord(chain.at(-1)!, P.next, page);
      chain.push(page);
    }
    for (const run of pending) {
      const entry = this.#entryIndexIn(ino, chain, count);
      this.#setEntry(entry, run.start, run.length);
      count++;
    }
    inodes.setExtentCount(ino, target); // commit point
  }

  pagesNeeded(ino: number, newRuns: number): number {
    const count = this.#inodes.extentCount(ino);
    return Math.max(0, ExtentStore.pagesFor(count + newRuns) - this.chain(ino).length);
  }

  /**
   * Keeps the first `keepBlocks` blocks of the file and returns the runs cut off. The count drops first, then the
   * kept boundary extent shrinks, then surplus pages go back to the free list: each step leaves a state the
   * checker reads as "more blocks than the size needs", which it trims.
   */
  truncate(ino: number, keepBlocks: number): BlockRun[] {
    const inodes = this.#inodes;
    const runs = this.read(ino);
    const freed: BlockRun[] = [];
    let kept = 0;
    let keepCount = 0;
    let boundaryLength = -1;
    for (const run of runs) {
      if (kept >= keepBlocks) {
        freed.push(run);
        continue;
      }
      keepCount++;
      if (kept + run.length > keepBlocks) {
        boundaryLength = keepBlocks - kept;
        freed.push({ start: run.start + boundaryLength, length: run.length - boundaryLength });
      }
      kept += Math.min(run.length, keepBlocks - kept);
    }
    inodes.setExtentCount(ino, keepCount);
    if (boundaryLength >= 0) this.#setEntryLength(this.#entryIndex(ino, keepCount - 1), boundaryLength);
    const chain = this.chain(ino);
    const keepPages = ExtentStore.pagesFor(keepCount);
    if (chain.length > keepPages) {
      if (keepPages === 0) inodes.setFirstPage(ino, 0);
      else this.#setWord(chain[keepPages - 1]!, P.next, 0);
      for (const page of chain.slice(keepPages)) this.#pushFreePage(page);
    }
    return freed;
  }

  #popFreePage(owner: number): number {
    const head = this.#hints.freePageHead;
    if (head === 0) throw new GuestmemfsError('ENOSPC', 'extent pages exhausted (cannot happen with a consistent pool: run the checker)');
    if (head >= this.pageCount || this.pageOwner(head) !== 0) {
      throw new GuestmemfsError(
        'EUCLEAN',
        `the free extent page list is damaged (it names page ${head}): unmount and run the checker with repair`,
      );
    }
    this.#hints.freePageHead = this.pageNextFree(head);
    this.#hints.freePages = this.freePages - 1;
    this.#clearPage(head);
    this.#setWord(head, P.owner, owner);
    return head;
  }

  #pushFreePage(page: number): void {
    this.#setWord(page, P.owner, 0);
    this.#setWord(page, P.next, 0);
    this.#setWord(page, P.nextFree, this.#hints.freePageHead);
    this.#hints.freePageHead = page;
    this.#hints.freePages = this.freePages + 1;
  }

  // Entry addressing: an entry is -1 - (ino * 4 + slot) for an inline extent, or page * 64 + slot for one in a page.
  #entryIndex(ino: number, index: number): number {
    return this.#entryIndexIn(ino, index < INLINE_EXTENTS ? [] : this.chain(ino), index);
  }
  #entryIndexIn(ino: number, chain: readonly number[], index: number): number {
    if (index < INLINE_EXTENTS) return -1 - (ino * INLINE_EXTENTS + index);
    const page = chain[Math.floor((index - INLINE_EXTENTS) / EXTENTS_PER_PAGE)]!;
    return page * 64 + ((index - INLINE_EXTENTS) % EXTENTS_PER_PAGE);
  }
  #inlineOf(entry: number): [number, number] {
    const flat = -1 - entry;
    return [Math.floor(flat / INLINE_EXTENTS), flat % INLINE_EXTENTS];
  }
  #pageWord(entry: number): [number, number] {
    return [Math.floor(entry / 64), P.extents + (entry % 64) * 2];
  }
  #entryStart(entry: number): number {
    if (entry < 0) {
      const [ino, slot] = this.#inlineOf(entry);
      return this.#inodes.inlineStart(ino, slot);
    }
    const [page, word] = this.#pageWord(entry);
    return this.#word(page, word);
  }
  #entryLength(entry: number): number {
    if (entry < 0) {
      const [ino, slot] = this.#inlineOf(entry);
      return this.#inodes.inlineLength(ino, slot);
    }
    const [page, word] = this.#pageWord(entry);
    return this.#word(page, word + 1);
  }
  #setEntry(entry: number, start: number, length: number): void {
    if (entry < 0) {
      const [ino, slot] = this.#inlineOf(entry);
      this.#inodes.setInline(ino, slot, start, length);
    } else {
      const [page, word] = this.#pageWord(entry);
      this.#setWord(page, word, start);
      this.#setWord(page, word + 1, length);
    }
  }
  #setEntryLength(entry: number, length: number): void {
    if (entry < 0) {
      const [ino, slot] = this.#inlineOf(entry);
      this.#inodes.setInlineLength(ino, slot, length);
    } else {
      const [page, word] = this.#pageWord(entry);
      this.#setWord(page, word + 1, length);
    }
  }
}

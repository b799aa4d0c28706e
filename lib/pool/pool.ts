// A pool: one large region of reserved memory (hugetlbfs file, hugetlb memfd, or the 4 KiB fallback) that files are carved from.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError, hasCode } from '../errors';
import { native, type NativeMapResult } from '../native';
import { formatSize, GiB } from '../units';
import { defaultHugePageSize, HUGETLBFS_MAGIC, requireFreeHugePages, TMPFS_MAGIC } from './hugepages';
import { type Extent, type MapOptions, Mapping } from './mapping';
import { misplacedPages, type Placement, placementOf, requireNode } from './numa';
import { Pin } from './pins';
import { extentsOfPairs, type MappingRecipe, pairsLength, readMapResult } from './remap';
import {
  checkDirectoryFilesystem,
  checkLargeRegion,
  explainAllocateFailure,
  isHugetlbBackend,
  LARGE_PAGE_SIZE,
  requireHybridShape,
  splitAt,
} from './pool-checks';

export { LARGE_PAGE_SIZE } from './pool-checks';

export type PoolBackend = 'hugetlbfs' | 'memfd-hugetlb' | 'shm-4k' | 'memfd-4k';

export const SMALL_PAGE_SIZE = 4096;

export interface CreatePoolOptions {
  backend: PoolBackend;
  /** Bytes; a multiple of the page size. */
  size: number;
  /** Huge page size for hugetlb backends (default: the kernel's default huge page size). Ignored by the 4 KiB fallback. */
  pageSize?: number;
  /** File path for 'hugetlbfs' (on a hugetlbfs mount) and 'shm-4k' (on tmpfs, e.g. /dev/shm). */
  path?: string;
  /** memfd name for the memfd backends (shows in /proc/PID/fd). */
  name?: string;
  /** File mode for path-backed pools. Default 0600: guest memory is private. */
  mode?: number;
  /** Called as pages are pre-allocated, which takes seconds for many GiB. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Skip pre-allocation (4 KiB backends only): pages appear when first touched, so a benchmark can describe a TiB
   * without owning it. Not for guests: a later fault can fail when memory runs out.
   */
  sparse?: boolean;
  /**
   * Bind the pool to this NUMA node: every page is allocated there (mbind before the pages are faulted in), or the
   * pool is not created. Not with `sparse`, whose later faults could land anywhere.
   */
  node?: number;
  /**
   * A second file of 1 GiB pages joined to this one (a hybrid pool): its bytes follow this file's in pool offsets, so
   * one block numbering covers both. This file must then have 2 MiB pages and be a whole number of GiB.
   */
  large?: LargeRegionOptions;
}

export interface LargeRegionOptions {
  /** Bytes of 1 GiB pages. */
  size: number;
  /** For the hugetlbfs backend: where the file goes, on a hugetlbfs mount of 1 GiB pages. */
  path?: string;
}

/** A hybrid pool's file of 1 GiB pages, whose bytes are the pool offsets from `from` on. */
export interface LargeRegion {
  readonly fd: number;
  readonly path: string | undefined;
  readonly size: number;
  readonly from: number;
}

export interface ResizeFileOptions {
  /** Allocate the new pages on this NUMA node (a pool bound to it). */
  node?: number;
  /** Called as new pages are allocated, with bytes done and bytes to do. */
  onProgress?: (done: number, total: number) => void;
}

/** Most pages placement() asks the kernel about; larger pools are sampled at an even stride. */
const PLACEMENT_SAMPLES = 1 << 20;

/** Pre-allocation granularity: progress is reported once per chunk. */
const ALLOCATE_CHUNK = 1 * GiB;
/**
 * The span of one page-middle-directory table: Linux shares those tables between processes mapping the same hugetlb
 * file range (hugetlb PMD sharing) when each mapping covers whole such spans at addresses congruent to the file
 * offsets (MapOptions.sharePageTables).
 */
const PMD_SHARE_SPAN = 1 * GiB;
/** Where native.mapExtents() reports a mapping: one array for every call (it never re-enters JavaScript). */
let mapResult: Float64Array | undefined;

export class Pool {
  readonly fd: number;
  readonly backend: PoolBackend;
  readonly path: string | undefined;
  #size: number;
  readonly pageSize: number;
  /** The NUMA node this object bound the pool to when it created it (an opened pool's node is in its format). */
  readonly node: number | undefined;
  #fresh: boolean;
  #open = true;
  #large: LargeRegion | undefined;

  private constructor(
    fd: number,
    backend: PoolBackend,
    poolPath: string | undefined,
    size: number,
    pageSize: number,
    fresh = false,
    node?: number,
  ) {
    this.#fresh = fresh;
    this.node = node;
    this.fd = fd;
    this.backend = backend;
    this.path = poolPath;
    this.#size = size;
    this.pageSize = pageSize;
  }

  /**
   * Bytes of pool offsets, as this object last set or found them (refreshSize() asks the file): the pool file's, and
   * for a hybrid pool its file of 1 GiB pages' after them.
   */
  get size(): number {
    return this.#size + (this.#large?.size ?? 0);
  }

  /** Reads the pool file's size again: its owner, in another process, may have resized it since this object looked. */
  refreshSize(): number {
    this.#requireOpen('fstat');
    this.#size = native.fdInfo(this.fd).size;
    return this.size;
  }

  /** The file of 1 GiB pages a hybrid pool spans after its own (undefined for a pool of one page size). */
  get large(): LargeRegion | undefined {
    return this.#large;
  }

  /**
   * Joins a file of 1 GiB pages to this pool (a hybrid pool's, opened by path or inherited as an fd), whose bytes
   * become the pool offsets from this file's end on. Checked to be hugetlbfs of 1 GiB pages; this file must have
   * 2 MiB pages and be a whole number of GiB.
   */
  attachLarge(file: string | number): LargeRegion {
    this.#requireOpen('open');
    if (this.#large)
      throw new GuestmemfsError('EBUSY', `pool ${this.label} already has its 1 GiB-page file`, { syscall: 'open', path: this.path });
    requireHybridShape(this.backend, this.pageSize, this.#size, this.path, 'open');
    const largePath = typeof file === 'string' ? path.resolve(file) : undefined;
    let fd: number;
    try {
      fd = largePath === undefined ? (file as number) : native.fileOpen(largePath, false, false, 0);
    } catch (error) {
      throw GuestmemfsError.from(error, { path: largePath }).withRemedy(
        "the hybrid pool's file of 1 GiB pages is missing: restore it, or mkfs the pool afresh",
      );
    }
    try {
      const info = native.fdInfo(fd);
      if (info.fsType !== HUGETLBFS_MAGIC || info.fsBlockSize !== LARGE_PAGE_SIZE || info.size === 0 || info.size % LARGE_PAGE_SIZE) {
        throw new GuestmemfsError(
          'EINVAL',
          `not a 1 GiB-page file: a hybrid pool's second file must be a non-empty hugetlbfs file of 1 GiB pages`,
          { syscall: 'open', path: largePath ?? `fd ${fd}` },
        );
      }
      this.#large = { fd, path: largePath, size: info.size, from: this.#size };
      return this.#large;
    } catch (error) {
      if (largePath !== undefined) native.fdClose(fd);
      throw error;
    }
  }

  /** True for the 4 KiB-page fallback, which works anywhere but gives guests no huge pages. */
  get isFallback(): boolean {
    return !isHugetlbBackend(this.backend);
  }

  /** True while every page is known to be zero: this object created the pool and nothing has mapped it writable since. */
  get freshlyAllocated(): boolean {
    return this.#fresh;
  }

  get isOpen(): boolean {
    return this.#open;
  }

  /** Where this pool is, for messages: its path, or memfd:NAME (fd N). */
  get label(): string {
    return this.path ?? `memfd (fd ${this.fd})`;
  }

  describe(): string {
    const pages = this.isFallback
      ? `${formatSize(SMALL_PAGE_SIZE)} pages (fallback: no huge pages, guests lose the TLB benefit)`
      : `${formatSize(this.pageSize)} huge pages`;
    const large = this.#large ? ` and ${formatSize(this.#large.size)} of 1 GiB pages in ${this.#large.path ?? `fd ${this.#large.fd}`}` : '';
    return `${this.backend} pool ${this.label}: ${formatSize(this.#size)} of ${pages}${large}`;
  }

  /**
   * Creates a pool and reserves every page of it now, so that no later fault can fail.
   * Huge page availability is checked first: a short machine gets ENOMEM naming the command that fixes it,
   * and nothing is created.
   */
  static create(options: CreatePoolOptions): Pool {
    const { backend } = options;
    const pageSize = isHugetlbBackend(backend) ? (options.pageSize ?? defaultHugePageSize()) : SMALL_PAGE_SIZE;
    const size = options.size;
    if (!['hugetlbfs', 'memfd-hugetlb', 'shm-4k', 'memfd-4k'].includes(backend)) {
      throw new GuestmemfsError('EINVAL', `unknown pool backend "${backend}": use hugetlbfs, memfd-hugetlb, shm-4k or memfd-4k`);
    }
    if (!Number.isSafeInteger(size) || size <= 0 || size % pageSize !== 0) {
      throw new GuestmemfsError('EINVAL', `pool size ${size} must be a positive multiple of the ${formatSize(pageSize)} page size`, {
        path: options.path,
      });
    }
    const needsPath = backend === 'hugetlbfs' || backend === 'shm-4k';
    if (needsPath && !options.path) throw new GuestmemfsError('EINVAL', `the ${backend} backend needs a path`);
    const poolPath = needsPath ? path.resolve(options.path!) : undefined;

    if (options.sparse && isHugetlbBackend(backend)) {
      throw new GuestmemfsError('EINVAL', 'sparse pools are for the 4 KiB backends only: a huge page pool must be reserved up front', {
        path: options.path,
      });
    }
    const node = options.node === undefined ? undefined : requireNode(options.node, { path: options.path });
    if (node !== undefined && options.sparse) {
      throw new GuestmemfsError('EINVAL', 'a sparse pool cannot be bound to a node: its pages appear later, wherever they are faulted', {
        path: options.path,
      });
    }
    if (poolPath) checkDirectoryFilesystem(backend, poolPath, pageSize);
    const largePath = options.large ? checkLargeRegion(options, pageSize, poolPath) : undefined;
    if (isHugetlbBackend(backend)) requireFreeHugePages(pageSize, size / pageSize, { path: poolPath, node });
    if (options.large) requireFreeHugePages(LARGE_PAGE_SIZE, options.large.size / LARGE_PAGE_SIZE, { path: largePath, node });

    const fd = poolPath
      ? native.fileOpen(poolPath, true, true, options.mode ?? 0o600)
      : native.memfdCreate(options.name ?? 'guestmemfs-pool', isHugetlbBackend(backend) ? pageSize : 0);
    const pool = new Pool(fd, backend, poolPath, size, pageSize, true, node);
    try {
      native.fileResize(fd, size);
      if (options.large) pool.#createLarge(options.large.size, largePath, options.name);
      const total = pool.size;
      try {
        if (!options.sparse) pool.#allocate(0, total, node, options.onProgress);
      } catch (error) {
        throw explainAllocateFailure(error, backend, pool.#large ? LARGE_PAGE_SIZE : pageSize, total, poolPath, node);
      }
    } catch (error) {
      pool.destroy();
      throw error;
    }
    return pool;
  }

  /** Creates (empty) the file of 1 GiB pages of a hybrid pool being created. */
  #createLarge(size: number, largePath: string | undefined, name: string | undefined): void {
    const fd = largePath
      ? native.fileOpen(largePath, true, true, 0o600)
      : native.memfdCreate(`${name ?? 'guestmemfs-pool'}-1g`, LARGE_PAGE_SIZE);
    this.#large = { fd, path: largePath, size, from: this.#size };
    native.fileResize(fd, size);
  }

  /**
   * Resizes the pool file. Growing reserves every new page now, as create() does (on `node` when given), so no later
   * fault can fail; short of pages, the file is left at its old size and the error names the remedy. Shrinking gives
   * the pages past the new end back to the kernel: the caller makes sure nobody maps them.
   */
  resize(size: number, options: ResizeFileOptions = {}): void {
    const old = this.#startResize(size, options.node);
    if (old === undefined) return;
    const fresh = this.#fresh;
    try {
      this.#allocate(old, size, options.node, options.onProgress);
    } catch (error) {
      throw this.#abortGrow(old, size, error, options.node);
    } finally {
      this.#fresh = fresh;
    }
  }

  /**
   * resize(), with the new pages faulted in by a worker thread (MADV_POPULATE_WRITE over a mapping of them) so that
   * this thread serves others meanwhile: a grow by 4 GiB takes a third of a second, by 64 GiB several.
   */
  async resizeAsync(size: number, options: ResizeFileOptions = {}): Promise<void> {
    const old = this.#startResize(size, options.node);
    if (old === undefined) return;
    const fresh = this.#fresh;
    const length = size - old;
    try {
      const mapping = this.map([{ offset: old, length }], { populate: false });
      try {
        if (options.node !== undefined) native.numaBind(mapping.id, 0, length, options.node);
        await native.populateAsync(mapping.id, 0, length, options.onProgress, true);
        if (options.node !== undefined) this.#requirePlaced(mapping, old, length, options.node);
      } finally {
        mapping.unmap();
      }
    } catch (error) {
      throw this.#abortGrow(old, size, error, options.node);
    } finally {
      this.#fresh = fresh;
    }
  }

  /**
   * The checks and the ftruncate a resize starts with. Returns the old size when the pool is growing (its new pages
   * still to be allocated), undefined when the resize is done (a shrink, or no change).
   */
  #startResize(size: number, node: number | undefined): number | undefined {
    this.#requireOpen('ftruncate');
    if (this.#large) {
      throw new GuestmemfsError(
        'ENOTSUP',
        `${this.label} is a hybrid pool (2 MiB and 1 GiB pages): it cannot be resized; make a pool of one page size to resize`,
        {
          syscall: 'ftruncate',
          path: this.path,
        },
      );
    }
    if (!Number.isSafeInteger(size) || size <= 0 || size % this.pageSize !== 0) {
      throw new GuestmemfsError('EINVAL', `pool size ${size} must be a positive multiple of the ${formatSize(this.pageSize)} page size`, {
        syscall: 'ftruncate',
        path: this.path,
      });
    }
    const old = this.#size;
    if (size > old && isHugetlbBackend(this.backend))
      requireFreeHugePages(this.pageSize, (size - old) / this.pageSize, { path: this.path, node });
    native.fileResize(this.fd, size);
    this.#size = size;
    return size > old ? old : undefined;
  }

  /** A grow that could not allocate: the pages taken so far go back with the tail, and the pool is as it was. */
  #abortGrow(old: number, size: number, error: unknown, node: number | undefined): GuestmemfsError {
    native.fileResize(this.fd, old);
    this.#size = old;
    return explainAllocateFailure(error, this.backend, this.pageSize, size - old, this.path, node);
  }

  /**
   * Allocates every page of [start, end) now, a chunk at a time (on `node` when given), reporting bytes done of
   * end - start after each chunk.
   */
  #allocate(start: number, end: number, node: number | undefined, onProgress?: (done: number, total: number) => void): void {
    for (let offset = start; offset < end; offset += ALLOCATE_CHUNK) {
      const length = Math.min(ALLOCATE_CHUNK, end - offset);
      if (node !== undefined) this.#allocateOnNode(offset, length, node);
      else if (this.#large && offset >= this.#large.from) native.fileAllocate(this.#large.fd, offset - this.#large.from, length);
      else native.fileAllocate(this.fd, offset, length);
      onProgress?.(offset + length - start, end - start);
    }
  }

  /**
   * Allocates [offset, offset+length) on `node`: a mapping of it is bound there before any of its pages exists, then
   * faulted in, which allocates each page under that policy (fallocate would allocate under the caller's). Every page
   * is then checked to be on the node.
   */
  #allocateOnNode(offset: number, length: number, node: number): void {
    const mapping = this.map([{ offset, length }], { populate: false });
    try {
      native.numaBind(mapping.id, 0, length, node);
      // Faulting a page in writes nothing to it: the pool is still all zeroes.
      native.madvise(mapping.id, 0, length, native.advice.MADV_POPULATE_WRITE);
      this.#requirePlaced(mapping, offset, length, node);
    } finally {
      mapping.unmap();
      this.#fresh = true;
    }
  }

  /** Checks that every page of a mapping of [offset, offset+length), bound to `node`, was allocated there. */
  #requirePlaced(mapping: Mapping, offset: number, length: number, node: number): void {
    const misplaced = misplacedPages(placementOf(mapping.id, 0, length, this.pageSize), node);
    if (misplaced > 0) {
      throw new GuestmemfsError('EIO', `${misplaced} pages of [${offset}, +${length}) are not on node ${node} after binding them there`, {
        syscall: 'mbind',
        path: this.path,
      });
    }
  }

  /**
   * Which NUMA node the pool's pages are on (move_pages), counted; a pool of more than 2^20 pages is sampled at an
   * even stride. The checker compares it with the node the format records. The pages are faulted into a read-only
   * mapping first (move_pages sees only mapped pages), so this is for pools whose every page is allocated: hugetlb
   * pools and pools bound to a node. On a sparse pool it would allocate them.
   */
  placement(): Placement {
    this.#requireOpen('move_pages');
    const pages = this.size / this.pageSize;
    const stride = this.pageSize * Math.ceil(pages / PLACEMENT_SAMPLES);
    const fresh = this.#fresh;
    const mapping = this.map([{ offset: 0, length: this.size }], { populate: true, writable: false });
    try {
      return placementOf(mapping.id, 0, this.size, stride);
    } finally {
      mapping.unmap();
      this.#fresh = fresh;
    }
  }

  /** Opens an existing path-backed pool; the backend and page size come from the filesystem it lives on. */
  static open(poolPath: string): Pool {
    // path.resolve costs a getcwd and, cold, up to half a millisecond: skip it for the usual absolute path.
    const resolved = path.isAbsolute(poolPath) ? poolPath : path.resolve(poolPath);
    let fd: number;
    try {
      fd = native.fileOpen(resolved, false, false, 0);
    } catch (error) {
      const converted = GuestmemfsError.from(error, { path: resolved });
      throw hasCode(converted, 'ENOENT')
        ? converted.withRemedy('no pool there; create one first (Pool.create or `guestmemfs mkfs`)')
        : converted;
    }
    return Pool.#adopt(fd, resolved, 'open');
  }

  /**
   * Adopts an inherited pool fd (a memfd passed across execve, as QEMU's cpr-exec does), and for a hybrid pool the fd
   * of its 1 GiB-page file.
   */
  static fromFd(fd: number, largeFd?: number): Pool {
    const pool = Pool.#adopt(fd, undefined, 'fromFd');
    if (largeFd !== undefined) pool.attachLarge(largeFd);
    return pool;
  }

  static #adopt(fd: number, poolPath: string | undefined, syscall: string): Pool {
    try {
      const info = native.fdInfo(fd);
      const huge = info.fsType === HUGETLBFS_MAGIC;
      if (!huge && info.fsType !== TMPFS_MAGIC) {
        throw new GuestmemfsError(
          'EINVAL',
          `not a pool: the file is on neither hugetlbfs nor tmpfs (statfs type 0x${info.fsType.toString(16)})`,
          {
            syscall,
            path: poolPath,
          },
        );
      }
      const pageSize = huge ? info.fsBlockSize : SMALL_PAGE_SIZE;
      if (info.size === 0 || info.size % pageSize !== 0) {
        throw new GuestmemfsError(
          'EINVAL',
          `not a pool: size ${info.size} is not a positive multiple of the ${formatSize(pageSize)} page size`,
          {
            syscall,
            path: poolPath,
          },
        );
      }
      const backend: PoolBackend = poolPath ? (huge ? 'hugetlbfs' : 'shm-4k') : huge ? 'memfd-hugetlb' : 'memfd-4k';
      return new Pool(fd, backend, poolPath, info.size, pageSize);
    } catch (error) {
      if (poolPath) native.fdClose(fd);
      throw error;
    }
  }

  /**
   * Maps extents of the pool into one contiguous virtual range, coalescing adjacent extents into single mmap calls.
   * Every extent must be page-aligned and inside the pool.
   */
  map(extents: readonly Extent[], options: MapOptions = {}): Mapping {
    this.#requireOpen('mmap');
    const flat = this.#flatten(extents);
    const total = pairsLength(flat);
    // Only 2 MiB pages have shareable PMD tables (1 GiB pages sit in the level above), and only whole GiBs share.
    const shareable =
      options.sharePageTables === true &&
      isHugetlbBackend(this.backend) &&
      this.#large === undefined &&
      this.pageSize < PMD_SHARE_SPAN &&
      total >= PMD_SHARE_SPAN;
    if (options.writable ?? true) this.#fresh = false;
    const flag = native.mapFlags;
    const flags =
      ((options.populate ?? true) ? flag.populate : 0) |
      ((options.writable ?? true) ? flag.writable : 0) |
      (options.dontDump ? flag.dontDump : 0) |
      (options.dontFork ? flag.dontFork : 0) |
      ((options.hugepage ?? this.isFallback) ? flag.hugepage : 0) |
      (options.lock ? flag.lock : 0);
    const congruence = shareable ? PMD_SHARE_SPAN : 0;
    mapResult ??= new Float64Array(native.mapResult.slots);
    // Pinned before it is mapped: no instant where this process maps memory that the owner could free.
    const pin = options.pin ? Pin.take(this, extents, options.pinDescription) : undefined;
    try {
      native.mapExtents(this.fd, flat, flags, this.pageSize, congruence, mapResult, this.#large?.fd, this.#large?.from);
    } catch (error) {
      pin?.release();
      throw error;
    }
    // The mapping owns the pin from here on: it goes right after the munmap, whoever unmaps.
    if (pin) native.mappingAttachPin(mapResult[native.mapResult.id]!, pin.handOff());
    const recipe = { extents: [...flat], flags, alignment: this.pageSize, congruence, largeFrom: this.#large?.from };
    return new Mapping(readMapResult(mapResult), recipe, this.path, options.onUnmap, pin !== undefined);
  }

  /**
   * Takes over a pinned mapping of this pool that mapFromRecipe() made in this process image before the pool was
   * opened (an exec-mode VMM's guest RAM): checked as map() checks its extents, owned from here on like one of its own.
   */
  adoptMapping(made: NativeMapResult, recipe: MappingRecipe): Mapping {
    this.#requireOpen('mmap');
    const flat = this.#flatten(extentsOfPairs(recipe.extents));
    const length = pairsLength(flat);
    if (recipe.alignment !== this.pageSize || made.length !== length) {
      throw new GuestmemfsError(
        'EINVAL',
        `mapping ${made.id} was made with ${recipe.alignment}-byte pages over ${made.length} bytes; this pool has ` +
          `${this.pageSize}-byte pages and the recipe covers ${length}: map the extents afresh`,
        { syscall: 'mmap', path: this.path },
      );
    }
    if (recipe.flags & native.mapFlags.writable) this.#fresh = false;
    return new Mapping(made, { ...recipe, extents: [...flat] }, this.path, undefined, true);
  }

  /** Checks extents as map() takes them (page-aligned, inside the pool) and flattens them to [offset, length] pairs. */
  #flatten(extents: readonly Extent[]): Float64Array {
    // JS callers may pass anything: whatever is not an array of safe integer pairs fails the checks below.
    const given: unknown = extents;
    if (!Array.isArray(given) || extents.length === 0) {
      throw new GuestmemfsError('EINVAL', 'map needs at least one extent { offset, length }', { syscall: 'mmap', path: this.path });
    }
    const flat = new Float64Array(extents.length * 2);
    extents.forEach((extent, index) => {
      const { offset, length }: Partial<Extent> = extent ?? {};
      if (
        offset === undefined ||
        length === undefined ||
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length <= 0
      ) {
        throw new GuestmemfsError('EINVAL', `extent ${index} must have a non-negative integer offset and a positive integer length`, {
          syscall: 'mmap',
          path: this.path,
        });
      }
      if (offset % this.pageSize !== 0 || length % this.pageSize !== 0) {
        throw new GuestmemfsError(
          'EINVAL',
          `extent ${index} (offset ${offset}, length ${length}) is not aligned to the pool's ${formatSize(this.pageSize)} pages`,
          { syscall: 'mmap', path: this.path },
        );
      }
      // The owner may have grown the pool since this object learned its size: ask the file before refusing.
      if (offset + length > this.size) this.refreshSize();
      if (offset + length > this.size) {
        throw new GuestmemfsError('EINVAL', `extent ${index} ends at ${offset + length}, beyond the ${formatSize(this.size)} pool`, {
          syscall: 'mmap',
          path: this.path,
        });
      }
      const from = this.#large?.from ?? Infinity;
      if (
        offset + length > from &&
        ((offset > from ? offset - from : 0) % LARGE_PAGE_SIZE !== 0 || (offset + length - from) % LARGE_PAGE_SIZE !== 0)
      ) {
        throw new GuestmemfsError(
          'EINVAL',
          `extent ${index} (offset ${offset}, length ${length}) reaches the pool's 1 GiB pages from ${from} on, but not in whole ` +
            `GiB from there: map 1 GiB pages whole`,
          { syscall: 'mmap', path: this.path },
        );
      }
      flat[index * 2] = offset;
      flat[index * 2 + 1] = length;
    });
    return this.#large ? new Float64Array(splitAt(flat, this.#large.from)) : flat;
  }

  /** Maps the whole pool as one range. */
  mapAll(options: MapOptions = {}): Mapping {
    return this.map([{ offset: 0, length: this.size }], options);
  }

  /** Keeps (or stops keeping) the pool fds open across execve. */
  setInheritable(inherit: boolean): void {
    this.#requireOpen('fcntl');
    native.fdSetInherit(this.fd, inherit);
    if (this.#large) native.fdSetInherit(this.#large.fd, inherit);
  }

  /** Closes the fds. Existing mappings stay valid: they hold their own reference to the pages. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    native.fdClose(this.fd);
    if (this.#large) native.fdClose(this.#large.fd);
  }

  /** Closes and deletes a path-backed pool (both files of a hybrid one), returning its pages to the kernel once no mapping holds them. */
  destroy(): void {
    this.close();
    if (this.path) fs.rmSync(this.path, { force: true });
    if (this.#large?.path) fs.rmSync(this.#large.path, { force: true });
  }

  #requireOpen(syscall: string): void {
    if (!this.#open) throw new GuestmemfsError('EBADF', `pool ${this.label} is closed; open it again`, { syscall, path: this.path });
  }
}

// A pool: one large region of reserved memory (hugetlbfs file, hugetlb memfd, or the 4 KiB fallback) that files are carved from.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError, hasCode } from '../errors';
import { native, type NativeMapResult } from '../native';
import { formatSize, GiB } from '../units';
import { defaultHugePageSize, HUGETLBFS_MAGIC, hugetlbfsMounts, requireFreeHugePages, TMPFS_MAGIC } from './hugepages';
import { type Extent, type MapOptions, Mapping } from './mapping';
import { misplacedPages, type Placement, placementOf, requireNode } from './numa';
import { Pin } from './pins';
import { extentsOfPairs, type MappingRecipe, pairsLength, readMapResult } from './remap';

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
}

export interface ResizeFileOptions {
  /** Allocate the new pages on this NUMA node (a pool bound to it). */
  node?: number;
  /** Called as new pages are allocated, with bytes done and bytes to do. */
  onProgress?: (done: number, total: number) => void;
}

/** Most pages placement() asks the kernel about; larger pools are sampled at an even stride. */
const PLACEMENT_SAMPLES = 1 << 20;

const isHugetlbBackend = (backend: PoolBackend) => backend === 'hugetlbfs' || backend === 'memfd-hugetlb';

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

  /** Bytes in the pool file, as this object last set or found them (refreshSize() asks the file). */
  get size(): number {
    return this.#size;
  }

  /** Reads the pool file's size again: its owner, in another process, may have resized it since this object looked. */
  refreshSize(): number {
    this.#requireOpen('fstat');
    this.#size = native.fdInfo(this.fd).size;
    return this.#size;
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
    return `${this.backend} pool ${this.label}: ${formatSize(this.size)} of ${pages}`;
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
    if (isHugetlbBackend(backend)) requireFreeHugePages(pageSize, size / pageSize, { path: poolPath, node });

    const fd = poolPath
      ? native.fileOpen(poolPath, true, true, options.mode ?? 0o600)
      : native.memfdCreate(options.name ?? 'guestmemfs-pool', isHugetlbBackend(backend) ? pageSize : 0);
    const pool = new Pool(fd, backend, poolPath, size, pageSize, true, node);
    try {
      native.fileResize(fd, size);
      try {
        if (!options.sparse) pool.#allocate(0, size, node, options.onProgress);
      } catch (error) {
        throw explainAllocateFailure(error, backend, pageSize, size, poolPath, node);
      }
    } catch (error) {
      native.fdClose(fd);
      if (poolPath) fs.rmSync(poolPath, { force: true });
      throw error;
    }
    return pool;
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
      if (node === undefined) native.fileAllocate(this.fd, offset, length);
      else this.#allocateOnNode(offset, length, node);
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

  /** Adopts an inherited pool fd (a memfd passed across execve, as QEMU's cpr-exec does). */
  static fromFd(fd: number): Pool {
    return Pool.#adopt(fd, undefined, 'fromFd');
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
      options.sharePageTables === true && isHugetlbBackend(this.backend) && this.pageSize < PMD_SHARE_SPAN && total >= PMD_SHARE_SPAN;
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
      native.mapExtents(this.fd, flat, flags, this.pageSize, congruence, mapResult);
    } catch (error) {
      pin?.release();
      throw error;
    }
    // The mapping owns the pin from here on: it goes right after the munmap, whoever unmaps.
    if (pin) native.mappingAttachPin(mapResult[native.mapResult.id]!, pin.handOff());
    const recipe = { extents: [...flat], flags, alignment: this.pageSize, congruence };
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
      if (offset + length > this.#size) this.refreshSize();
      if (offset + length > this.#size) {
        throw new GuestmemfsError('EINVAL', `extent ${index} ends at ${offset + length}, beyond the ${formatSize(this.size)} pool`, {
          syscall: 'mmap',
          path: this.path,
        });
      }
      flat[index * 2] = offset;
      flat[index * 2 + 1] = length;
    });
    return flat;
  }

  /** Maps the whole pool as one range. */
  mapAll(options: MapOptions = {}): Mapping {
    return this.map([{ offset: 0, length: this.size }], options);
  }

  /** Keeps (or stops keeping) the pool fd open across execve. */
  setInheritable(inherit: boolean): void {
    this.#requireOpen('fcntl');
    native.fdSetInherit(this.fd, inherit);
  }

  /** Closes the fd. Existing mappings stay valid: they hold their own reference to the pages. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    native.fdClose(this.fd);
  }

  /** Closes and deletes a path-backed pool, returning its pages to the kernel once no mapping holds them. */
  destroy(): void {
    this.close();
    if (this.path) fs.rmSync(this.path, { force: true });
  }

  #requireOpen(syscall: string): void {
    if (!this.#open) throw new GuestmemfsError('EBADF', `pool ${this.label} is closed; open it again`, { syscall, path: this.path });
  }
}

/** Refuses a path whose directory is not on the right filesystem, naming mounts that would work. */
function checkDirectoryFilesystem(backend: PoolBackend, poolPath: string, pageSize: number): void {
  const dir = path.dirname(poolPath);
  let stats: fs.StatsFs;
  try {
    stats = fs.statfsSync(dir);
  } catch (error) {
    throw GuestmemfsError.from(error, { path: dir }).withRemedy('create the directory (or mount hugetlbfs there) first');
  }
  if (backend === 'hugetlbfs') {
    const candidates = hugetlbfsMounts()
      .filter((mount) => mount.pageSize === pageSize)
      .map((mount) => mount.mountpoint);
    const suggestion = candidates.length
      ? `put the pool under ${candidates.join(' or ')}`
      : `mount one (mount -t hugetlbfs -o pagesize=${formatSize(pageSize).replace(' ', '').replace('iB', '')} none DIR, ` +
        `or reserveHugePages({ mount: true }))`;
    if (stats.type !== HUGETLBFS_MAGIC) {
      throw new GuestmemfsError('EINVAL', `${dir} is not on a hugetlbfs mount: ${suggestion}`, { syscall: 'statfs', path: poolPath });
    }
    if (stats.bsize !== pageSize) {
      throw new GuestmemfsError(
        'EINVAL',
        `${dir} is a hugetlbfs mount of ${formatSize(stats.bsize)} pages, not ${formatSize(pageSize)}: ${suggestion}`,
        { syscall: 'statfs', path: poolPath },
      );
    }
  } else if (stats.type !== TMPFS_MAGIC) {
    throw new GuestmemfsError('EINVAL', `${dir} is not on tmpfs: put a 4k-fallback pool under /dev/shm`, {
      syscall: 'statfs',
      path: poolPath,
    });
  }
}

function explainAllocateFailure(
  error: unknown,
  backend: PoolBackend,
  pageSize: number,
  size: number,
  poolPath?: string,
  node?: number,
): GuestmemfsError {
  const converted = GuestmemfsError.from(error, { path: poolPath });
  // Faulting in a bound range that its node cannot fill fails as the SIGBUS it would otherwise be: EFAULT.
  const short = hasCode(converted, 'ENOSPC') || hasCode(converted, 'ENOMEM') || (node !== undefined && hasCode(converted, 'EFAULT'));
  if (!short) return converted;
  const where = node === undefined ? '' : ` on node ${node}`;
  return isHugetlbBackend(backend)
    ? converted.withRemedy(
        `could not reserve ${size / pageSize} ${formatSize(pageSize)} huge pages${where} (another process took them, ` +
          `or the hugetlbfs mount's size= limit is lower): raise nr_hugepages${node === undefined ? '' : ` of node ${node}`} or the ` +
          `mount limit, or use the 4k fallback`,
      )
    : converted.withRemedy(
        `could not reserve ${formatSize(size)} of shared memory${where}: free memory, enlarge /dev/shm, or use a smaller pool`,
      );
}

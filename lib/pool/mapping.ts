// A pool region mapped into this process: it owns the pages' mapping; ArrayBuffers over it are made on request and detached on unmap.
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import { GuestmemfsError } from '../errors';
import { native, type NativeMapResult } from '../native';
import { formatSize, KiB } from '../units';
import { extentsOfPairs, type MappingRecipe } from './remap';

export interface Extent {
  /** Byte offset in the pool, aligned to the pool's page size. */
  offset: number;
  /** Bytes, a non-zero multiple of the pool's page size. */
  length: number;
}

export interface MapOptions {
  /** Pre-fault every page now (MAP_POPULATE), as guestmemfs does. Default true. */
  populate?: boolean;
  /** Map read-write. Default true. */
  writable?: boolean;
  /** Keep the memory out of core dumps (MADV_DONTDUMP): guest RAM is secret. */
  dontDump?: boolean;
  /** Keep the memory out of fork()ed children (MADV_DONTFORK). */
  dontFork?: boolean;
  /** Ask for transparent huge pages (MADV_HUGEPAGE); on by default for the 4 KiB fallback. */
  hugepage?: boolean;
  /** Called once when the mapping goes, by unmap() or by garbage collection (the filesystem counts mappings with it). */
  onUnmap?: () => void;
  /**
   * Place the mapping so that Linux can share its page tables with other processes' mappings of the same range placed
   * alike (hugetlb PMD sharing: 2 MiB pages, for each whole GiB covered): the address is the first extent's file
   * offset modulo 1 GiB. A process mapping guest RAM that another still maps then finds every page already in place
   * (bench:map: about half the time of a plain MAP_POPULATE), and the page tables exist once. Measured ~4% slower
   * than the kernel's own placement when nobody else maps the range. Ignored for 1 GiB pages, the 4 KiB fallback and
   * mappings under 1 GiB. Default false.
   */
  sharePageTables?: boolean;
  /**
   * Pin the extents while they are mapped (an open-file-description read lock the kernel keeps, see pins.ts), so that
   * the filesystem never frees, zeroes or reuses them under this mapping. The filesystem's map() always pins.
   */
  pin?: boolean;
  /**
   * With pin: hold it on this fd of the pool, a description nothing else uses, which the mapping takes over (see
   * Pin.take). For a client of the mount service, which hands these out.
   */
  pinDescription?: number;
  /** mlock the range. The kernel ignores this for hugetlb mappings (huge pages are never swapped); it matters on the 4 KiB fallback. */
  lock?: boolean;
}

export interface ProgressOptions {
  onProgress?: (done: number, total: number) => void;
}

/** One physical frame per page of the mapping: its PFN, or null when the page is not present. */
export type PhysicalFrame = bigint | null;

/** Told of every Mapping the collector unmapped, once its memory is gone (or handed to the worker still using it). */
const collectedListeners = new Set<(id: number) => void>();

/**
 * @internal Calls listener with the id of each Mapping the garbage collector unmaps from now on, until the returned
 * function is called: the signal a test waits for instead of polling /proc/self/maps.
 */
export function onMappingCollected(listener: (id: number) => void): () => void {
  collectedListeners.add(listener);
  return () => collectedListeners.delete(listener);
}

// A Mapping that becomes unreachable unmaps its memory; buffers taken from it are detached then, never left dangling.
const unmapWhenCollected = new FinalizationRegistry<UnmapRecord>(({ id, onUnmap }) => {
  try {
    native.unmap(id, true);
  } catch {
    // Already unmapped by environment teardown.
  }
  onUnmap?.();
  for (const listener of collectedListeners) listener(id);
});

/** What the collector needs to unmap a lost Mapping; shared with it so a hook attached later is seen too. */
interface UnmapRecord {
  id: number;
  onUnmap: (() => void) | undefined;
}

const PAGEMAP_PRESENT = 1n << 63n;
const MAX_VIEW_BYTES = bufferConstants.MAX_LENGTH;
const PAGEMAP_PFN_MASK = (1n << 55n) - 1n;

export class Mapping {
  readonly id: number;
  readonly address: bigint;
  readonly length: number;
  /** mmap calls used to stitch the extents: one per run of adjacent extents. */
  readonly mmapCalls: number;
  readonly pageSize: number;
  readonly extents: readonly Extent[];
  readonly hugepageAdvice: boolean;
  /** Whether the mapping holds a pin over its extents (see pins.ts): released right after it is unmapped. */
  readonly pinned: boolean;
  #wholeBuffer: ArrayBuffer | undefined;
  #mapped = true;
  readonly #label: string | undefined;
  readonly #unmapRecord: UnmapRecord;

  /** How this mapping was made: what a new process image needs to make the same one (see remap.ts). */
  readonly recipe: Readonly<MappingRecipe>;

  /** @internal Created by Pool.map and Pool.adoptMapping. */
  constructor(result: NativeMapResult, recipe: MappingRecipe, label?: string, onUnmap?: () => void, pinned = false) {
    this.id = result.id;
    this.pinned = pinned;
    this.address = result.address;
    this.length = result.length;
    this.mmapCalls = result.mmapCalls;
    this.hugepageAdvice = result.hugepageAdvice;
    this.pageSize = recipe.alignment;
    this.recipe = recipe;
    this.extents = extentsOfPairs(recipe.extents);
    this.#label = label;
    this.#unmapRecord = { id: this.id, onUnmap };
    unmapWhenCollected.register(this, this.#unmapRecord, this);
  }

  /**
   * @internal Gives a mapping made without an owner (a successor's premapping of guest RAM) to the filesystem that
   * adopts it, so its unmap is counted there like any other.
   */
  attachUnmapHook(onUnmap: () => void): void {
    this.#requireMapped('mmap');
    if (this.#unmapRecord.onUnmap)
      throw new GuestmemfsError('EBUSY', 'this mapping already belongs to a filesystem mount', { syscall: 'mmap', path: this.#label });
    this.#unmapRecord.onUnmap = onUnmap;
  }

  get mapped(): boolean {
    return this.#mapped;
  }

  /**
   * The whole mapping as an external ArrayBuffer, made on first use. After unmap() it is detached: views over it
   * read as empty and DataView/constructors throw, never touching freed memory. Keep the Mapping itself
   * reachable while using it: a collected Mapping unmaps its memory.
   */
  get buffer(): ArrayBuffer {
    this.#requireMapped('buffer');
    this.#requireViewable(this.length);
    this.#wholeBuffer ??= native.mappingBuffer(this.id, 0, this.length);
    return this.#wholeBuffer;
  }

  /**
   * A byte view of [offset, offset+length). Without a whole buffer yet, it gets its own buffer over just that
   * window: V8 runs a full GC for every large external buffer, so small views of big mappings stay cheap.
   */
  bytes(offset = 0, length = this.length - offset): Uint8Array {
    this.#requireMapped('bytes');
    this.#requireViewable(length);
    if (this.#wholeBuffer) return new Uint8Array(this.#wholeBuffer, offset, length);
    return new Uint8Array(native.mappingBuffer(this.id, offset, length));
  }

  unmap(): void {
    this.#requireMapped('munmap');
    native.unmap(this.id);
    this.#mapped = false;
    this.#wholeBuffer = undefined;
    unmapWhenCollected.unregister(this);
    this.#unmapRecord.onUnmap?.();
  }

  advise(advice: keyof typeof native.advice, offset = 0, length = this.length - offset): void {
    this.#requireMapped('madvise');
    native.madvise(this.id, offset, length, native.advice[advice]);
  }

  lock(lock = true): void {
    this.#requireMapped(lock ? 'mlock' : 'munlock');
    native.mlock(this.id, lock);
  }

  /** memset to zero on the JS thread; the pages stay allocated and reserved. */
  zero(offset = 0, length = this.length - offset): void {
    this.#requireMapped('memset');
    native.zero(this.id, offset, length);
  }

  /** Zeroes on a libuv worker thread, reporting progress; unmap() refuses with EBUSY until it settles. */
  async zeroAsync(offset = 0, length = this.length - offset, options: ProgressOptions = {}): Promise<void> {
    this.#requireMapped('memset');
    await native.zeroAsync(this.id, offset, length, options.onProgress);
    options.onProgress?.(length, length);
  }

  /** Pre-faults the range on a worker thread (MADV_POPULATE_READ/WRITE), reporting progress. */
  async populateAsync(options: ProgressOptions & { write?: boolean; offset?: number; length?: number } = {}): Promise<void> {
    this.#requireMapped('madvise');
    const offset = options.offset ?? 0;
    const length = options.length ?? this.length - offset;
    await native.populateAsync(this.id, offset, length, options.onProgress, options.write ?? false);
    options.onProgress?.(length, length);
  }

  /**
   * Physical frame numbers behind each page (from /proc/self/pagemap): the proof that the same pages survive
   * a restart. Needs root; without it the kernel hides PFNs and this throws EPERM.
   */
  physicalFrames(offset = 0, length = this.length - offset): PhysicalFrame[] {
    this.#requireMapped('pread');
    const entries = native.pagemapEntries(this.id, offset, length, this.pageSize);
    const frames: PhysicalFrame[] = [];
    let presentWithoutFrame = 0;
    for (const entry of entries) {
      if ((entry & PAGEMAP_PRESENT) === 0n) {
        frames.push(null);
        continue;
      }
      const pfn = entry & PAGEMAP_PFN_MASK;
      if (pfn === 0n) presentWithoutFrame++;
      frames.push(pfn);
    }
    if (presentWithoutFrame > 0) {
      throw new GuestmemfsError(
        'EPERM',
        'the kernel hides physical frame numbers from this process: run as root (CAP_SYS_ADMIN) to read /proc/self/pagemap',
        {
          syscall: 'pread',
          path: '/proc/self/pagemap',
        },
      );
    }
    return frames;
  }

  /** The KernelPageSize of every VMA that makes up this mapping, from /proc/self/smaps (e.g. [2097152]). */
  kernelPageSizes(): number[] {
    this.#requireMapped('smaps');
    const start = this.address;
    const end = this.address + BigInt(this.length);
    const sizes = new Set<number>();
    let inside = false;
    for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
      const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
      if (range) {
        const vmaStart = BigInt(`0x${range[1]}`);
        const vmaEnd = BigInt(`0x${range[2]}`);
        inside = vmaStart < end && vmaEnd > start;
        continue;
      }
      const pageSize = /^KernelPageSize:\s+(\d+) kB$/.exec(line);
      if (inside && pageSize) sizes.add(Number(pageSize[1]) * KiB);
    }
    return [...sizes].sort((a, b) => a - b);
  }

  /** JavaScript cannot view more than buffer.constants.MAX_LENGTH bytes (4 GiB) at once: say so, and what to do. */
  #requireViewable(length: number): void {
    if (length > MAX_VIEW_BYTES) {
      throw new GuestmemfsError(
        'EINVAL',
        `a ${formatSize(length)} view of mapping ${this.id} is larger than JavaScript allows (${formatSize(MAX_VIEW_BYTES)}): ` +
          `view it in windows with bytes(offset, length)`,
        { syscall: 'buffer', path: this.#label },
      );
    }
  }

  #requireMapped(syscall: string): void {
    if (!this.#mapped) {
      throw new GuestmemfsError('EINVAL', `mapping ${this.id} was unmapped; map the region again before using it`, {
        syscall,
        path: this.#label,
      });
    }
  }
}

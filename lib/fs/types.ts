// The filesystem's public option and result types: what mkfs, mount and the Filesystem methods take and return.
import type { HandoverDescription, HandoverVersion } from '../handover/blob';
import type { MapOptions, Mapping } from '../pool/mapping';
import type { FileTypeName } from './inodes';
import type { Geometry } from './layout';
import type { Credentials } from './permissions';

export interface MkfsOptions {
  /** Inodes in the flat table (default: two per block, 1024..65536). */
  inodes?: number;
  /** Allocation block: the pool's page size on huge pages, 2 MiB on the 4 KiB fallback, unless chosen here. */
  blockSize?: number;
  /** Reformat a pool that already holds a guestmemfs filesystem. */
  force?: boolean;
  /**
   * A reformat keeps the old bad-block list (its blocks, in the new block size, stay out of service); this starts with
   * an empty one instead, for memory that is known good again.
   */
  forgetBadBlocks?: boolean;
  /**
   * Bytes the pool may later grow to (Filesystem.resize): the metadata is sized for that many blocks now. Without it
   * the pool keeps the size it has (it may still shrink and grow back).
   */
  maxSize?: number;
}

export interface FormatInfo {
  uuid: string;
  geometry: Geometry;
  /** The NUMA node the pool is bound to, when it was created bound to one (Pool.create's `node`). */
  node?: number;
}

export interface MountOptions extends Partial<Credentials> {
  /**
   * What to do with a pool whose owner died while it was mounted: recover it (the default: finish or discard an
   * interrupted rename, free orphans and leaked blocks, rebuild free lists, entry lists and counters), or refuse
   * with EUCLEAN (false).
   */
  repair?: boolean;
  /**
   * A serialised pool is restored from its handover blob. With this set, the blob is ignored and the pool is
   * recovered as if its owner had died (for a blob that fails its checks).
   */
  discardHandover?: boolean;
  /**
   * Mount only to take over a handover: a pool that is not serialised is refused with ENOENT and left as it is (its
   * owner let go without handing over, or died). For a successor, which must not recover a pool behind its owner.
   */
  requireHandover?: boolean;
  /**
   * A read-only view, for inspecting a pool that another process has mounted or that is serialised for handover:
   * no lock, nothing written, every change refused with EROFS. It works on a snapshot of the metadata and trusts the
   * snapshot only if it is consistent (a live owner caught mid-operation is retried, then EAGAIN).
   */
  readOnly?: boolean;
  /**
   * Adopt a handover but keep the filesystem serialised: metadata stays frozen, and the pool stays described by its
   * blob, until abort() (the CLI's `abort`, for a handover whose owner exited without a successor).
   */
  keepSerialised?: boolean;
}

/** What serialise() produced. */
export interface SerialiseResult {
  generation: bigint;
  /** The blob itself (an FDT), as written into the pool's handover area. */
  blob: Uint8Array;
  /** Live inodes and extent pages it describes. */
  files: number;
  mappingBlocks: number;
  /** The blob's handover version. */
  handoverVersion: HandoverVersion;
  ms: number;
  /** Set when the blob was also exported to a file. */
  out?: string;
}

/** What mount did when it found a handover. */
export interface Restore {
  generation: bigint;
  files: number;
  ms: number;
  description: HandoverDescription;
}

export interface KexecOptions {
  /** Environment for the new program (default: this process's). The pool location is added to it. */
  env?: NodeJS.ProcessEnv;
  /** Further fds the new program inherits (the pool's own fd is kept without asking); they stay close-on-exec here. */
  keepFds?: readonly number[];
  /**
   * Tear this image's address space down once the new program says so, not inside execve (8 to 25 ms for a Node
   * process): a child keeps it meanwhile, named in GUESTMEMFS_EXEC_HOLDER. The new program must release and reap
   * that child (takeExecHolder); openHandedOverPool() does. Default false, for programs that would not.
   */
  deferTeardown?: boolean;
}

/** What mount did to a pool that was not unmounted cleanly. */
export interface Recovery {
  previousOwnerPid: number;
  fixes: string[];
}

export interface CreateOptions {
  /** guest: guest RAM, mmap only, mapped MADV_DONTDUMP|MADV_DONTFORK; state: VMM/device state, read/write; plain. */
  type?: FileTypeName;
  /** Permission bits (default 0600 for guest and state files, 0644 for plain). */
  mode?: number;
  /**
   * Keep the file in one extent (one range of the pool), for a VMM that maps it by offset, as QEMU's
   * memory-backend-file does: truncate then grows it in place or fails with ENOSPC naming the largest free run.
   */
  contiguous?: boolean;
}

export interface MkdirOptions {
  mode?: number;
  /** Create missing parents and accept an existing directory, like mkdir -p. */
  recursive?: boolean;
}

export interface Stat {
  ino: number;
  generation: number;
  type: 'file' | 'directory';
  /** For files: plain, guest or state. */
  fileType: FileTypeName | undefined;
  size: number;
  /** Allocated blocks of blockSize bytes. */
  blocks: number;
  blockSize: number;
  /** Extents (contiguous runs of blocks) holding the file. */
  extents: number;
  /** Created contiguous: always one extent. */
  contiguous: boolean;
  /** Quarantined blocks the file holds (see Filesystem.quarantineBlock): its memory there has failed. */
  quarantinedBlocks: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  birthtimeNs: bigint;
}

export interface StatFs {
  blockSize: number;
  pageSize: number;
  totalBlocks: number;
  /** Blocks files can use (total minus the metadata region). */
  dataBlocks: number;
  freeBlocks: number;
  /** Free blocks still holding old bytes; they are zeroed before reaching a file (or by scrub()). */
  dirtyFreeBlocks: number;
  totalInodes: number;
  freeInodes: number;
  /** Maximal runs of free blocks: 1 when free space is in one piece (0 when none is free). */
  freeRuns: number;
  /** Blocks in the longest free run: the largest contiguous file that still fits. */
  largestFreeRun: number;
  /** Blocks quarantined as bad: out of service, whether a file still holds them or not. */
  quarantinedBlocks: number;
  /** The most blocks the pool may grow to (resize()); totalBlocks for a pool formatted without room to grow. */
  maxBlocks: number;
  /** A hybrid pool's 1 GiB pages, all and wholly free (both 0 for a pool of one page size). */
  largePages: { total: number; free: number };
  /** GiBs of files that got 2 MiB blocks since mount because no 1 GiB page was free. */
  largeFallbacks: number;
}

export interface DirEntry {
  name: string;
  ino: number;
  type: 'file' | 'directory';
}

/** Where a file's memory is, for a process that maps it itself (Filesystem.mappable). */
export interface MappableFile {
  ino: number;
  generation: number;
  size: number;
  /** A guest file: map it MADV_DONTDUMP|MADV_DONTFORK. */
  guest: boolean;
  /** Pool byte ranges, in file order. */
  extents: Array<{ offset: number; length: number }>;
}

export interface FileMapOptions extends Omit<MapOptions, 'onUnmap'> {
  /**
   * A mapping premapFile() made of this file before this mount existed (a successor preparing ahead of a handover).
   * It is adopted and returned when it still maps exactly the file's blocks; otherwise a fresh mapping is returned and
   * the stale one is left to the caller to unmap.
   */
  premapped?: Mapping;
}

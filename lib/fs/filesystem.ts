// The guestmemfs filesystem over a pool: mkfs, mount, namespace operations, truncate, map, read/write, unmount.
//
// Crash ordering. The pool outlives the process, and a process killed at any instant leaves every store it made
// visible and nothing after it. Each operation writes the *primary* state (an inode's type, parent, name, extents,
// size, and the dirty bitmap) so that one final store commits it, and keeps the *derived* state (allocated bitmap,
// free lists, directory sibling lists, counters) in step afterwards or before, in whichever order turns a kill into
// a leak rather than a double use. The checker rebuilds derived state from primary state; the comments marked
// "commit point" below are where an operation becomes true for it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import { type Extent, Mapping, type MapOptions, type ProgressOptions } from '../pool/mapping';
import type { Pool } from '../pool/pool';
import { elapsedMs, formatSize, MiB } from '../units';
import { BlockAllocator } from './allocator';
import { type AuditReport, auditMetadata } from './audit';
import { findUnrepairable, repairDerived } from './repair';
import { BufferMetadata, MappedMetadata, type MetadataSource } from './metadata';
import { buildHandoverBlob, type HandoverDescription, type LiveMetadata, POOL_FD_ENV, POOL_PATH_ENV, verifyHandoverBlob } from '../handover/blob';
import { type BlockRun, cutAfter, ExtentStore } from './extents';
import { FILE_TYPE_NAMES, type FileTypeName, FLAG_ORPHAN, FileType, InodeTable, InodeType } from './inodes';
import {
  computeGeometry,
  defaultInodeCount,
  FIXED_HEADER_BYTES,
  FORMAT_MAJOR,
  FORMAT_MINOR,
  type Geometry,
  hasMagic,
  crc32,
  HINTS,
  HINTS_OFFSET,
  INTENT,
  INTENT_ACTIVE,
  INTENT_OFFSET,
  INTENT_OP_RENAME,
  intentChecksum,
  newUuid,
  PoolState,
  readSuperblock,
  ROOT_INO,
  type Superblock,
  writeSuperblockSlot,
} from './layout';
import { encodeNewName, splitPath } from './paths';
import { type Credentials, describeWant, permits, R_OK, W_OK, X_OK } from './permissions';

export interface MkfsOptions {
  /** Inodes in the flat table (default: two per block, 1024..65536). */
  inodes?: number;
  /** Allocation block: the pool's page size on huge pages, 2 MiB on the 4 KiB fallback, unless chosen here. */
  blockSize?: number;
  /** Reformat a pool that already holds a guestmemfs filesystem. */
  force?: boolean;
}

export interface FormatInfo {
  uuid: string;
  geometry: Geometry;
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
}

/** What serialise() produced. */
export interface SerialiseResult {
  generation: bigint;
  /** The blob itself (an FDT), as written into the pool's handover area. */
  blob: Uint8Array;
  /** Live inodes and extent pages it describes. */
  files: number;
  mappingBlocks: number;
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
}

export interface DirEntry {
  name: string;
  ino: number;
  type: 'file' | 'directory';
}

export interface FileMapOptions extends Omit<MapOptions, 'onUnmap'> {
  /**
   * A mapping premapFile() made of this file before this mount existed (a successor preparing ahead of a handover).
   * It is adopted and returned when it still maps exactly the file's blocks; otherwise a fresh mapping is returned and
   * the stale one is left to the caller to unmap.
   */
  premapped?: Mapping;
}

/** Mappings premapFile() made and no mount has adopted yet, with the pool they map: map() adopts only these. */
const unadoptedPremappings = new WeakMap<Mapping, string>();

/**
 * Maps a file of a pool another process owns, writable and pre-faulted, as a successor does before a handover so that
 * mapping guest RAM stays out of the blackout. The file's blocks come from a read-only view; map(path, { premapped })
 * in the mount that follows adopts the mapping if the blocks are still the same.
 */
export function premapFile(pool: Pool, path: string, options: MountOptions = {}, mapOptions: Pick<MapOptions, 'sharePageTables'> = {}): Mapping {
  const view = mount(pool, { ...options, readOnly: true });
  try {
    const info = view.stat(path);
    if (info.type === 'directory') throw new GuestmemfsError('EISDIR', `is a directory, mmap '${path}'`, { syscall: 'mmap', path });
    const extents = view.extents(path);
    if (extents.length === 0) throw new GuestmemfsError('EINVAL', `file is empty, mmap '${path}': truncate it to a size first`, { syscall: 'mmap', path });
    const guest = info.fileType === 'guest';
    const mapping = pool.map(extents, { ...mapOptions, writable: true, populate: true, dontDump: guest, dontFork: guest });
    unadoptedPremappings.set(mapping, poolKey(pool));
    return mapping;
  } finally {
    view.unmount();
  }
}

/** Pools mounted by this process (the flock cannot tell two mounts through the same open file description apart). */
const mountedHere = new Set<string>();

/** The file execve should run for argv[0]: a path as given, or the first match on PATH. */
function resolveExecutable(program: string): string {
  if (program.includes('/')) return program;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir || '.', program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  throw new GuestmemfsError('ENOENT', `no executable "${program}" on PATH`, { syscall: 'execve', path: program });
}

/** True when the last non-empty component of path is '.' (which splitPath drops). */
function endsWithDot(path: string): boolean {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '.' || trimmed.endsWith('/.');
}

function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

let cachedStartTime: { pid: number; value: bigint } | undefined;

/** This process's start time in clock ticks (with the pid, it names an owner even after pid reuse). */
function processStartTime(): bigint {
  if (cachedStartTime?.pid !== process.pid) {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    cachedStartTime = { pid: process.pid, value: BigInt(fields[19]!) };
  }
  return cachedStartTime.value;
}

/** True when this process has the pool mounted (a flock cannot see a second mount through the same fd). */
export function isMountedHere(pool: Pool): boolean {
  return mountedHere.has(poolKey(pool));
}

function poolKey(pool: Pool): string {
  const info = native.fdInfo(pool.fd);
  return `${info.dev}:${info.ino}`;
}

function currentCredentials(options: MountOptions): Credentials {
  return {
    uid: options.uid ?? process.getuid?.() ?? 0,
    gid: options.gid ?? process.getgid?.() ?? 0,
    groups: options.groups ?? process.getgroups?.() ?? [],
  };
}

function defaultBlockSize(pool: Pool): number {
  return pool.isFallback ? 2 * MiB : pool.pageSize;
}

function requireHeaderRoom(pool: Pool, syscall: string): void {
  if (pool.size < FIXED_HEADER_BYTES) {
    throw new GuestmemfsError('EINVAL', `pool of ${pool.size} bytes is too small to hold a guestmemfs filesystem`, { syscall, path: pool.label });
  }
}

/** Reads and checks the pool's superblock through a mapping of just its header. */
export function readPoolSuperblock(pool: Pool): Superblock {
  requireHeaderRoom(pool, 'mount');
  const header = pool.map([{ offset: 0, length: Math.min(pool.size, Math.max(pool.pageSize, FIXED_HEADER_BYTES)) }], { populate: false, writable: false });
  try {
    return readSuperblock(header.bytes(0, FIXED_HEADER_BYTES), pool);
  } finally {
    header.unmap();
  }
}

function lockOrExplain(pool: Pool, syscall: string): void {
  if (native.fdLock(pool.fd, true, false)) return;
  let holder = 'another process';
  try {
    const sb = readPoolSuperblock(pool);
    if (sb.ownerPid) holder = `pid ${sb.ownerPid}`;
  } catch {
    // An unreadable header still leaves the lock's holder unknown, which the message says.
  }
  throw new GuestmemfsError('EBUSY', `pool is mounted by ${holder}: unmount it there first (only one mount at a time)`, { syscall, path: pool.label });
}

/**
 * Formats a pool: superblock (both copies), empty inode table with the root directory, bitmaps and extent pages.
 * A pool that already holds guestmemfs is refused unless `force` is set.
 */
export function mkfs(pool: Pool, options: MkfsOptions = {}): FormatInfo {
  const blockSize = options.blockSize ?? defaultBlockSize(pool);
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0 || (blockSize & (blockSize - 1)) !== 0) {
    throw new GuestmemfsError('EINVAL', `block size ${blockSize} must be a power of two`, { syscall: 'mkfs', path: pool.label });
  }
  requireHeaderRoom(pool, 'mkfs');
  const blockCount = pool.size / blockSize;
  const geometry = computeGeometry(pool.size, pool.pageSize, blockSize, options.inodes ?? defaultInodeCount(Math.floor(blockCount)));
  const key = poolKey(pool);
  if (mountedHere.has(key)) throw new GuestmemfsError('EBUSY', 'pool is mounted by this process: unmount it before mkfs', { syscall: 'mkfs', path: pool.label });
  lockOrExplain(pool, 'mkfs');
  const zeroed = pool.freshlyAllocated;
  const mapping = pool.map([{ offset: 0, length: geometry.metadataBytes }], { populate: true });
  try {
    const metadata = mapping.buffer;
    const bytes = new Uint8Array(metadata);
    if (hasMagic(bytes) && !options.force) {
      throw new GuestmemfsError('EEXIST', 'pool already holds a guestmemfs filesystem: pass force to reformat it (every file is lost)', {
        syscall: 'mkfs',
        path: pool.label,
      });
    }
    bytes.fill(0);
    const source = new BufferMetadata(metadata);
    const hints = new Uint32Array(metadata, HINTS_OFFSET, 1024);
    const inodes = new InodeTable(source, geometry);
    const allocator = new BlockAllocator(source, geometry, hints);
    const extents = new ExtentStore(source, geometry, hints, inodes);
    allocator.format();
    // A pool we did not just fallocate may hold old bytes in every block: mark them all dirty so none reaches a file unzeroed.
    if (!zeroed) allocator.markDirty([{ start: geometry.metadataBlocks, length: allocator.dataBlocks }], true);
    extents.format();
    for (let ino = 2; ino < geometry.inodeCount; ino++) inodes.setNextFree(ino, ino + 1 < geometry.inodeCount ? ino + 1 : 0);
    hints[HINTS.freeInodeHead / 4] = geometry.inodeCount > 2 ? 2 : 0;
    hints[HINTS.freeInodes / 4] = geometry.inodeCount - 2;
    const now = nowNs();
    const cred = currentCredentials({});
    inodes.setMode(ROOT_INO, 0o755);
    inodes.setUid(ROOT_INO, cred.uid);
    inodes.setGid(ROOT_INO, cred.gid);
    inodes.setNlink(ROOT_INO, 2);
    inodes.setParent(ROOT_INO, ROOT_INO);
    inodes.setGeneration(ROOT_INO, 1);
    for (const field of ['atime', 'mtime', 'ctime', 'btime'] as const) inodes.setTime(ROOT_INO, field, now);
    inodes.setType(ROOT_INO, InodeType.Directory);
    const uuid = newUuid();
    const sb = {
      major: FORMAT_MAJOR,
      minor: FORMAT_MINOR,
      compat: 0,
      incompat: 0,
      roCompat: 0,
      uuid,
      createdNs: now,
      geometry,
      sequence: 1n,
      generation: 0n,
      state: PoolState.Clean,
      ownerPid: 0,
      ownerStartTime: 0n,
      mountCount: 0n,
      handoverBytes: 0,
      handoverCrc: 0,
      handoverGeneration: 0n,
    };
    writeSuperblockSlot(bytes, 1, sb);
    writeSuperblockSlot(bytes, 0, { ...sb, sequence: 2n });
    return { uuid, geometry };
  } finally {
    mapping.unmap();
    native.fdUnlock(pool.fd);
  }
}

function sameExtents(a: readonly Extent[], b: readonly Extent[]): boolean {
  return a.length === b.length && a.every((extent, index) => extent.offset === b[index]!.offset && extent.length === b[index]!.length);
}

/** Mounts a formatted pool for this process, exclusively. */
export function mount(pool: Pool, options: MountOptions = {}): Filesystem {
  if (os.endianness() !== 'LE') throw new GuestmemfsError('EINVAL', 'guestmemfs pools are little-endian; this host is big-endian', { syscall: 'mount' });
  requireHeaderRoom(pool, 'mount');
  const key = poolKey(pool);
  if (options.readOnly) return mountReadOnly(pool, options, key);
  if (mountedHere.has(key)) {
    throw new GuestmemfsError('EBUSY', `pool is mounted by pid ${process.pid} (this process): unmount that mount first (only one mount at a time)`, {
      syscall: 'mount',
      path: pool.label,
    });
  }
  lockOrExplain(pool, 'mount');
  let meta: Mapping | undefined;
  try {
    const sb = readPoolSuperblock(pool);
    if (options.requireHandover && (sb.state !== PoolState.Serialised || options.discardHandover)) {
      throw new GuestmemfsError('ENOENT', `pool holds no handover (it is ${PoolState[sb.state]!.toLowerCase()}): its owner let go without serialising it; mount it without requireHandover to recover it`, {
        syscall: 'mount',
        path: pool.label,
      });
    }
    // Only the metadata region is mapped now; data blocks get a mapping the first time data is touched.
    meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false, dontDump: true, dontFork: true });
    const filesystem = new Filesystem(pool, meta, sb, currentCredentials(options), key, options);
    mountedHere.add(key);
    return filesystem;
  } catch (error) {
    meta?.unmap();
    native.fdUnlock(pool.fd);
    throw error;
  }
}

/** Snapshot attempts before a read-only view gives up on a pool whose owner keeps changing it. */
const SNAPSHOT_ATTEMPTS = 5;

function mountReadOnly(pool: Pool, options: MountOptions, key: string): Filesystem {
  const fields = { syscall: 'mount', path: pool.label };
  let lastProblems: string[] = [];
  for (let attempt = 0; attempt < SNAPSHOT_ATTEMPTS; attempt++) {
    const sb = readPoolSuperblock(pool);
    const meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false, writable: false });
    let snapshot: ArrayBuffer;
    try {
      snapshot = meta.bytes().slice().buffer;
    } finally {
      meta.unmap();
    }
    const view = new Filesystem(pool, undefined, sb, currentCredentials(options), key, { ...options, readOnly: true }, new BufferMetadata(snapshot));
    lastProblems = view.audit().problems;
    if (lastProblems.length === 0) return view;
    // Nobody holds the mount lock: the damage is not a write in progress, and waiting will not mend it.
    const owned = !native.fdLock(pool.fd, false, false);
    if (!owned) {
      native.fdUnlock(pool.fd);
      throw new GuestmemfsError('EUCLEAN', `pool metadata is not consistent (${lastProblems.slice(0, 3).join('; ')}): run the checker with repair`, fields);
    }
    sleepSync(2);
  }
  throw new GuestmemfsError(
    'EAGAIN',
    `the pool kept changing under its owner while it was read (${lastProblems.slice(0, 2).join('; ')}): try again`,
    fields,
  );
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export class Filesystem {
  readonly pool: Pool;
  readonly geometry: Geometry;
  readonly uuid: string;
  /** The credentials permission checks use (from mount options, else this process's). */
  readonly credentials: Credentials;
  /** The metadata region, mapped for the life of the mount. */
  readonly #meta: Mapping | undefined;
  readonly #readOnly: boolean;
  /** The whole pool, mapped on first data access (zeroing, read, write): a restore never needs it. */
  #data: Mapping | undefined;
  /** Superblock copies, intent record and hints: the first 16 KiB of the pool. */
  readonly #header: Uint8Array;
  readonly #source: MetadataSource;
  #handoverWindow: Uint8Array | undefined;
  readonly #hints: Uint32Array;
  readonly #intent: Uint32Array;
  readonly #inodes: InodeTable;
  readonly #extents: ExtentStore;
  readonly #allocator: BlockAllocator;
  readonly #key: string;
  #superblock: Superblock;
  /** Set when this mount recovered a pool whose previous owner died while it was mounted. */
  readonly recovery: Recovery | undefined;
  /** Set when this mount adopted a handover (the previous owner serialised and handed the pool over). */
  readonly restored: Restore | undefined;
  /** Unlinked inodes still mapped here: live, but in no directory. */
  readonly #orphans = new Set<number>();
  /** The generation this filesystem was serialised at, while frozen for handover. */
  #frozenAt: bigint | undefined;
  /** Volatile name index, rebuilt at mount: directory ino -> name -> ino. */
  readonly #index = new Map<number, Map<string, number>>();
  /** Live mappings per inode in this process. */
  readonly #mapped = new Map<number, number>();
  /** Inodes with asynchronous work in flight. */
  readonly #busy = new Set<number>();
  #mounted = true;

  /** @internal Use mount(). */
  constructor(pool: Pool, meta: Mapping | undefined, sb: Superblock, credentials: Credentials, key: string, options: MountOptions, source?: MetadataSource) {
    const started = process.hrtime.bigint();
    this.pool = pool;
    this.geometry = sb.geometry;
    this.uuid = sb.uuid;
    this.credentials = credentials;
    this.#meta = meta;
    this.#readOnly = options.readOnly === true;
    this.#key = key;
    this.#superblock = sb;
    // No pre-faulting and no view of the whole region: a mount (above all a restore) touches a few metadata pages.
    this.#source = source ?? new MappedMetadata(meta!.id);
    this.#header = this.#source.window(0, FIXED_HEADER_BYTES);
    this.#hints = new Uint32Array(this.#header.buffer, this.#header.byteOffset + HINTS_OFFSET, 1024);
    this.#intent = new Uint32Array(this.#header.buffer, this.#header.byteOffset + INTENT_OFFSET, 1024);
    this.#inodes = new InodeTable(this.#source, sb.geometry);
    this.#allocator = new BlockAllocator(this.#source, sb.geometry, this.#hints);
    this.#extents = new ExtentStore(this.#source, sb.geometry, this.#hints, this.#inodes);
    const fields = { syscall: 'mount', path: pool.label };
    if (this.#readOnly) {
      // A view: adopt nothing, repair nothing, write nothing; the caller audits the snapshot before trusting it.
      this.#buildIndex();
      return;
    }
    if (sb.state === PoolState.Serialised && !options.discardHandover) {
      // Handed over: adopt the metadata in place after checking the blob describes it; only the volatile index is built.
      const area = this.#handoverArea();
      if (sb.handoverBytes === 0 || sb.handoverBytes > area.length) {
        throw new GuestmemfsError('EUCLEAN', `handover refused (length): the superblock records a ${sb.handoverBytes}-byte blob in a ${area.length}-byte area; the pool was left untouched`, fields);
      }
      if (sb.handoverGeneration !== sb.generation) {
        throw new GuestmemfsError('EUCLEAN', `handover refused (generation): the blob was made at generation ${sb.handoverGeneration}, the superblock is at ${sb.generation}; the pool was left untouched`, fields);
      }
      const description = verifyHandoverBlob(area.subarray(0, sb.handoverBytes), this.#restoreExpectations(sb.generation, sb.handoverCrc));
      // Mounted first: freeing orphans below changes metadata the blob describes.
      this.#writeSuperblock({ state: PoolState.Mounted, ownerPid: process.pid, ownerStartTime: processStartTime(), mountCount: sb.mountCount + 1n, generation: sb.generation + 1n, handoverBytes: 0, handoverCrc: 0 });
      this.#buildIndex(description.liveInodes);
      this.restored = { generation: sb.generation, files: description.liveInodes.length, ms: elapsedMs(started), description };
      return;
    }
    let cause: string | undefined;
    if (sb.state === PoolState.Serialised) cause = 'its handover was discarded';
    else if (sb.state !== PoolState.Clean || this.#intent[INTENT.magic / 4] === INTENT_ACTIVE) cause = `its owner (pid ${sb.ownerPid}) died while it was mounted`;
    else {
      // A clean pool is still checked for damage a crash cannot cause (a flipped bit, a stray write): a damaged pool is
      // never mounted as it is. Derived damage is repaired like a crash; primary damage is refused.
      const problems = findUnrepairable({ geometry: sb.geometry, inodes: this.#inodes, extents: this.#extents });
      if (problems.length > 0) {
        throw new GuestmemfsError('EUCLEAN', `pool metadata is damaged: ${problems.slice(0, 5).join('; ')}; run the checker (check) for the full report`, fields);
      }
      const derived = auditMetadata({ geometry: sb.geometry, inodes: this.#inodes, extents: this.#extents, allocator: this.#allocator, hints: this.#hints }).problems;
      if (derived.length > 0) cause = `its derived metadata is damaged (${derived.slice(0, 3).join('; ')})`;
    }
    if (cause !== undefined) {
      if (options.repair === false) {
        throw new GuestmemfsError('EUCLEAN', `pool was not unmounted cleanly: ${cause}; mount it with { repair: true } (the default) to recover it`, fields);
      }
      // Still marked as the dead owner's while recovering: a kill now is recovered from by the next mount.
      const result = repairDerived({
        geometry: sb.geometry,
        inodes: this.#inodes,
        extents: this.#extents,
        allocator: this.#allocator,
        hints: this.#hints,
        intent: this.#intent,
        intentBytes: this.#header.subarray(INTENT_OFFSET, INTENT_OFFSET + 4096),
      });
      if (result.unrepairable.length > 0) {
        throw new GuestmemfsError('EUCLEAN', `pool was not unmounted cleanly (${cause}) and cannot be recovered: ${result.unrepairable.join('; ')}; it was left as it was`, fields);
      }
      this.recovery = { previousOwnerPid: sb.ownerPid, fixes: result.fixes };
      const remaining = auditMetadata({ geometry: sb.geometry, inodes: this.#inodes, extents: this.#extents, allocator: this.#allocator, hints: this.#hints }).problems;
      if (remaining.length > 0) {
        throw new GuestmemfsError('EUCLEAN', `pool could not be brought back to a consistent state (${remaining.slice(0, 5).join('; ')}): run the checker`, fields);
      }
    }
    // The superblock says "mounted" before anything else changes, so a kill from here on is detected as unclean.
    this.#writeSuperblock({ state: PoolState.Mounted, ownerPid: process.pid, ownerStartTime: processStartTime(), mountCount: sb.mountCount + 1n, generation: sb.generation + 1n, handoverBytes: 0, handoverCrc: 0 });
    this.#buildIndex();
  }

  /** True between serialise() and abort(): metadata cannot change, data and mappings keep working. */
  get serialised(): boolean {
    return this.#frozenAt !== undefined;
  }

  get mounted(): boolean {
    return this.#mounted;
  }

  /** True for a read-only view (mount with { readOnly: true }). */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** Superblock fields as last written (state, owner, generation...). */
  get superblock(): Readonly<Superblock> {
    return this.#superblock;
  }

  // ---------------------------------------------------------------- namespace

  /** Creates an empty file of the given type. */
  create(path: string, options: CreateOptions = {}): Stat {
    this.#requireWritable('open');
    const type = options.type ?? 'plain';
    const fileType = FILE_TYPE_NAMES.indexOf(type);
    if (fileType < 0) throw new GuestmemfsError('EINVAL', `file type "${type}" is not one of ${FILE_TYPE_NAMES.join(', ')}`, { syscall: 'open', path });
    const mode = this.#checkMode(options.mode ?? (type === 'plain' ? 0o644 : 0o600), 'open', path);
    const ino = this.#createInode(path, 'open', InodeType.File, fileType, mode);
    return this.#stat(ino);
  }

  mkdir(path: string, options: MkdirOptions = {}): Stat {
    this.#requireWritable('mkdir');
    const mode = this.#checkMode(options.mode ?? 0o755, 'mkdir', path);
    if (options.recursive) {
      const parts = splitPath(path, 'mkdir');
      let prefix = '';
      let ino = ROOT_INO;
      for (const part of parts) {
        prefix += `/${part}`;
        const existing = part === '..' ? this.#inodes.parent(ino) : this.#index.get(ino)?.get(part);
        if (existing !== undefined) {
          if (this.#inodes.type(existing) !== InodeType.Directory) {
            throw new GuestmemfsError('ENOTDIR', `not a directory, mkdir '${prefix}'`, { syscall: 'mkdir', path: prefix });
          }
          this.#requireAccess(existing, X_OK, 'mkdir', prefix);
          ino = existing;
        } else {
          ino = this.#createInode(prefix, 'mkdir', InodeType.Directory, FileType.Plain, mode);
        }
      }
      return this.#stat(ino);
    }
    return this.#stat(this.#createInode(path, 'mkdir', InodeType.Directory, FileType.Plain, mode));
  }

  /** The inode number at path (following '..'), checking search permission on every directory on the way. */
  lookup(path: string): number {
    this.#requireMounted('lookup');
    return this.#resolve(path, 'lookup');
  }

  exists(path: string): boolean {
    try {
      this.lookup(path);
      return true;
    } catch (error) {
      if ((error as GuestmemfsError).code === 'ENOENT' || (error as GuestmemfsError).code === 'ENOTDIR') return false;
      throw error;
    }
  }

  stat(path: string): Stat {
    this.#requireMounted('stat');
    return this.#stat(this.#resolve(path, 'stat'));
  }

  /** Names in a directory, in the order of its entry list (newest first). */
  readdir(path: string): string[] {
    return this.readdirEntries(path).map((entry) => entry.name);
  }

  readdirEntries(path: string): DirEntry[] {
    this.#requireMounted('scandir');
    const dir = this.#resolve(path, 'scandir');
    if (this.#inodes.type(dir) !== InodeType.Directory) throw new GuestmemfsError('ENOTDIR', `not a directory, scandir '${path}'`, { syscall: 'scandir', path });
    this.#requireAccess(dir, R_OK, 'scandir', path);
    const entries: DirEntry[] = [];
    const inodes = this.#inodes;
    for (let child = inodes.firstChild(dir), hops = 0; child !== 0 && hops < inodes.count; child = inodes.next(child), hops++) {
      entries.push({ name: inodes.name(child), ino: child, type: inodes.type(child) === InodeType.Directory ? 'directory' : 'file' });
    }
    return entries;
  }

  /** Removes a file's name; its blocks are freed now, or when its last mapping in this process goes. */
  unlink(path: string): void {
    this.#requireWritable('unlink');
    const { parent, name, ino } = this.#resolveExisting(path, 'unlink');
    if (this.#inodes.type(ino) === InodeType.Directory) {
      throw new GuestmemfsError('EISDIR', `is a directory, unlink '${path}': use rmdir`, { syscall: 'unlink', path });
    }
    this.#requireNotBusy(ino, 'unlink', path);
    this.#requireAccess(parent, W_OK | X_OK, 'unlink', path);
    this.#detach(parent, name, ino);
    if (!this.#mapped.get(ino)) this.#release(ino);
  }

  rmdir(path: string): void {
    this.#requireWritable('rmdir');
    const { parent, name, ino } = this.#resolveExisting(path, 'rmdir');
    if (ino === ROOT_INO) throw new GuestmemfsError('EBUSY', 'the root directory cannot be removed', { syscall: 'rmdir', path });
    if (this.#inodes.type(ino) !== InodeType.Directory) throw new GuestmemfsError('ENOTDIR', `not a directory, rmdir '${path}'`, { syscall: 'rmdir', path });
    if (this.#inodes.firstChild(ino) !== 0) {
      throw new GuestmemfsError('ENOTEMPTY', `directory not empty, rmdir '${path}': remove its entries first`, { syscall: 'rmdir', path });
    }
    this.#requireAccess(parent, W_OK | X_OK, 'rmdir', path);
    this.#detach(parent, name, ino);
    this.#inodes.setNlink(parent, this.#inodes.nlink(parent) - 1);
    this.#release(ino);
  }

  /**
   * Moves `from` to `to` with POSIX rules: an existing file `to` is replaced by a file, an existing empty directory by
   * a directory; a directory cannot move into itself. The intent record makes it atomic across a kill.
   */
  rename(from: string, to: string): void {
    this.#requireWritable('rename');
    const source = this.#resolveExisting(from, 'rename');
    const target = this.#resolveParent(to, 'rename');
    const inodes = this.#inodes;
    const isDir = inodes.type(source.ino) === InodeType.Directory;
    if (source.ino === ROOT_INO) throw new GuestmemfsError('EBUSY', 'the root directory cannot be renamed', { syscall: 'rename', path: from });
    const victim = this.#index.get(target.parent)?.get(target.name);
    if (victim === source.ino) return;
    if (isDir) {
      for (let dir = target.parent; ; dir = inodes.parent(dir)) {
        if (dir === source.ino) {
          throw new GuestmemfsError('EINVAL', `cannot move directory '${from}' into itself ('${to}')`, { syscall: 'rename', path: to });
        }
        if (dir === ROOT_INO) break;
      }
    }
    if (victim !== undefined) {
      const victimIsDir = inodes.type(victim) === InodeType.Directory;
      if (isDir && !victimIsDir) throw new GuestmemfsError('ENOTDIR', `not a directory, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
      if (!isDir && victimIsDir) throw new GuestmemfsError('EISDIR', `is a directory, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
      if (victimIsDir && inodes.firstChild(victim) !== 0) {
        throw new GuestmemfsError('ENOTEMPTY', `directory not empty, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
      }
      this.#requireNotBusy(victim, 'rename', to);
    }
    this.#requireNotBusy(source.ino, 'rename', from);
    this.#requireAccess(source.parent, W_OK | X_OK, 'rename', from);
    this.#requireAccess(target.parent, W_OK | X_OK, 'rename', to);

    // 1. The intent record, fields first and the magic last (commit point): from here a kill is rolled forward.
    const intent = this.#intent;
    const intentBytes = this.#header.subarray(INTENT_OFFSET, INTENT_OFFSET + 4096);
    intent[INTENT.op / 4] = INTENT_OP_RENAME;
    intent[INTENT.srcIno / 4] = source.ino;
    intent[INTENT.dstParent / 4] = target.parent;
    intent[INTENT.victimIno / 4] = victim ?? 0;
    intent[INTENT.nameLength / 4] = target.nameBytes.length;
    intentBytes.set(target.nameBytes, INTENT.name);
    intent[INTENT.crc / 4] = intentChecksum(intentBytes, target.nameBytes.length);
    intent[INTENT.magic / 4] = INTENT_ACTIVE;
    // 2. The steps, each idempotent so the checker can replay them from the record.
    const now = nowNs();
    if (victim !== undefined) {
      this.#detach(target.parent, target.name, victim);
      if (inodes.type(victim) === InodeType.Directory) inodes.setNlink(target.parent, inodes.nlink(target.parent) - 1);
    }
    this.#unlinkChild(source.parent, source.ino);
    this.#index.get(source.parent)?.delete(source.name);
    inodes.setName(source.ino, target.nameBytes);
    inodes.setParent(source.ino, target.parent);
    this.#linkChild(target.parent, source.ino);
    this.#indexFor(target.parent).set(target.name, source.ino);
    if (isDir && source.parent !== target.parent) {
      inodes.setNlink(source.parent, inodes.nlink(source.parent) - 1);
      inodes.setNlink(target.parent, inodes.nlink(target.parent) + 1);
    }
    for (const dir of new Set([source.parent, target.parent])) {
      inodes.setTime(dir, 'mtime', now);
      inodes.setTime(dir, 'ctime', now);
    }
    inodes.setTime(source.ino, 'ctime', now);
    // 3. Done: clear the record. The replaced file's blocks go now unless it is mapped.
    intent[INTENT.magic / 4] = 0;
    if (victim !== undefined && !this.#mapped.get(victim)) this.#release(victim);
  }

  chmod(path: string, mode: number): void {
    this.#requireWritable('chmod');
    const ino = this.#resolve(path, 'chmod');
    this.#requireOwner(ino, 'chmod', path);
    this.#inodes.setMode(ino, this.#checkMode(mode, 'chmod', path));
    this.#inodes.setTime(ino, 'ctime', nowNs());
  }

  /** Changes owner and/or group (-1 or undefined keeps one); only root may, as on Linux without CAP_CHOWN. */
  chown(path: string, uid: number | undefined, gid: number | undefined): void {
    this.#requireWritable('chown');
    const ino = this.#resolve(path, 'chown');
    for (const [what, id] of [['uid', uid], ['gid', gid]] as const) {
      if (id !== undefined && id !== -1 && (!Number.isInteger(id) || id < 0 || id > 0xfffffffe)) {
        throw new GuestmemfsError('EINVAL', `${what} ${id} is not a valid id`, { syscall: 'chown', path });
      }
    }
    if (this.credentials.uid !== 0) {
      throw new GuestmemfsError('EPERM', `operation not permitted, chown '${path}': only root (uid 0) may change ownership`, { syscall: 'chown', path });
    }
    if (uid !== undefined && uid !== -1) this.#inodes.setUid(ino, uid);
    if (gid !== undefined && gid !== -1) this.#inodes.setGid(ino, gid);
    this.#inodes.setTime(ino, 'ctime', nowNs());
  }

  /** Sets access and modification times, in nanoseconds since the epoch. */
  utimes(path: string, atimeNs: bigint, mtimeNs: bigint): void {
    this.#requireWritable('utime');
    const ino = this.#resolve(path, 'utime');
    for (const value of [atimeNs, mtimeNs]) {
      if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
        throw new GuestmemfsError('EINVAL', 'times must be non-negative bigint nanoseconds', { syscall: 'utime', path });
      }
    }
    this.#requireOwner(ino, 'utime', path);
    this.#inodes.setTime(ino, 'atime', atimeNs);
    this.#inodes.setTime(ino, 'mtime', mtimeNs);
    this.#inodes.setTime(ino, 'ctime', nowNs());
  }

  // ---------------------------------------------------------------- data

  /**
   * Sets a file's size. Growing allocates blocks (one contiguous run when the pool has one) and zeroes any that held
   * old bytes; shrinking frees whole blocks past the end. On ENOSPC nothing changes.
   */
  truncate(path: string, size: number): void {
    this.#requireWritable('ftruncate');
    const ino = this.#resolveFileForWrite(path, 'ftruncate');
    const plan = this.#planResize(ino, size, path);
    if (plan.grow) {
      for (const run of plan.dirty) this.#zeroRun(run);
      this.#commitGrow(ino, plan);
    } else {
      this.#shrink(ino, size, path);
    }
  }

  /** truncate() with the zeroing done off the JS thread, reporting progress; the file is busy until it settles. */
  async truncateAsync(path: string, size: number, options: ProgressOptions = {}): Promise<void> {
    this.#requireWritable('ftruncate');
    const ino = this.#resolveFileForWrite(path, 'ftruncate');
    const plan = this.#planResize(ino, size, path);
    if (!plan.grow) {
      this.#shrink(ino, size, path);
      options.onProgress?.(0, 0);
      return;
    }
    const total = plan.dirty.reduce((sum, run) => sum + run.length, 0) * this.geometry.blockSize;
    this.#busy.add(ino);
    try {
      let done = 0;
      for (const run of plan.dirty) {
        const length = run.length * this.geometry.blockSize;
        await native.zeroAsync(this.#dataMapping().id, run.start * this.geometry.blockSize, length, (chunk) => options.onProgress?.(done + chunk, total));
        done += length;
      }
    } catch (error) {
      // The chosen blocks go back; those not yet zeroed are still marked dirty.
      this.#allocator.markFree(plan.runs);
      throw error;
    } finally {
      this.#busy.delete(ino);
    }
    this.#commitGrow(ino, plan);
    options.onProgress?.(total, total);
  }

  /**
   * Maps a file's blocks into one contiguous range (pre-faulted by default, as guestmemfs does). Guest files are
   * always mapped MADV_DONTDUMP and MADV_DONTFORK. The file cannot shrink below a live mapping.
   */
  map(path: string, options: FileMapOptions = {}): Mapping {
    this.#requireMounted('mmap');
    const ino = this.#resolve(path, 'mmap');
    if (this.#inodes.type(ino) !== InodeType.File) throw new GuestmemfsError('EISDIR', `is a directory, mmap '${path}'`, { syscall: 'mmap', path });
    const writable = options.writable ?? !this.#readOnly;
    if (writable) this.#requireNotReadOnly('mmap');
    this.#requireAccess(ino, writable ? R_OK | W_OK : R_OK, 'mmap', path);
    const extents = this.#poolExtents(ino);
    if (extents.length === 0) throw new GuestmemfsError('EINVAL', `file is empty, mmap '${path}': truncate it to a size first`, { syscall: 'mmap', path });
    const guest = this.#inodes.fileType(ino) === FileType.Guest;
    const { premapped, ...mapOptions } = options;
    if (premapped !== undefined && (!(premapped instanceof Mapping) || unadoptedPremappings.get(premapped) !== this.#key || !premapped.mapped)) {
      throw new GuestmemfsError('EINVAL', `premapped must be an unadopted, still mapped result of premapFile() on this pool, mmap '${path}'`, { syscall: 'mmap', path });
    }
    let mapping: Mapping;
    if (premapped && writable && sameExtents(premapped.extents, extents)) {
      unadoptedPremappings.delete(premapped);
      premapped.attachUnmapHook(() => this.#unmapped(ino));
      mapping = premapped;
    } else {
      mapping = this.pool.map(extents, {
        ...mapOptions,
        writable,
        dontDump: guest || options.dontDump,
        dontFork: guest || options.dontFork,
        onUnmap: () => this.#unmapped(ino),
      });
    }
    this.#mapped.set(ino, (this.#mapped.get(ino) ?? 0) + 1);
    this.#touchAtime(ino);
    return mapping;
  }

  /** Reads up to `length` bytes from `position` of a state or plain file (guest files are mmap-only). */
  read(path: string, position = 0, length?: number): Uint8Array {
    this.#requireMounted('read');
    const ino = this.#resolve(path, 'read');
    this.#requireReadWritable(ino, 'read', path);
    this.#requireAccess(ino, R_OK, 'read', path);
    const size = this.#inodes.size(ino);
    if (!Number.isSafeInteger(position) || position < 0) throw new GuestmemfsError('EINVAL', `position ${position} must be a non-negative integer`, { syscall: 'read', path });
    const end = Math.min(size, length === undefined ? size : position + length);
    const out = new Uint8Array(Math.max(0, end - position));
    this.#copy(ino, position, out, 'read');
    this.#touchAtime(ino);
    return out;
  }

  /** Writes bytes at `position` of a state or plain file, growing it as needed; returns the bytes written. */
  write(path: string, data: Uint8Array, position = 0): number {
    this.#requireWritable('write');
    const ino = this.#resolveFileForWrite(path, 'write');
    this.#requireReadWritable(ino, 'write', path);
    if (!(data instanceof Uint8Array)) throw new GuestmemfsError('EINVAL', 'data must be a Uint8Array or Buffer', { syscall: 'write', path });
    if (!Number.isSafeInteger(position) || position < 0) throw new GuestmemfsError('EINVAL', `position ${position} must be a non-negative integer`, { syscall: 'write', path });
    const end = position + data.length;
    const extends_ = end > this.#inodes.size(ino);
    if (extends_) {
      // Blocks first, then the bytes, then the size: a kill never shows the new size without the new bytes.
      const plan = this.#planResize(ino, end, path);
      for (const run of plan.dirty) this.#zeroRun(run);
      this.#commitGrow(ino, plan, false);
    }
    this.#copy(ino, position, data, 'write');
    if (extends_) this.#inodes.setSize(ino, end); // commit point of an extending write
    const now = nowNs();
    this.#inodes.setTime(ino, 'mtime', now);
    this.#inodes.setTime(ino, 'ctime', now);
    return data.length;
  }

  /** Zeroes free blocks that still hold old bytes, off the JS thread, so later allocations need no zeroing. */
  async scrub(options: ProgressOptions = {}): Promise<number> {
    this.#requireWritable('scrub');
    const runs = this.#allocator.dirtyFreeRuns();
    const blockSize = this.geometry.blockSize;
    const total = runs.reduce((sum, run) => sum + run.length, 0) * blockSize;
    let done = 0;
    for (const run of runs) {
      // Claim the run while it is zeroed so no allocation hands it out half-zeroed.
      this.#allocator.markAllocated([run]);
      try {
        await native.zeroAsync(this.#dataMapping().id, run.start * blockSize, run.length * blockSize, (chunk) => options.onProgress?.(done + chunk, total));
        this.#allocator.markDirty([run], false);
      } finally {
        this.#allocator.markFree([run]);
      }
      done += run.length * blockSize;
    }
    options.onProgress?.(total, total);
    return total;
  }

  statfs(): StatFs {
    this.#requireMounted('statfs');
    const allocator = this.#allocator;
    const dirtyFree = allocator.dirtyFreeRuns().reduce((sum, run) => sum + run.length, 0);
    return {
      blockSize: this.geometry.blockSize,
      pageSize: this.geometry.pageSize,
      totalBlocks: this.geometry.blockCount,
      dataBlocks: allocator.dataBlocks,
      freeBlocks: allocator.freeBlocks,
      dirtyFreeBlocks: dirtyFree,
      totalInodes: this.geometry.inodeCount - 1,
      freeInodes: this.#hints[HINTS.freeInodes / 4]!,
    };
  }

  /** Recomputes all derived metadata from the primary state and lists every disagreement (empty when consistent). */
  audit(): AuditReport {
    this.#requireMounted('audit');
    return auditMetadata({ geometry: this.geometry, inodes: this.#inodes, extents: this.#extents, allocator: this.#allocator, hints: this.#hints });
  }

  /** Pool byte ranges holding a file's blocks, in file order. */
  extents(path: string): Array<{ offset: number; length: number }> {
    this.#requireMounted('extents');
    return this.#poolExtents(this.#resolve(path, 'extents'));
  }

  /** A file's blocks as pool byte ranges, in file order. */
  #poolExtents(ino: number): Extent[] {
    const blockSize = this.geometry.blockSize;
    return this.#extents.read(ino).map((run) => ({ offset: run.start * blockSize, length: run.length * blockSize }));
  }

  /**
   * Marks the pool cleanly unmounted and releases it. Refuses (EBUSY) while this process still maps files from it or
   * has asynchronous work in flight, as umount refuses a busy filesystem.
   */
  unmount(): void {
    this.#requireMounted('umount');
    if (this.#readOnly) {
      this.#mounted = false;
      this.#data?.unmap();
      this.#data = undefined;
      return;
    }
    const mapped = [...this.#mapped.values()].reduce((sum, count) => sum + count, 0);
    if (this.#frozenAt !== undefined) {
      // Handed over: the pool stays serialised for the next owner; mappings here stay valid (guest memory keeps
      // running) because nothing can change the metadata any more.
      this.#releaseMount();
      return;
    }
    if (mapped > 0) {
      throw new GuestmemfsError('EBUSY', `${mapped} file mapping(s) are still live: unmap them before unmounting`, { syscall: 'umount', path: this.pool.label });
    }
    if (this.#busy.size > 0) {
      throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before unmounting', { syscall: 'umount', path: this.pool.label });
    }
    this.#writeSuperblock({ state: PoolState.Clean, ownerPid: 0, ownerStartTime: 0n });
    this.#releaseMount();
  }

  #releaseMount(): void {
    this.#mounted = false;
    this.#meta?.unmap();
    this.#data?.unmap();
    this.#data = undefined;
    mountedHere.delete(this.#key);
    native.fdUnlock(this.pool.fd);
  }

  // ---------------------------------------------------------------- handover

  /**
   * Serialises the metadata's description into a handover blob (an FDT) in the pool's handover area and freezes
   * the filesystem: every operation that would change metadata fails with EBUSY until abort(). Reads, stat,
   * readdir and mapping keep working. Serialising again returns the same blob.
   */
  serialise(options: { out?: string } = {}): SerialiseResult {
    this.#requireMounted('serialise');
    this.#requireNotReadOnly('serialise');
    const started = process.hrtime.bigint();
    const g = this.geometry;
    const area = this.#handoverArea();
    let blob: Uint8Array;
    let files: number;
    let mappingBlocks: number;
    if (this.#frozenAt !== undefined) {
      blob = area.slice(0, this.#superblock.handoverBytes);
      const description = verifyHandoverBlob(blob, this.#restoreExpectations(this.#superblock.generation, this.#superblock.handoverCrc));
      files = description.liveInodes.length;
      mappingBlocks = description.mappingsBlocks.length;
    } else {
      if (this.#busy.size > 0) {
        throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before serialising', { syscall: 'serialise', path: this.pool.label });
      }
      const live = [ROOT_INO, ...this.#orphans];
      for (const names of this.#index.values()) for (const ino of names.values()) live.push(ino);
      live.sort((a, b) => a - b);
      const pages: number[] = [];
      const owners: number[] = [];
      for (const ino of live) {
        for (const page of this.#extents.chain(ino)) {
          pages.push(page);
          owners.push(ino);
        }
      }
      const generation = this.#superblock.generation + 1n;
      blob = buildHandoverBlob({
        pool: {
          backend: this.pool.backend,
          path: this.pool.path,
          fd: this.pool.path === undefined ? this.pool.fd : undefined,
          size: this.pool.size,
          pageSize: this.pool.pageSize,
        },
        geometry: g,
        uuid: this.uuid,
        generation,
        metadata: this.#liveMetadata(),
        liveInodes: live,
        pages,
        pageOwners: owners,
      });
      if (blob.length > area.length) {
        throw new GuestmemfsError(
          'ENOSPC',
          `handover blob of ${blob.length} bytes does not fit the ${area.length}-byte handover area (${live.length} files, ${pages.length} extent pages): delete files or mkfs with fewer, larger files`,
          { syscall: 'serialise', path: this.pool.label },
        );
      }
      area.set(blob);
      // Commit point: the superblock names the blob, its checksum and generation, and says "serialised".
      this.#writeSuperblock({ state: PoolState.Serialised, generation, handoverBytes: blob.length, handoverCrc: crc32(blob), handoverGeneration: generation });
      this.#frozenAt = generation;
      files = live.length;
      mappingBlocks = pages.length;
    }
    const result: SerialiseResult = { generation: this.#frozenAt!, blob, files, mappingBlocks, ms: elapsedMs(started) };
    if (options.out) {
      fs.writeFileSync(options.out, blob);
      result.out = path.resolve(options.out);
    }
    return result;
  }

  /** Lifts the freeze of serialise() (the RFC's KEXEC_KHO_ABORT): the blob becomes stale and changes are allowed again. */
  abort(): void {
    this.#requireMounted('abort');
    this.#requireNotReadOnly('abort');
    if (this.#frozenAt === undefined) {
      throw new GuestmemfsError('EINVAL', 'the filesystem is not serialised: nothing to abort', { syscall: 'abort', path: this.pool.label });
    }
    this.#writeSuperblock({ state: PoolState.Mounted, handoverBytes: 0, handoverCrc: 0 });
    this.#frozenAt = undefined;
  }

  /**
   * Serialises, then replaces this process with `argv` through execve (same PID). A memfd pool's fd is kept open and
   * its number passed in GUESTMEMFS_POOL_FD (as QEMU's cpr-exec does); a path pool's path goes in GUESTMEMFS_POOL.
   * Everything else the new program needs is in the handover blob. Returns only by throwing: if execve fails, the
   * serialisation is aborted and the filesystem keeps working here.
   */
  kexec(argv: readonly string[], options: KexecOptions = {}): never {
    this.#requireMounted('execve');
    this.#requireNotReadOnly('execve');
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((arg) => typeof arg === 'string')) {
      throw new GuestmemfsError('EINVAL', 'kexec needs argv: a non-empty array of strings (program first)', { syscall: 'execve' });
    }
    const file = resolveExecutable(argv[0]!);
    const wasFrozen = this.#frozenAt !== undefined;
    this.serialise();
    const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) };
    delete env[POOL_FD_ENV];
    delete env[POOL_PATH_ENV];
    // Exactly the pool's fd survives (a path pool is found again by path; its fd and mount lock go with the exec).
    const keepFds: number[] = [];
    if (this.pool.path === undefined) {
      keepFds.push(this.pool.fd);
      env[POOL_FD_ENV] = String(this.pool.fd);
    } else {
      env[POOL_PATH_ENV] = this.pool.path;
    }
    const envList = Object.entries(env)
      .filter((entry): entry is [string, string] => entry[1] !== undefined)
      .map(([key, value]) => `${key}=${value}`);
    try {
      native.processExec(file, [...argv], envList, keepFds);
    } catch (error) {
      if (wasFrozen) {
        // The caller serialised before calling kexec: undoing that is the caller's decision.
        throw GuestmemfsError.from(error).withRemedy('this process keeps the filesystem, still serialised: abort() to change it again');
      }
      this.abort();
      throw GuestmemfsError.from(error).withRemedy('the handover was aborted and this process keeps the filesystem');
    }
    throw new GuestmemfsError('EIO', 'execve returned without an error', { syscall: 'execve' });
  }

  #handoverArea(): Uint8Array {
    this.#handoverWindow ??= this.#source.window(this.geometry.handoverOffset, this.geometry.handoverLength);
    return this.#handoverWindow;
  }

  #liveMetadata(): LiveMetadata {
    return {
      header: this.#header,
      bitmaps: this.#allocator.bitmapBytes(),
      inodeRecord: (ino) => this.#inodes.record(ino),
      pageRecord: (page) => this.#extents.pageRecord(page),
    };
  }

  #restoreExpectations(generation: bigint, blobCrc: number) {
    return {
      geometry: this.geometry,
      uuid: this.uuid,
      generation,
      pool: { size: this.pool.size, pageSize: this.pool.pageSize, label: this.pool.label },
      metadata: this.#liveMetadata(),
      isLive: (ino: number) => this.#inodes.type(ino) !== InodeType.Free,
      chainOf: (ino: number) => (this.#inodes.isValidIno(ino) ? this.#extents.chain(ino) : []),
      blobCrc,
    };
  }

  // ---------------------------------------------------------------- internals

  #writeSuperblock(changes: Partial<Superblock>): void {
    const next = { ...this.#superblock, ...changes, sequence: this.#superblock.sequence + 1n };
    // Overwrite the copy that is not the newest: a kill mid-write leaves the newest one intact.
    const slot = 1 - this.#superblock.slot;
    writeSuperblockSlot(this.#header, slot, next);
    this.#superblock = { ...next, slot };
  }

  /** Builds the name index from every inode in the table, or from the handover's list of live inodes. */
  #buildIndex(live?: readonly number[]): void {
    const inodes = this.#inodes;
    const orphans: number[] = [];
    const candidates = live ?? Array.from({ length: inodes.count - 1 }, (_, index) => index + 1);
    for (const ino of candidates) {
      const type = inodes.type(ino);
      if (type === InodeType.Free || ino === ROOT_INO) continue;
      if (inodes.flags(ino) & FLAG_ORPHAN) {
        orphans.push(ino);
        continue;
      }
      this.#indexFor(inodes.parent(ino)).set(inodes.name(ino), ino);
    }
    // Unlinked files whose mapping process is gone: nothing can reach them any more (a read-only view leaves them).
    if (this.#readOnly) for (const ino of orphans) this.#orphans.add(ino);
    else for (const ino of orphans) this.#release(ino);
  }

  #indexFor(dir: number): Map<string, number> {
    let names = this.#index.get(dir);
    if (!names) {
      names = new Map();
      this.#index.set(dir, names);
    }
    return names;
  }

  #resolve(path: string, syscall: string): number {
    const parts = splitPath(path, syscall);
    const inodes = this.#inodes;
    let ino = ROOT_INO;
    for (let i = 0; i < parts.length; i++) {
      if (inodes.type(ino) !== InodeType.Directory) {
        throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
      }
      this.#requireAccess(ino, X_OK, syscall, path);
      const part = parts[i]!;
      const next = part === '..' ? inodes.parent(ino) : this.#index.get(ino)?.get(part);
      if (next === undefined) throw new GuestmemfsError('ENOENT', `no such file or directory, ${syscall} '${path}'`, { syscall, path });
      ino = next;
    }
    return ino;
  }

  #resolveParent(path: string, syscall: string): { parent: number; name: string; nameBytes: Uint8Array } {
    const parts = splitPath(path, syscall);
    if (endsWithDot(path)) {
      // "dir/." names an existing directory (or nothing): it can never be created.
      this.#resolve(path, syscall);
      throw new GuestmemfsError('EEXIST', `file already exists, ${syscall} '${path}'`, { syscall, path });
    }
    const name = parts.pop();
    if (name === undefined) throw new GuestmemfsError('EEXIST', `the root directory already exists, ${syscall} '${path}'`, { syscall, path });
    if (name === '..') throw new GuestmemfsError('EINVAL', `"..": cannot be the last part of a path to ${syscall}`, { syscall, path });
    const nameBytes = encodeNewName(name, syscall, path);
    const parentPath = `/${parts.join('/')}`;
    const parent = this.#resolve(parentPath, syscall);
    if (this.#inodes.type(parent) !== InodeType.Directory) throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
    return { parent, name, nameBytes };
  }

  #resolveExisting(path: string, syscall: string): { parent: number; name: string; ino: number } {
    const parts = splitPath(path, syscall);
    if (endsWithDot(path)) throw new GuestmemfsError('EINVAL', `cannot ${syscall} '.', ${syscall} '${path}'`, { syscall, path });
    const name = parts.pop();
    if (name === undefined) {
      throw new GuestmemfsError(syscall === 'rmdir' || syscall === 'rename' ? 'EBUSY' : 'EISDIR', `cannot ${syscall} the root directory`, { syscall, path });
    }
    if (name === '..') throw new GuestmemfsError('EINVAL', `cannot ${syscall} '..'`, { syscall, path });
    const parent = this.#resolve(`/${parts.join('/')}`, syscall);
    if (this.#inodes.type(parent) !== InodeType.Directory) throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
    this.#requireAccess(parent, X_OK, syscall, path);
    const ino = this.#index.get(parent)?.get(name);
    if (ino === undefined) throw new GuestmemfsError('ENOENT', `no such file or directory, ${syscall} '${path}'`, { syscall, path });
    return { parent, name, ino };
  }

  #resolveFileForWrite(path: string, syscall: string): number {
    const ino = this.#resolve(path, syscall);
    if (this.#inodes.type(ino) !== InodeType.File) throw new GuestmemfsError('EISDIR', `is a directory, ${syscall} '${path}'`, { syscall, path });
    this.#requireNotBusy(ino, syscall, path);
    this.#requireAccess(ino, W_OK, syscall, path);
    return ino;
  }

  #requireReadWritable(ino: number, syscall: string, path: string): void {
    if (this.#inodes.type(ino) !== InodeType.File) throw new GuestmemfsError('EISDIR', `is a directory, ${syscall} '${path}'`, { syscall, path });
    if (this.#inodes.fileType(ino) === FileType.Guest) {
      throw new GuestmemfsError('EPERM', `guest files have no ${syscall}(): their memory is only reachable through map(), ${syscall} '${path}'`, { syscall, path });
    }
  }

  #requireAccess(ino: number, want: number, syscall: string, path: string): void {
    const inodes = this.#inodes;
    const owner = { mode: inodes.mode(ino), uid: inodes.uid(ino), gid: inodes.gid(ino) };
    if (permits(owner, this.credentials, want, inodes.type(ino) === InodeType.Directory)) return;
    throw new GuestmemfsError(
      'EACCES',
      `permission denied, ${syscall} '${path}': uid ${this.credentials.uid} lacks ${describeWant(want)} permission on inode ${ino} ` +
        `(mode ${owner.mode.toString(8).padStart(4, '0')}, owner ${owner.uid}:${owner.gid}); chmod/chown it or mount with other credentials`,
      { syscall, path },
    );
  }

  #requireOwner(ino: number, syscall: string, path: string): void {
    if (this.credentials.uid === 0 || this.credentials.uid === this.#inodes.uid(ino)) return;
    throw new GuestmemfsError('EPERM', `operation not permitted, ${syscall} '${path}': only the owner (uid ${this.#inodes.uid(ino)}) or root may`, {
      syscall,
      path,
    });
  }

  #requireNotBusy(ino: number, syscall: string, path: string): void {
    if (this.#busy.has(ino)) {
      throw new GuestmemfsError('EBUSY', `an asynchronous truncate of this file is in flight, ${syscall} '${path}': await it first`, { syscall, path });
    }
  }

  #requireNotReadOnly(syscall: string): void {
    if (this.#readOnly) {
      throw new GuestmemfsError('EROFS', `this is a read-only view of the pool, ${syscall}: mount it normally to change it`, { syscall, path: this.pool.label });
    }
  }

  #requireWritable(syscall: string): void {
    this.#requireMounted(syscall);
    this.#requireNotReadOnly(syscall);
    if (this.#frozenAt !== undefined) {
      throw new GuestmemfsError(
        'EBUSY',
        `the filesystem is serialised for handover (generation ${this.#frozenAt}), ${syscall}: abort() the handover to change it again`,
        { syscall, path: this.pool.label },
      );
    }
  }

  /** Access times are metadata too: a serialised filesystem must not change under its blob's checksum. */
  #touchAtime(ino: number): void {
    if (this.#frozenAt === undefined && !this.#readOnly) this.#inodes.setTime(ino, 'atime', nowNs());
  }

  #requireMounted(syscall: string): void {
    if (!this.#mounted) throw new GuestmemfsError('EINVAL', `the filesystem was unmounted; mount the pool again, ${syscall}`, { syscall, path: this.pool.label });
  }

  #checkMode(mode: number, syscall: string, path: string): number {
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new GuestmemfsError('EINVAL', `mode ${mode} must be permission bits between 0 and 07777`, { syscall, path });
    }
    return mode;
  }

  /** Allocates and initialises an inode, then links it: the type store is the commit point. */
  #createInode(path: string, syscall: string, type: InodeType, fileType: FileType, mode: number): number {
    const { parent, name, nameBytes } = this.#resolveParent(path, syscall);
    if (this.#index.get(parent)?.has(name)) throw new GuestmemfsError('EEXIST', `file already exists, ${syscall} '${path}'`, { syscall, path });
    this.#requireAccess(parent, W_OK | X_OK, syscall, path);
    const inodes = this.#inodes;
    const hints = this.#hints;
    const ino = hints[HINTS.freeInodeHead / 4]!;
    if (ino === 0) {
      throw new GuestmemfsError(
        'ENOSPC',
        `no free inodes: all ${inodes.count - 1} are in use, ${syscall} '${path}'; delete files or mkfs with more inodes (--inodes)`,
        { syscall, path },
      );
    }
    if (!inodes.isValidIno(ino) || inodes.type(ino) !== InodeType.Free) {
      throw new GuestmemfsError('EUCLEAN', `the free inode list is damaged (it names inode ${ino}, which is in use): unmount and run the checker with repair`, { syscall, path });
    }
    // Pop from the free list first: a kill after this leaks a free inode, which the checker puts back.
    hints[HINTS.freeInodeHead / 4] = inodes.nextFree(ino);
    hints[HINTS.freeInodes / 4] = hints[HINTS.freeInodes / 4]! - 1;
    const generation = inodes.generation(ino) + 1;
    inodes.clear(ino);
    const now = nowNs();
    inodes.setGeneration(ino, generation);
    inodes.setFileType(ino, fileType);
    inodes.setMode(ino, mode);
    inodes.setUid(ino, this.credentials.uid);
    inodes.setGid(ino, this.credentials.gid);
    inodes.setNlink(ino, type === InodeType.Directory ? 2 : 1);
    for (const field of ['atime', 'mtime', 'ctime', 'btime'] as const) inodes.setTime(ino, field, now);
    inodes.setName(ino, nameBytes);
    inodes.setParent(ino, parent);
    inodes.setType(ino, type); // commit point: the name now exists
    this.#linkChild(parent, ino);
    this.#indexFor(parent).set(name, ino);
    if (type === InodeType.Directory) inodes.setNlink(parent, inodes.nlink(parent) + 1);
    inodes.setTime(parent, 'mtime', now);
    inodes.setTime(parent, 'ctime', now);
    return ino;
  }

  /** Takes a name out of the namespace: the orphan flag is the commit point; the entry list and index follow. */
  #detach(parent: number, name: string, ino: number): void {
    const inodes = this.#inodes;
    inodes.setNlink(ino, 0);
    inodes.setFlags(ino, inodes.flags(ino) | FLAG_ORPHAN); // commit point: the name is gone
    this.#orphans.add(ino);
    this.#unlinkChild(parent, ino);
    this.#index.get(parent)?.delete(name);
    if (this.#index.get(ino)?.size === 0) this.#index.delete(ino);
    const now = nowNs();
    inodes.setTime(parent, 'mtime', now);
    inodes.setTime(parent, 'ctime', now);
    inodes.setTime(ino, 'ctime', now);
  }

  /** Frees an orphan's blocks and its inode: blocks turn dirty before the file lets go of them, the type store commits. */
  #release(ino: number): void {
    const inodes = this.#inodes;
    const runs = this.#extents.read(ino);
    this.#allocator.markDirty(runs, true);
    this.#extents.truncate(ino, 0);
    this.#allocator.markFree(runs);
    inodes.setBlockCount(ino, 0);
    inodes.setSize(ino, 0);
    inodes.setNextFree(ino, this.#hints[HINTS.freeInodeHead / 4]!);
    inodes.setType(ino, InodeType.Free); // commit point: the inode is free
    this.#hints[HINTS.freeInodeHead / 4] = ino;
    this.#hints[HINTS.freeInodes / 4] = this.#hints[HINTS.freeInodes / 4]! + 1;
    this.#mapped.delete(ino);
    this.#orphans.delete(ino);
  }

  #linkChild(parent: number, ino: number): void {
    const inodes = this.#inodes;
    const first = inodes.firstChild(parent);
    inodes.setNext(ino, first);
    inodes.setPrev(ino, 0);
    if (first !== 0) inodes.setPrev(first, ino);
    inodes.setFirstChild(parent, ino);
  }

  #unlinkChild(parent: number, ino: number): void {
    const inodes = this.#inodes;
    const prev = inodes.prev(ino);
    const next = inodes.next(ino);
    if (prev !== 0) inodes.setNext(prev, next);
    else inodes.setFirstChild(parent, next);
    if (next !== 0) inodes.setPrev(next, prev);
    inodes.setNext(ino, 0);
    inodes.setPrev(ino, 0);
  }

  #unmapped(ino: number): void {
    const count = (this.#mapped.get(ino) ?? 1) - 1;
    if (count > 0) {
      this.#mapped.set(ino, count);
      return;
    }
    this.#mapped.delete(ino);
    if (this.#mounted && this.#inodes.type(ino) !== InodeType.Free && this.#inodes.flags(ino) & FLAG_ORPHAN) this.#release(ino);
  }

  #planResize(ino: number, size: number, path: string): { grow: boolean; runs: BlockRun[]; dirty: BlockRun[]; size: number } {
    if (!Number.isSafeInteger(size) || size < 0) throw new GuestmemfsError('EINVAL', `size ${size} must be a non-negative integer`, { syscall: 'ftruncate', path });
    const blockSize = this.geometry.blockSize;
    const oldSize = this.#inodes.size(ino);
    const have = this.#inodes.blockCount(ino);
    const want = Math.ceil(size / blockSize);
    if (size <= oldSize) return { grow: false, runs: [], dirty: [], size };
    if (want <= have) return { grow: true, runs: [], dirty: [], size };
    const needed = want - have;
    const existing = this.#extents.read(ino);
    const last = existing.at(-1);
    const runs = this.#allocator.choose(needed, last ? last.start + last.length : -1);
    if (!runs) {
      throw new GuestmemfsError(
        'ENOSPC',
        `pool has ${this.#allocator.freeBlocks} free ${formatSize(blockSize)} blocks, truncate needs ${needed}, ftruncate '${path}': delete files or use a larger pool`,
        { syscall: 'ftruncate', path },
      );
    }
    const mergesWithLast = last !== undefined && last.start + last.length === runs[0]!.start ? 1 : 0;
    if (this.#extents.pagesNeeded(ino, runs.length - mergesWithLast) > this.#extents.freePages) {
      throw new GuestmemfsError('ENOSPC', `no free extent pages for ${runs.length} more extents, ftruncate '${path}': run the checker`, { syscall: 'ftruncate', path });
    }
    // Blocks are claimed before they are zeroed or linked: a kill now leaks them to the checker, never to another file.
    this.#allocator.markAllocated(runs);
    return { grow: true, runs, dirty: this.#allocator.dirtyWithin(runs), size };
  }

  #dataMapping(): Mapping {
    this.#data ??= this.pool.mapAll({ populate: false, dontDump: true, dontFork: true, writable: !this.#readOnly });
    return this.#data;
  }

  #zeroRun(run: BlockRun): void {
    native.zero(this.#dataMapping().id, run.start * this.geometry.blockSize, run.length * this.geometry.blockSize);
  }

  /** Links zeroed blocks into the file (extent count is the commit point), then publishes the size unless told not to. */
  #commitGrow(ino: number, plan: { runs: BlockRun[]; dirty: BlockRun[]; size: number }, publishSize = true): void {
    const inodes = this.#inodes;
    const blockSize = this.geometry.blockSize;
    this.#allocator.markDirty(plan.dirty, false);
    // Bytes past the old size inside the old last block may hold data from before a shrink: zero them first.
    const oldSize = inodes.size(ino);
    const allocatedEnd = inodes.blockCount(ino) * blockSize;
    if (oldSize < allocatedEnd) this.#zeroFileRange(ino, oldSize, Math.min(plan.size, allocatedEnd));
    if (plan.runs.length > 0) {
      this.#extents.append(ino, plan.runs);
      inodes.setBlockCount(ino, inodes.blockCount(ino) + plan.runs.reduce((sum, run) => sum + run.length, 0));
    }
    if (!publishSize) return;
    inodes.setSize(ino, plan.size); // commit point
    const now = nowNs();
    inodes.setTime(ino, 'mtime', now);
    inodes.setTime(ino, 'ctime', now);
  }

  /** Publishes the smaller size first, then turns the cut blocks dirty, unlinks them and frees them. */
  #shrink(ino: number, size: number, path: string): void {
    const inodes = this.#inodes;
    const blockSize = this.geometry.blockSize;
    const keep = Math.ceil(size / blockSize);
    if (keep < inodes.blockCount(ino) && this.#mapped.get(ino)) {
      throw new GuestmemfsError('EBUSY', `file is mapped, ftruncate '${path}': unmap it before shrinking (its blocks would be freed under the mapping)`, {
        syscall: 'ftruncate',
        path,
      });
    }
    inodes.setSize(ino, size); // commit point
    if (keep < inodes.blockCount(ino)) {
      const cut = cutAfter(this.#extents.read(ino), keep);
      this.#allocator.markDirty(cut, true);
      this.#extents.truncate(ino, keep);
      this.#allocator.markFree(cut);
      inodes.setBlockCount(ino, keep);
    }
    const now = nowNs();
    inodes.setTime(ino, 'mtime', now);
    inodes.setTime(ino, 'ctime', now);
  }

  /** Visits the pool byte ranges behind [from, to) of a file. */
  #forEachRange(ino: number, from: number, to: number, visit: (poolOffset: number, fileOffset: number, length: number) => void): void {
    const blockSize = this.geometry.blockSize;
    let fileOffset = 0;
    for (const run of this.#extents.read(ino)) {
      const runBytes = run.length * blockSize;
      const start = Math.max(from, fileOffset);
      const end = Math.min(to, fileOffset + runBytes);
      if (start < end) visit(run.start * blockSize + (start - fileOffset), start, end - start);
      fileOffset += runBytes;
      if (fileOffset >= to) break;
    }
  }

  #zeroFileRange(ino: number, from: number, to: number): void {
    this.#forEachRange(ino, from, to, (poolOffset, _fileOffset, length) => native.zero(this.#dataMapping().id, poolOffset, length));
  }

  #copy(ino: number, position: number, buffer: Uint8Array, direction: 'read' | 'write'): void {
    const end = position + buffer.length;
    this.#forEachRange(ino, position, end, (poolOffset, fileOffset, length) => {
      const window = this.#dataMapping().bytes(poolOffset, length);
      const slice = buffer.subarray(fileOffset - position, fileOffset - position + length);
      if (direction === 'read') slice.set(window);
      else window.set(slice);
    });
  }

  #stat(ino: number): Stat {
    const inodes = this.#inodes;
    const isDir = inodes.type(ino) === InodeType.Directory;
    return {
      ino,
      generation: inodes.generation(ino),
      type: isDir ? 'directory' : 'file',
      fileType: isDir ? undefined : FILE_TYPE_NAMES[inodes.fileType(ino)],
      size: inodes.size(ino),
      blocks: inodes.blockCount(ino),
      blockSize: this.geometry.blockSize,
      extents: inodes.extentCount(ino),
      mode: inodes.mode(ino),
      uid: inodes.uid(ino),
      gid: inodes.gid(ino),
      nlink: inodes.nlink(ino),
      atimeNs: inodes.time(ino, 'atime'),
      mtimeNs: inodes.time(ino, 'mtime'),
      ctimeNs: inodes.time(ino, 'ctime'),
      birthtimeNs: inodes.time(ino, 'btime'),
    };
  }
}

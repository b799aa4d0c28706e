// The Filesystem facade: one mounted pool's operations, each delegated to the module that owns it (namespace,
// attributes, data path, handover life cycle), with the state of the mount kept in its MountContext.
import type { HandoverVersion } from '../handover/blob';
import type { Mapping, ProgressOptions } from '../pool/mapping';
import { overlaps, type PinHolder } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { chmod, chown, statfs, statInode, utimes } from './attributes';
import { type AuditReport, auditMetadata } from './audit';
import { resize, resizeAsync, resizeLimits, type ResizeOptions, type ResizeResult } from './resize';
import { quarantine, type QuarantineResult } from './badblocks';
import type { MountContext } from './context';
import * as data from './data';
import type { Geometry, Superblock } from './layout';
import * as lifecycle from './lifecycle';
import * as memfile from './memfile';
import type { NotifierConsumer } from './notifier';
import { resolve } from './names';
import * as namespace from './namespace';
import { type Credentials, R_OK, W_OK } from './permissions';
import * as quota from './quota';
import type { QuotaReport, QuotaTarget } from './quota';
import type {
  CreateOptions,
  DirEntry,
  FileMapOptions,
  KexecOptions,
  MappableFile,
  MkdirOptions,
  Recovery,
  Restore,
  SerialiseResult,
  Stat,
  StatFs,
} from './types';

const contexts = new WeakMap<Filesystem, MountContext>();

/** @internal The state behind a Filesystem, for the modules of lib/fs that work on a mount they did not make. */
export function contextOf(filesystem: Filesystem): MountContext {
  return contexts.get(filesystem)!;
}

export class Filesystem {
  readonly #ctx: MountContext;
  /** Set when this mount recovered a pool whose previous owner died while it was mounted. */
  readonly recovery: Recovery | undefined;
  /** Set when this mount adopted a handover (the previous owner serialised and handed the pool over). */
  readonly restored: Restore | undefined;

  /** @internal Use mount(). */
  constructor(ctx: MountContext, outcome: { recovery?: Recovery; restored?: Restore }) {
    this.#ctx = ctx;
    this.recovery = outcome.recovery;
    this.restored = outcome.restored;
    contexts.set(this, ctx);
  }

  get pool(): Pool {
    return this.#ctx.pool;
  }

  get geometry(): Geometry {
    return this.#ctx.geometry;
  }

  get uuid(): string {
    return this.#ctx.uuid;
  }

  /** The credentials permission checks use (from mount options, else this process's). */
  get credentials(): Credentials {
    return this.#ctx.credentials;
  }

  /** True between serialise() and abort(): metadata cannot change, data and mappings keep working. */
  get serialised(): boolean {
    return this.#ctx.frozenAt !== undefined;
  }

  get mounted(): boolean {
    return this.#ctx.mounted;
  }

  /** True for a read-only view (mount with { readOnly: true }). */
  get readOnly(): boolean {
    return this.#ctx.readOnly;
  }

  /** Superblock fields as last written (state, owner, generation...). */
  get superblock(): Readonly<Superblock> {
    return this.#ctx.superblock;
  }

  /**
   * Runs `operation` on this filesystem with another caller's credentials: what the mount service does with each
   * client's SO_PEERCRED. Only the synchronous part of the operation sees them, which is where permissions are
   * checked; an asynchronous truncate has made all its checks by the time it returns its promise.
   */
  actingAs<T>(credentials: Credentials, operation: () => T): T {
    return this.#ctx.actingAs(credentials, operation);
  }

  // ---------------------------------------------------------------- namespace

  /** Creates an empty file of the given type. */
  create(path: string, options: CreateOptions = {}): Stat {
    return this.#thenReclaim(statInode(this.#ctx, namespace.create(this.#ctx, path, options)));
  }

  mkdir(path: string, options: MkdirOptions = {}): Stat {
    return this.#thenReclaim(statInode(this.#ctx, namespace.mkdir(this.#ctx, path, options)));
  }

  /** The inode number at path (following '..'), checking search permission on every directory on the way. */
  lookup(path: string): number {
    this.#ctx.requireMounted('lookup');
    return resolve(this.#ctx, path, 'lookup');
  }

  exists(path: string): boolean {
    try {
      this.lookup(path);
      return true;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw error;
    }
  }

  stat(path: string): Stat {
    this.#ctx.requireMounted('stat');
    return statInode(this.#ctx, resolve(this.#ctx, path, 'stat'));
  }

  /** Names in a directory, in the order of its entry list (newest first). */
  readdir(path: string): string[] {
    return this.readdirEntries(path).map((entry) => entry.name);
  }

  readdirEntries(path: string): DirEntry[] {
    return namespace.readdirEntries(this.#ctx, path);
  }

  /** Removes a file's name; its blocks are freed now, or when its last mapping in this process goes. */
  unlink(path: string): void {
    this.#thenReclaim(namespace.unlink(this.#ctx, path));
  }

  rmdir(path: string): void {
    namespace.rmdir(this.#ctx, path);
  }

  /**
   * Moves `from` to `to` with POSIX rules: an existing file `to` is replaced by a file, an existing empty directory by
   * a directory; a directory cannot move into itself. The intent record makes it atomic across a kill.
   */
  rename(from: string, to: string): void {
    this.#thenReclaim(namespace.rename(this.#ctx, from, to));
  }

  chmod(path: string, mode: number): void {
    chmod(this.#ctx, path, mode);
  }

  /** Changes owner and/or group (-1 or undefined keeps one); only root may, as on Linux without CAP_CHOWN. */
  chown(path: string, uid: number | undefined, gid: number | undefined): void {
    chown(this.#ctx, path, uid, gid);
  }

  /** Sets access and modification times, in nanoseconds since the epoch. */
  utimes(path: string, atimeNs: bigint, mtimeNs: bigint): void {
    utimes(this.#ctx, path, atimeNs, mtimeNs);
  }

  // ---------------------------------------------------------------- quotas

  /**
   * Sets a block limit for a uid or a directory tree, or removes it with null (root only). The limit is kept in the
   * pool, rounded down to whole blocks; allocations past it fail with EDQUOT.
   */
  setQuota(target: QuotaTarget, limitBytes: number | null): void {
    quota.setQuota(this.#ctx, target, limitBytes);
  }

  /** Every block limit with its current usage. */
  quotas(): QuotaReport[] {
    this.#ctx.requireMounted('quotactl');
    return quota.quotaReport(this.#ctx);
  }

  /**
   * Quarantines a block (root only; `guestmemfs badblock`): it is never allocated again, and a file holding it keeps
   * it and is flagged (stat's quarantinedBlocks). Memory failure cannot be detected here, so this is its entry point.
   */
  quarantineBlock(block: number): QuarantineResult {
    return quarantine(this.#ctx, block);
  }

  /** The quarantined blocks, ascending (the superblock's bad-block list). */
  badBlocks(): number[] {
    this.#ctx.requireMounted('badblock');
    return [...this.#ctx.superblock.badBlocks];
  }

  /**
   * Grows the pool into more memory (reserved and allocated now, up to the maxSize it was formatted for) or gives the
   * free blocks at its end back to the kernel (root only). Works while files are mapped or pinned; crash-safe: a kill
   * part-way is recovered by the next mount. EBUSY names what holds the end of the pool when it cannot shrink that far.
   */
  resize(size: number, options: ResizeOptions = {}): ResizeResult {
    return resize(this.#ctx, size, options);
  }

  /**
   * resize(), with a grow's new pages allocated off the JS thread, so a mount service answers other calls meanwhile
   * (a grow by 64 GiB takes seconds). Until it settles, another resize, serialise and unmount fail with EBUSY.
   */
  resizeAsync(size: number, options: ResizeOptions = {}): Promise<ResizeResult> {
    return resizeAsync(this.#ctx, size, options);
  }

  /** The sizes resize() accepts now: from just past the last block in use up to the pool's capacity. */
  resizeLimits(): { minSize: number; maxSize: number } {
    this.#ctx.requireMounted('resize');
    return resizeLimits(this.#ctx.views);
  }

  // ---------------------------------------------------------------- data

  /**
   * Sets a file's size. Growing allocates blocks (one contiguous run when the pool has one) and zeroes any that held
   * old bytes; shrinking frees whole blocks past the end. On ENOSPC nothing changes.
   */
  truncate(path: string, size: number): void {
    this.#thenReclaim(data.truncate(this.#ctx, path, size));
  }

  /** truncate() with the zeroing done off the JS thread, reporting progress; the file is busy until it settles. */
  truncateAsync(path: string, size: number, options: ProgressOptions = {}): Promise<void> {
    return data.truncateAsync(this.#ctx, path, size, options).then((result) => this.#thenReclaim(result));
  }

  /**
   * Maps a file's blocks into one contiguous range (pre-faulted by default, as guestmemfs does). Guest files are
   * always mapped MADV_DONTDUMP and MADV_DONTFORK. The file cannot shrink below a live mapping.
   */
  /**
   * Registers a consumer of the file's memory (memfile_register_notifier): it is told invalidate(start, end) before a
   * shrink, a punch or the release of the unlinked file takes any of it, and may look up frames with getPfn().
   * `flags` are MEMFILE_F_* bits; see README "Consumers of a file's memory" for what each means here.
   */
  registerNotifier(path: string, consumer: NotifierConsumer, flags = 0): memfile.MemfileNotifier {
    const registration = memfile.registerNotifier(this.#ctx, path, consumer, flags);
    return new memfile.MemfileNotifier(this.#ctx, registration, path);
  }

  /**
   * Discards [offset, offset + length) of a file (fallocate PUNCH_HOLE with KEEP_SIZE; whole blocks): it reads as
   * zeros after, its consumers are told first, and it is refused with EBUSY while mapped.
   */
  punch(path: string, offset: number, length: number): void {
    memfile.punch(this.#ctx, path, offset, length);
  }

  /** punch(), waiting for consumers in other processes to acknowledge the invalidation. */
  punchAsync(path: string, offset: number, length: number): Promise<void> {
    return memfile.punchAsync(this.#ctx, path, offset, length);
  }

  map(path: string, options: FileMapOptions = {}): Mapping {
    return data.map(this.#ctx, path, options);
  }

  /** Reads up to `length` bytes from `position` of a state or plain file (guest files are mmap-only). */
  read(path: string, position = 0, length?: number): Uint8Array {
    return data.read(this.#ctx, path, position, length);
  }

  /** Writes bytes at `position` of a state or plain file, growing it as needed; returns the bytes written. */
  write(path: string, bytes: Uint8Array, position = 0): number {
    return this.#thenReclaim(data.write(this.#ctx, path, bytes, position));
  }

  /** Zeroes free blocks that still hold old bytes, off the JS thread, so later allocations need no zeroing. */
  scrub(options: ProgressOptions = {}): Promise<number> {
    return data.scrub(this.#ctx, options);
  }

  statfs(): StatFs {
    return statfs(this.#ctx);
  }

  /** Recomputes all derived metadata from the primary state and lists every disagreement (empty when consistent). */
  audit(): AuditReport {
    this.#ctx.requireMounted('audit');
    return auditMetadata(this.#ctx.views);
  }

  /**
   * What another process needs to map a file itself (a client of the mount service), checked as map() checks: a file
   * with blocks that the caller may read, and write unless `writable` is false.
   */
  mappable(path: string, options: { writable?: boolean } = {}): MappableFile {
    this.#ctx.requireMounted('mmap');
    const { ino, extents, guest } = data.mappableFile(this.#ctx, path, options.writable === false ? R_OK : R_OK | W_OK, false);
    return { ino, generation: this.#ctx.inodes.generation(ino), size: this.#ctx.inodes.size(ino), guest, extents };
  }

  /** Pool byte ranges holding a file's blocks, in file order. */
  extents(path: string): Array<{ offset: number; length: number }> {
    this.#ctx.requireMounted('extents');
    return this.#ctx.fileRanges(resolve(this.#ctx, path, 'extents'));
  }

  /**
   * Frees every unlinked file whose last pin has gone (a process that mapped it exited or unmapped it); returns how
   * many. Every operation that changes the namespace or a file's size does this after it succeeds.
   */
  reclaim(): number {
    this.#ctx.requireMounted('reclaim');
    return namespace.reclaimOrphans(this.#ctx);
  }

  /**
   * The pins over a file's blocks (or over the whole pool without a path): ranges of the pool and the pids holding
   * them, this process's own mappings included.
   */
  pins(path?: string): PinHolder[] {
    this.#ctx.requireMounted('pins');
    return this.#ctx.pinHolders(path === undefined ? undefined : this.#ctx.fileRanges(resolve(this.#ctx, path, 'pins')));
  }

  /** Unlinked files still held by a pin, with their inode, blocks and pinners: memory that comes back when they let go. */
  pinnedOrphans(): Array<{ ino: number; blocks: number; pins: PinHolder[] }> {
    this.#ctx.requireMounted('pins');
    if (this.#ctx.orphans.size === 0) return [];
    // One look through /proc for all of them: each pinHolders() call reads every process's fdinfo.
    const holders = this.#ctx.pinHolders();
    return [...this.#ctx.orphans].map((ino) => {
      const ranges = this.#ctx.fileRanges(ino);
      return { ino, blocks: this.#ctx.inodes.blockCount(ino), pins: holders.filter((holder) => overlaps(holder, ranges)) };
    });
  }

  /**
   * Marks the pool cleanly unmounted and releases it. Refuses (EBUSY) while this process still maps files from it or
   * has asynchronous work in flight, as umount refuses a busy filesystem.
   */
  unmount(): void {
    lifecycle.unmount(this.#ctx);
  }

  #thenReclaim<T>(result: T): T {
    namespace.reclaimOrphans(this.#ctx);
    return result;
  }

  // ---------------------------------------------------------------- handover

  /**
   * Serialises the metadata's description into a handover blob (an FDT) in the pool's handover area and freezes
   * the filesystem: every operation that would change metadata fails with EBUSY until abort(). Reads, stat,
   * readdir and mapping keep working. Serialising again returns the same blob. The blob is handover version 2
   * unless `handoverVersion: 1` asks for the version a release before 2 reads (to hand over to it, as a rollback).
   */
  serialise(options: { out?: string; handoverVersion?: HandoverVersion } = {}): SerialiseResult {
    return lifecycle.serialise(this.#ctx, options);
  }

  /** Lifts the freeze of serialise() (the RFC's KEXEC_KHO_ABORT): the blob becomes stale and changes are allowed again. */
  abort(): void {
    lifecycle.abort(this.#ctx);
  }

  /**
   * Serialises, then replaces this process with `argv` through execve (same PID). A memfd pool's fd is kept open and
   * its number passed in GUESTMEMFS_POOL_FD (as QEMU's cpr-exec does); a path pool's path goes in GUESTMEMFS_POOL.
   * Everything else the new program needs is in the handover blob. Returns only by throwing: if execve fails, the
   * serialisation is aborted and the filesystem keeps working here.
   */
  kexec(argv: readonly string[], options: KexecOptions = {}): never {
    return lifecycle.kexec(this.#ctx, argv, options);
  }
}

// What one mount of a pool holds (its metadata views, the volatile name index, live mappings, the freeze of a
// handover) and the checks every operation starts with. The namespace, data and handover modules work on it.
import { GuestmemfsError } from '../errors';
import type { Extent, Mapping } from '../pool/mapping';
import { isPinned, pinHolders, type PinHolder } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { nowNs } from '../units';
import { InodeType } from './inodes';
import { type Geometry, type Superblock, writeSuperblockSlot } from './layout';
import { NameIndex } from './name-index';
import { NotifierRegistry } from './notifier';
import { describeWant, permits, type Credentials } from './permissions';
import { markMountedHere, unlock } from './registry';
import { blockRange } from './runs';
import type { MetadataViews } from './views';

/** The key in MountContext.busy that stands for the pool itself (no inode is numbered 0): a resize in flight. */
export const POOL_BUSY = 0;

export class MountContext {
  readonly pool: Pool;
  readonly views: MetadataViews;
  readonly geometry: Geometry;
  readonly uuid: string;
  #credentials: Credentials;
  readonly readOnly: boolean;
  /** The pool's identity (device:inode), as the registry of this process's mounts knows it. */
  readonly key: string;
  /** The metadata region, mapped for the life of the mount (none for a read-only view, which works on a snapshot). */
  readonly meta: Mapping | undefined;
  superblock: Superblock;
  /** The generation this filesystem was serialised at, while frozen for handover. */
  frozenAt: bigint | undefined;
  mounted = true;
  readonly names: NameIndex;
  /** Unlinked inodes some process still maps (here, or pinned elsewhere): live, but in no directory. */
  readonly orphans = new Set<number>();
  /** Live mappings per inode in this process. */
  readonly mapped = new Map<number, number>();
  /** Inodes with asynchronous work in flight (POOL_BUSY: the pool itself, growing). */
  readonly busy = new Set<number>();
  /** The consumers of files' memory (the memfile notifier), volatile like the name index. */
  readonly notifiers = new NotifierRegistry();
  /** GiBs of files that got 2 MiB blocks because no 1 GiB page was free (a hybrid pool's fallbacks, since mount). */
  largeFallbacks = 0;
  #handoverWindow: Uint8Array | undefined;
  /** The whole pool, mapped on first data access (zeroing, read, write): a restore never needs it. */
  #data: Mapping | undefined;
  /** Mappings of the whole pool from before it grew, unmapped once no asynchronous work can be using them. */
  readonly #retired: Mapping[] = [];

  constructor(
    pool: Pool,
    views: MetadataViews,
    sb: Superblock,
    credentials: Credentials,
    key: string,
    readOnly: boolean,
    meta: Mapping | undefined,
  ) {
    this.pool = pool;
    this.views = views;
    this.names = new NameIndex(views.inodes);
    this.geometry = sb.geometry;
    this.uuid = sb.uuid;
    this.#credentials = credentials;
    this.key = key;
    this.readOnly = readOnly;
    this.meta = meta;
    this.superblock = sb;
  }

  /** The credentials permission checks use: the mount's (from its options, else this process's), or a caller's. */
  get credentials(): Credentials {
    return this.#credentials;
  }

  /**
   * Runs `operation` with a caller's credentials (a service client's, from SO_PEERCRED). Only its synchronous part
   * sees them, which is where every operation checks permissions, an asynchronous truncate included.
   */
  actingAs<T>(credentials: Credentials, operation: () => T): T {
    const previous = this.#credentials;
    this.#credentials = credentials;
    try {
      return operation();
    } finally {
      this.#credentials = previous;
    }
  }

  get inodes() {
    return this.views.inodes;
  }

  /** The handover area, where serialise() writes the blob. */
  handoverArea(): Uint8Array {
    this.#handoverWindow ??= this.views.source.window(this.geometry.handoverOffset, this.geometry.handoverLength);
    return this.#handoverWindow;
  }

  dataMapping(): Mapping {
    // The pool grew since it was mapped: a zeroing in flight may still be using the old mapping.
    if (this.#data && this.#data.length < this.pool.size) {
      this.#retired.push(this.#data);
      this.#data = undefined;
      this.#unmapRetired();
    }
    this.#data ??= this.pool.mapAll({ populate: false, dontDump: true, dontFork: true, writable: !this.readOnly });
    return this.#data;
  }

  /** Lets go of every mapping of the whole pool: a shrink, or the end of the mount, with nothing in flight. */
  dropDataMapping(): void {
    this.#data?.unmap();
    this.#data = undefined;
    for (const mapping of this.#retired.splice(0)) mapping.unmap();
  }

  /** Ends an inode's (or the pool's) asynchronous work. */
  endBusy(ino: number): void {
    this.busy.delete(ino);
    this.#unmapRetired();
  }

  #unmapRetired(): void {
    if (this.busy.size === 0) for (const mapping of this.#retired.splice(0)) mapping.unmap();
  }

  writeSuperblock(changes: Partial<Superblock>): void {
    const next = { ...this.superblock, ...changes, sequence: this.superblock.sequence + 1n };
    // Overwrite the copy that is not the newest: a kill mid-write leaves the newest one intact.
    const slot = 1 - this.superblock.slot;
    writeSuperblockSlot(this.views.header, slot, next);
    this.superblock = { ...next, slot };
  }

  /** Ends the mount: unmaps the metadata and data, forgets the pool, lets go of the lock (a view holds none). */
  release(): void {
    this.mounted = false;
    this.dropDataMapping();
    this.names.release();
    if (this.readOnly) return;
    this.meta?.unmap();
    markMountedHere(this.key, false);
    unlock(this.pool);
  }

  liveMappingCount(): number {
    let total = 0;
    for (const count of this.mapped.values()) total += count;
    return total;
  }

  /** A file's blocks as pool byte ranges, in file order. */
  fileRanges(ino: number): Extent[] {
    return this.views.extents.read(ino).map((run) => blockRange(this.geometry, run));
  }

  /** Whether any process (this one's own mappings included) pins part of the ranges. */
  pinned(ranges: readonly Extent[]): boolean {
    return ranges.length > 0 && isPinned(this.pool, ranges);
  }

  /**
   * Whether anyone maps these ranges of inode `ino`: a mapping of it in this process (which the kernel's pins cannot
   * tell from the mount's own), or a pin any process holds over them. What must not be freed, zeroed or reused.
   */
  inUse(ino: number, ranges: readonly Extent[]): boolean {
    return (this.mapped.get(ino) ?? 0) > 0 || this.pinned(ranges);
  }

  /** Who pins the ranges (all of the pool when none are given): for messages and listings. */
  pinHolders(ranges?: readonly Extent[]): PinHolder[] {
    return pinHolders(this.pool, ranges);
  }

  /** Access times are metadata too: a serialised filesystem must not change under its blob's checksum. */
  touchAtime(ino: number): void {
    if (this.frozenAt === undefined && !this.readOnly) this.views.inodes.setTime(ino, 'atime', nowNs());
  }

  // ---------------------------------------------------------------- checks

  requireMounted(syscall: string): void {
    if (!this.mounted)
      throw new GuestmemfsError('EINVAL', `the filesystem was unmounted; mount the pool again, ${syscall}`, {
        syscall,
        path: this.pool.label,
      });
  }

  requireNotReadOnly(syscall: string): void {
    if (this.readOnly) {
      throw new GuestmemfsError('EROFS', `this is a read-only view of the pool, ${syscall}: mount it normally to change it`, {
        syscall,
        path: this.pool.label,
      });
    }
  }

  /** Mounted, writable and not frozen for a handover: what every metadata change needs. */
  requireWritable(syscall: string): void {
    this.requireMounted(syscall);
    this.requireNotReadOnly(syscall);
    if (this.frozenAt !== undefined) {
      throw new GuestmemfsError(
        'EBUSY',
        `the filesystem is serialised for handover (generation ${this.frozenAt}), ${syscall}: abort() the handover to change it again`,
        { syscall, path: this.pool.label },
      );
    }
  }

  /** Only root may (set quota limits, quarantine memory): as the kernel asks CAP_SYS_ADMIN for either. */
  requireRoot(syscall: string, path: string, what: string): void {
    if (this.credentials.uid === 0) return;
    throw new GuestmemfsError('EPERM', `operation not permitted, ${syscall} '${path}': only root (uid 0) may ${what}`, { syscall, path });
  }

  requireNotBusy(ino: number, syscall: string, path: string): void {
    if (this.busy.has(ino)) {
      throw new GuestmemfsError('EBUSY', `an asynchronous truncate of this file is in flight, ${syscall} '${path}': await it first`, {
        syscall,
        path,
      });
    }
  }

  requireAccess(ino: number, want: number, syscall: string, path: string): void {
    const inodes = this.views.inodes;
    const owner = { mode: inodes.mode(ino), uid: inodes.uid(ino), gid: inodes.gid(ino) };
    if (permits(owner, this.credentials, want, inodes.type(ino) === InodeType.Directory)) return;
    throw new GuestmemfsError(
      'EACCES',
      `permission denied, ${syscall} '${path}': uid ${this.credentials.uid} lacks ${describeWant(want)} permission on inode ${ino} ` +
        `(mode ${owner.mode.toString(8).padStart(4, '0')}, owner ${owner.uid}:${owner.gid}); ` +
        `chmod/chown it or mount with other credentials`,
      { syscall, path },
    );
  }

  /**
   * The sticky bit (as on /tmp): in a directory with mode 01000 only the entry's owner, the directory's owner or root
   * may remove or rename the entry.
   */
  requireMayRemove(dir: number, ino: number, syscall: string, path: string): void {
    const inodes = this.views.inodes;
    if (!(inodes.mode(dir) & 0o1000)) return;
    const uid = this.credentials.uid;
    if (uid === 0 || uid === inodes.uid(ino) || uid === inodes.uid(dir)) return;
    throw new GuestmemfsError(
      'EPERM',
      `operation not permitted, ${syscall} '${path}': the directory is sticky (mode ${inodes.mode(dir).toString(8).padStart(4, '0')}), ` +
        `so only the entry's owner (uid ${inodes.uid(ino)}), the directory's owner (uid ${inodes.uid(dir)}) or root may`,
      { syscall, path },
    );
  }

  requireOwner(ino: number, syscall: string, path: string): void {
    const uid = this.views.inodes.uid(ino);
    if (this.credentials.uid === 0 || this.credentials.uid === uid) return;
    throw new GuestmemfsError('EPERM', `operation not permitted, ${syscall} '${path}': only the owner (uid ${uid}) or root may`, {
      syscall,
      path,
    });
  }

  requireFile(ino: number, syscall: string, path: string): void {
    if (this.views.inodes.type(ino) !== InodeType.File)
      throw new GuestmemfsError('EISDIR', `is a directory, ${syscall} '${path}'`, { syscall, path });
  }
}

export function checkMode(mode: number, syscall: string, path: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new GuestmemfsError('EINVAL', `mode ${mode} must be permission bits between 0 and 07777`, { syscall, path });
  }
  return mode;
}

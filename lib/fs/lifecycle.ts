// How a mount ends: unmount, or a handover (serialise, abort, kexec), and the checks a handover blob must pass to be
// adopted, which mount and the checker share.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from '../checksum';
import { GuestmemfsError } from '../errors';
import {
  buildHandoverBlob,
  type BlobLayout,
  type HandoverDescription,
  HANDOVER_VERSION,
  HANDOVER_VERSIONS,
  type HandoverVersion,
  isHandoverVersion,
  type LiveMetadata,
  POOL_FD_ENV,
  POOL_LARGE_FD_ENV,
  POOL_PATH_ENV,
} from '../handover/blob';
import { type RestoreExpectations, verifyHandoverBlob } from '../handover/blob-verify';
import { native } from '../native';
import type { Pool } from '../pool/pool';
import { EXEC_HOLDER_ENV, resolveExecutable } from '../process';
import { elapsedMs } from '../units';
import type { MountContext } from './context';
import { InodeType } from './inodes';
import {
  EXTENT_PAGE_SIZE,
  FIXED_HEADER_BYTES,
  FORMAT_MAJOR,
  FORMAT_MINOR,
  type Geometry,
  INODE_SIZE,
  INTENT_OFFSET,
  numaNodeOf,
  PoolState,
  ROOT_INO,
  type Superblock,
} from './layout';
import { reclaimOrphans } from './namespace';
import { tryLock, unlock } from './registry';
import type { KexecOptions, SerialiseResult } from './types';
import type { MetadataViews } from './views';

/** The pool format, as the handover blob describes it. */
export function blobLayout(g: Geometry): BlobLayout {
  return {
    formatVersion: [FORMAT_MAJOR, FORMAT_MINOR],
    blockSize: g.blockSize,
    blockCount: g.blockCount,
    maxBlockCount: g.maxBlockCount,
    inodeCount: g.inodeCount,
    inodeSize: INODE_SIZE,
    extentPageCount: g.extentPageCount,
    extentPageSize: EXTENT_PAGE_SIZE,
    extentOffset: g.extentOffset,
    metadataBlocks: g.metadataBlocks,
    metadataBytes: g.metadataBytes,
    regions: [
      [0, FIXED_HEADER_BYTES],
      [g.bitmapOffset, g.bitmapLength],
      [g.dirtyOffset, g.bitmapLength],
      [g.inodeOffset, g.inodeCount * INODE_SIZE],
      [g.extentOffset, g.extentPageCount * EXTENT_PAGE_SIZE],
      [g.handoverOffset, g.handoverLength],
    ],
  };
}

function liveMetadata(views: MetadataViews): LiveMetadata {
  return {
    checkedHeader: views.header.subarray(INTENT_OFFSET, FIXED_HEADER_BYTES),
    bitmaps: views.allocator.bitmapBytes(),
    inodeRecords: (first, count) => views.inodes.records(first, count),
    recordHash: (liveInodes, serialising) => views.inodes.scanInUse(liveInodes, undefined, undefined, serialising),
    pageRecords: (first, count) => views.extents.pageRecords(first, count),
  };
}

/** The superblock's NUMA node, as the blob carries it: only for a pool bound to one. */
function boundNode(sb: Superblock): { numaNode?: number } {
  const node = numaNodeOf(sb);
  return node === undefined ? {} : { numaNode: node };
}

/**
 * What a blob must match to be adopted: this pool, this superblock, and these metadata views. With `recordsLater` the
 * caller checks the listed records itself, in the pass it reads them in anyway (a restore's index): that each is in
 * use, and their record hash (requireRecordHash).
 */
export function restoreExpectations(views: MetadataViews, sb: Superblock, pool: Pool, recordsLater = false): RestoreExpectations {
  return {
    layout: blobLayout(sb.geometry),
    uuid: sb.uuid,
    generation: sb.generation,
    pool: { size: pool.size, pageSize: pool.pageSize, label: pool.label, ...boundNode(sb), large: pool.large },
    metadata: liveMetadata(views),
    isLive: (ino) => views.inodes.type(ino) !== InodeType.Free,
    recordsLater,
    chainOf: (ino) => (views.inodes.isValidIno(ino) ? views.extents.chain(ino) : []),
    blobCrc: sb.handoverCrc,
    badBlocks: sb.badBlocks,
  };
}

/**
 * Checks the blob a serialised superblock names against the metadata it describes; throws (EUCLEAN and the check that
 * failed) when it cannot be adopted.
 */
export function verifyRecordedBlob(
  views: MetadataViews,
  sb: Superblock,
  pool: Pool,
  area: Uint8Array,
  fields: { syscall: string; path: string },
  recordsLater = false,
): HandoverDescription {
  if (sb.handoverBytes === 0 || sb.handoverBytes > area.length) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `handover refused (length): the superblock records a ${sb.handoverBytes}-byte blob in a ${area.length}-byte area; ` +
        `the pool was left untouched`,
      fields,
    );
  }
  if (sb.handoverGeneration !== sb.generation) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `handover refused (generation): the blob was made at generation ${sb.handoverGeneration}, the superblock is at ${sb.generation}; ` +
        `the pool was left untouched`,
      fields,
    );
  }
  return verifyHandoverBlob(area.subarray(0, sb.handoverBytes), restoreExpectations(views, sb, pool, recordsLater));
}

/**
 * Marks the pool cleanly unmounted and releases it. Refuses (EBUSY) while this process still maps files from it or
 * has asynchronous work in flight, as umount refuses a busy filesystem. A serialised pool stays serialised for the
 * next owner, and mappings here stay valid: nothing can change the metadata any more.
 */
export function unmount(ctx: MountContext): void {
  ctx.requireMounted('umount');
  if (ctx.readOnly || ctx.frozenAt !== undefined) return ctx.release();
  const mapped = ctx.liveMappingCount();
  if (mapped > 0) {
    throw new GuestmemfsError('EBUSY', `${mapped} file mapping(s) are still live: unmap them before unmounting`, {
      syscall: 'umount',
      path: ctx.pool.label,
    });
  }
  if (ctx.busy.size > 0) {
    throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before unmounting', {
      syscall: 'umount',
      path: ctx.pool.label,
    });
  }
  ctx.writeSuperblock({ state: PoolState.Clean, ownerPid: 0, ownerStartTime: 0n });
  ctx.release();
}

/** The handover version a serialise asked for: HANDOVER_VERSION unless given. */
function requestedVersion(version: unknown): HandoverVersion {
  if (version === undefined) return HANDOVER_VERSION;
  if (typeof version !== 'number') throw new TypeError(`handoverVersion must be a number, got ${typeof version}`);
  if (!isHandoverVersion(version)) throw new RangeError(`handoverVersion must be one of ${HANDOVER_VERSIONS.join(', ')}, got ${version}`);
  return version;
}

/**
 * Serialises the metadata's description into a handover blob (an FDT) in the pool's handover area and freezes the
 * filesystem until abort(). Serialising again returns the same blob. `handoverVersion` 1 is for a successor of a
 * release that reads only version 1 (a rollback).
 */
export function serialise(ctx: MountContext, options: { out?: string; handoverVersion?: HandoverVersion }): SerialiseResult {
  let version = requestedVersion(options.handoverVersion);
  ctx.requireMounted('serialise');
  ctx.requireNotReadOnly('serialise');
  const started = process.hrtime.bigint();
  const area = ctx.handoverArea();
  const fields = { syscall: 'serialise', path: ctx.pool.label };
  let blob: Uint8Array;
  let files: number;
  let mappingBlocks: number;
  if (ctx.frozenAt !== undefined) {
    blob = area.slice(0, ctx.superblock.handoverBytes);
    const description = verifyHandoverBlob(blob, restoreExpectations(ctx.views, ctx.superblock, ctx.pool));
    if (options.handoverVersion !== undefined && description.handoverVersion !== version) {
      throw new GuestmemfsError(
        'EBUSY',
        `the filesystem is serialised already, as handover version ${description.handoverVersion}: abort() first to ` +
          `serialise it as version ${version}`,
        fields,
      );
    }
    version = description.handoverVersion as HandoverVersion;
    files = description.liveInodes.length;
    mappingBlocks = description.mappingsBlocks.length;
  } else {
    if (ctx.busy.size > 0) throw new GuestmemfsError('EBUSY', 'asynchronous work is in flight: await it before serialising', fields);
    const live = ctx.names.sortedWith([ROOT_INO, ...ctx.orphans], ctx.inodes.count);
    const pages: number[] = [];
    const owners: number[] = [];
    const extents = ctx.views.extents;
    // Most files keep their extents inline: once every page in use is listed, the other records need not be read.
    let unlisted = extents.pageCount - 1 - extents.freePages;
    for (let index = 0; index < live.length && unlisted > 0; index++) {
      const ino = live[index]!;
      for (const page of extents.chain(ino)) {
        pages.push(page);
        owners.push(ino);
        unlisted--;
      }
    }
    const generation = ctx.superblock.generation + 1n;
    const pool = ctx.pool;
    blob = buildHandoverBlob({
      version,
      pool: {
        backend: pool.backend,
        path: pool.path,
        fd: pool.path === undefined ? pool.fd : undefined,
        size: pool.size,
        pageSize: pool.pageSize,
        ...boundNode(ctx.superblock),
        ...(pool.large
          ? {
              large: {
                offset: pool.large.from,
                size: pool.large.size,
                path: pool.large.path,
                fd: pool.large.path === undefined ? pool.large.fd : undefined,
              },
            }
          : {}),
      },
      layout: blobLayout(ctx.geometry),
      uuid: ctx.uuid,
      generation,
      metadata: liveMetadata(ctx.views),
      liveInodes: live,
      pages,
      pageOwners: owners,
      badBlocks: ctx.superblock.badBlocks,
    });
    if (blob.length > area.length) {
      throw new GuestmemfsError(
        'ENOSPC',
        `handover blob of ${blob.length} bytes does not fit the ${area.length}-byte handover area (${live.length} files, ` +
          `${pages.length} extent pages): delete files or mkfs with fewer, larger files`,
        fields,
      );
    }
    area.set(blob);
    // Commit point: the superblock names the blob, its checksum and generation, and says "serialised".
    ctx.writeSuperblock({
      state: PoolState.Serialised,
      generation,
      handoverBytes: blob.length,
      handoverCrc: crc32(blob),
      handoverGeneration: generation,
    });
    ctx.frozenAt = generation;
    files = live.length;
    mappingBlocks = pages.length;
  }
  const result: SerialiseResult = {
    generation: ctx.frozenAt,
    blob,
    files,
    mappingBlocks,
    handoverVersion: version,
    ms: elapsedMs(started),
  };
  if (options.out) {
    // Written as a file of the caller's choosing: only its owner can read the pool's layout from it.
    fs.writeFileSync(options.out, blob, { mode: 0o600 });
    result.out = path.resolve(options.out);
  }
  return result;
}

/** Lifts the freeze of serialise() (the RFC's KEXEC_KHO_ABORT): the blob becomes stale and changes are allowed again. */
export function abort(ctx: MountContext): void {
  ctx.requireMounted('abort');
  ctx.requireNotReadOnly('abort');
  if (ctx.frozenAt === undefined) {
    throw new GuestmemfsError('EINVAL', 'the filesystem is not serialised: nothing to abort', { syscall: 'abort', path: ctx.pool.label });
  }
  ctx.writeSuperblock({ state: PoolState.Mounted, handoverBytes: 0, handoverCrc: 0 });
  ctx.frozenAt = undefined;
  // Orphans kept while frozen (a mount that kept a handover serialised) whose mapping process is gone go now.
  reclaimOrphans(ctx);
}

/**
 * Serialises, then replaces this process with `argv` through execve (same PID). A memfd pool's fd is kept open and its
 * number passed in GUESTMEMFS_POOL_FD (as QEMU's cpr-exec does); a path pool's path goes in GUESTMEMFS_POOL. Returns
 * only by throwing: if execve fails, the serialisation is aborted and the filesystem keeps working here.
 */
export function kexec(ctx: MountContext, argv: readonly string[], options: KexecOptions): never {
  ctx.requireMounted('execve');
  ctx.requireNotReadOnly('execve');
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((arg) => typeof arg === 'string')) {
    throw new GuestmemfsError('EINVAL', 'kexec needs argv: a non-empty array of strings (program first)', { syscall: 'execve' });
  }
  if (!(options.keepFds ?? []).every((fd) => Number.isInteger(fd) && fd > 2)) {
    throw new GuestmemfsError('EINVAL', 'kexec keepFds must be fd numbers above stdio', { syscall: 'execve' });
  }
  if (options.deferTeardown !== undefined && typeof options.deferTeardown !== 'boolean') {
    throw new GuestmemfsError('EINVAL', 'kexec deferTeardown must be true or false', { syscall: 'execve' });
  }
  const deferTeardown = options.deferTeardown === true;
  const file = resolveExecutable(argv[0]!);
  const wasFrozen = ctx.frozenAt !== undefined;
  // A pool serialised already is frozen: nothing could change its metadata since, and the mount after execve verifies
  // the blob against it anyway. Verifying here too would only lengthen a caller's blackout (0.4 ms warm, 2.6 cold).
  if (!wasFrozen) serialise(ctx, {});
  const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env) };
  delete env[POOL_FD_ENV];
  delete env[POOL_LARGE_FD_ENV];
  delete env[POOL_PATH_ENV];
  delete env[EXEC_HOLDER_ENV];
  // Exactly the pool's fd and the caller's survive (a path pool is found again by path; its fd and lock go with the exec).
  const keepFds: number[] = [...(options.keepFds ?? [])];
  if (ctx.pool.path === undefined) {
    keepFds.push(ctx.pool.fd);
    env[POOL_FD_ENV] = String(ctx.pool.fd);
    if (ctx.pool.large) {
      keepFds.push(ctx.pool.large.fd);
      env[POOL_LARGE_FD_ENV] = String(ctx.pool.large.fd);
    }
  } else {
    env[POOL_PATH_ENV] = ctx.pool.path;
  }
  const envList = Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([key, value]) => `${key}=${value}`);
  // A path pool's mount lock is on the description of its fd, which the exec closes; but with a deferred teardown the
  // old image's mappings of the pool keep that description, and so the lock, until the new program lets the holder
  // go, after it has mounted. So the lock goes now, as the exec would have let it go (the pool is frozen meanwhile).
  const unlocked = deferTeardown && ctx.pool.path !== undefined;
  if (unlocked) unlock(ctx.pool);
  try {
    native.processExec(file, [...argv], envList, keepFds, deferTeardown ? EXEC_HOLDER_ENV : undefined);
  } catch (error) {
    if (unlocked && !tryLock(ctx.pool)) {
      // Someone mounted the pool from its handover meanwhile: this process must not change it any more, and frozen
      // it cannot.
      throw GuestmemfsError.from(error).withRemedy('another process has mounted the handover since: this mount stays frozen; exit');
    }
    if (wasFrozen) {
      // The caller serialised before calling kexec: undoing that is the caller's decision.
      throw GuestmemfsError.from(error).withRemedy('this process keeps the filesystem, still serialised: abort() to change it again');
    }
    abort(ctx);
    throw GuestmemfsError.from(error).withRemedy('the handover was aborted and this process keeps the filesystem');
  }
  throw new GuestmemfsError('EIO', 'execve returned without an error', { syscall: 'execve' });
}

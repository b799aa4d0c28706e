// Formatting a pool (mkfs) and reading its superblock: the two things that need only the fixed header.
import { GuestmemfsError } from '../errors';
import { describeHolders, isPinned, pinHolders } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { MiB, nowNs } from '../units';
import { InodeType } from './inodes';
import {
  COMPAT_NUMA_NODE,
  computeGeometry,
  defaultInodeCount,
  FIXED_HEADER_BYTES,
  FORMAT_MAJOR,
  FORMAT_MINOR,
  hasMagic,
  INCOMPAT_HYBRID,
  INCOMPAT_RESIZABLE,
  newUuid,
  PoolState,
  readSuperblock,
  RO_COMPAT_BADBLOCKS,
  ROOT_INO,
  type Geometry,
  type Superblock,
  writeSuperblockSlot,
} from './layout';
import { MAX_BAD_BLOCKS } from './bad-block-list';
import { attachRecordedLarge, writeLargeRecord } from './large-region';
import { BufferMetadata } from './metadata';
import { lockOrExplain, poolKey, requireNotMountedHere, unlock } from './registry';
import type { FormatInfo, MkfsOptions } from './types';
import { openViews } from './views';

function defaultBlockSize(pool: Pool): number {
  return pool.isFallback ? 2 * MiB : pool.pageSize;
}

export function requireHeaderRoom(pool: Pool, syscall: string): void {
  if (pool.size < FIXED_HEADER_BYTES) {
    throw new GuestmemfsError('EINVAL', `pool of ${pool.size} bytes is too small to hold a guestmemfs filesystem`, {
      syscall,
      path: pool.label,
    });
  }
}

/** The bytes [0, FIXED_HEADER_BYTES) of a pool, copied out of a mapping of just its first page. */
export function readPoolHeader(pool: Pool, syscall = 'mount'): Uint8Array {
  requireHeaderRoom(pool, syscall);
  const header = pool.map([{ offset: 0, length: Math.min(pool.size, Math.max(pool.pageSize, FIXED_HEADER_BYTES)) }], {
    populate: false,
    writable: false,
  });
  try {
    return header.bytes(0, FIXED_HEADER_BYTES).slice();
  } finally {
    header.unmap();
  }
}

/** Reads and checks the pool's superblock through a mapping of just its header, against the file's size now. */
export function readPoolSuperblock(pool: Pool): Superblock {
  pool.refreshSize();
  const header = readPoolHeader(pool);
  attachRecordedLarge(pool, header);
  return readSuperblock(header, pool);
}

/** Takes the mount lock, naming the holder's pid from the superblock when someone else has it. */
export function lockPool(pool: Pool, syscall: string): void {
  lockOrExplain(pool, syscall, () => readPoolSuperblock(pool).ownerPid);
}

function currentUid(): number {
  return process.getuid?.() ?? 0;
}

function currentGid(): number {
  return process.getgid?.() ?? 0;
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
  if (pool.large && options.maxSize !== undefined) {
    throw new GuestmemfsError('EINVAL', 'a hybrid pool (2 MiB and 1 GiB pages) cannot be formatted for growth: drop maxSize', {
      syscall: 'mkfs',
      path: pool.label,
    });
  }
  const maxSize = options.maxSize ?? pool.size;
  if (options.maxSize !== undefined && (typeof maxSize !== 'number' || !Number.isSafeInteger(maxSize) || maxSize < pool.size)) {
    throw new GuestmemfsError('EINVAL', `maxSize ${String(maxSize)} must be an integer number of bytes, at least the pool's ${pool.size}`, {
      syscall: 'mkfs',
      path: pool.label,
    });
  }
  // Inodes for the pool at its largest: a pool grown for more tenants needs room for their files.
  const maxBlocks = Math.floor(maxSize / blockSize);
  const geometry = computeGeometry(pool.size, pool.pageSize, blockSize, options.inodes ?? defaultInodeCount(maxBlocks), maxSize);
  requireNotMountedHere(pool, poolKey(pool), 'mkfs', 'pool is mounted by this process: unmount it before mkfs');
  lockPool(pool, 'mkfs');
  const whole = [{ offset: 0, length: pool.size }];
  if (isPinned(pool, whole)) {
    unlock(pool);
    throw new GuestmemfsError(
      'EBUSY',
      `pool memory is ${describeHolders(pinHolders(pool, whole))}: stop those processes before mkfs (it would be reused under them)`,
      {
        syscall: 'mkfs',
        path: pool.label,
      },
    );
  }
  const zeroed = pool.freshlyAllocated;
  const largeFromBlock = pool.large ? pool.large.from / blockSize : 0;
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
    const badBlocks = hasMagic(bytes) && !options.forgetBadBlocks ? inheritedBadBlocks(bytes, pool, geometry) : [];
    bytes.fill(0);
    const { inodes, allocator, extents, hints } = openViews(
      new BufferMetadata(metadata),
      geometry,
      [],
      pool.large ? largeFromBlock : undefined,
    );
    allocator.format();
    // A pool we did not just fallocate may hold old bytes in every block: mark them all dirty so none reaches a file unzeroed.
    if (!zeroed) allocator.markDirty([{ start: geometry.metadataBlocks, length: allocator.dataBlocks }], true);
    for (const block of badBlocks) allocator.quarantine(block);
    extents.format();
    for (let ino = 2; ino < geometry.inodeCount; ino++) inodes.setNextFree(ino, ino + 1 < geometry.inodeCount ? ino + 1 : 0);
    hints.freeInodeHead = geometry.inodeCount > 2 ? 2 : 0;
    hints.freeInodes = geometry.inodeCount - 2;
    const now = nowNs();
    inodes.setMode(ROOT_INO, 0o755);
    inodes.setUid(ROOT_INO, currentUid());
    inodes.setGid(ROOT_INO, currentGid());
    inodes.setNlink(ROOT_INO, 2);
    inodes.setParent(ROOT_INO, ROOT_INO);
    inodes.setGeneration(ROOT_INO, 1);
    for (const field of ['atime', 'mtime', 'ctime', 'btime'] as const) inodes.setTime(ROOT_INO, field, now);
    inodes.setType(ROOT_INO, InodeType.Directory);
    const uuid = newUuid();
    const sb = {
      major: FORMAT_MAJOR,
      minor: FORMAT_MINOR,
      // A pool bound to a node when it was created says so: its successors and the checker keep to it.
      compat: pool.node === undefined ? 0 : COMPAT_NUMA_NODE,
      incompat: (options.maxSize === undefined ? 0 : INCOMPAT_RESIZABLE) | (pool.large ? INCOMPAT_HYBRID : 0),
      roCompat: badBlocks.length > 0 ? RO_COMPAT_BADBLOCKS : 0,
      uuid,
      numaNode: pool.node ?? 0,
      largeFromBlock,
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
      quotas: [],
      badBlocks,
    };
    if (pool.large) writeLargeRecord(bytes, { path: pool.large.path, size: pool.large.size });
    writeSuperblockSlot(bytes, 1, sb);
    writeSuperblockSlot(bytes, 0, { ...sb, sequence: 2n });
    return { uuid, geometry, ...(pool.node === undefined ? {} : { node: pool.node }) };
  } finally {
    mapping.unmap();
    unlock(pool);
  }
}

/**
 * The memory a reformat must keep out of service: the old superblock's quarantined blocks, as blocks of the new
 * geometry (a different block size covers the same bytes with other numbers). Refuses a format whose metadata would
 * sit on quarantined memory, or whose list could not hold it, leaving the pool as it was.
 */
function inheritedBadBlocks(bytes: Uint8Array, pool: Pool, geometry: Geometry): number[] {
  let old: Superblock;
  try {
    old = readSuperblock(bytes.subarray(0, FIXED_HEADER_BYTES), pool);
  } catch {
    return []; // no readable superblock: no list to keep
  }
  const blocks = new Set<number>();
  for (const block of old.badBlocks) {
    const start = block * old.geometry.blockSize;
    for (let at = Math.floor(start / geometry.blockSize); at * geometry.blockSize < start + old.geometry.blockSize; at++) blocks.add(at);
  }
  const list = [...blocks].sort((a, b) => a - b);
  const fields = { syscall: 'mkfs', path: pool.label };
  const underMetadata = list.filter((block) => block < geometry.metadataBlocks);
  if (underMetadata.length > 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `the new metadata region (blocks 0 to ${geometry.metadataBlocks - 1}) would hold quarantined memory (block ` +
        `${underMetadata.join(', ')}): this pool cannot hold a filesystem of that geometry; retire it`,
      fields,
    );
  }
  if (list.length > MAX_BAD_BLOCKS) {
    throw new GuestmemfsError(
      'ENOSPC',
      `the quarantined memory spans ${list.length} blocks of ${geometry.blockSize} bytes, more than the ${MAX_BAD_BLOCKS} the ` +
        `bad-block list holds: use a larger block size`,
      fields,
    );
  }
  return list;
}

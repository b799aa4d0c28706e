// The consistency checker (pmempool check's model): verify a pool that nobody has mounted, optionally repair it,
// and answer consistent, repaired (with the fixes) or inconsistent (with the reasons).
import { GuestmemfsError } from '../errors';
import { verifyHandoverBlob } from '../handover/blob';
import { native } from '../native';
import type { Pool } from '../pool/pool';
import { BlockAllocator } from './allocator';
import { auditMetadata } from './audit';
import { isMountedHere } from './filesystem';
import { ExtentStore } from './extents';
import { FLAG_ORPHAN, InodeTable, InodeType } from './inodes';
import {
  crc32,
  FIXED_HEADER_BYTES,
  HINTS_OFFSET,
  INTENT,
  INTENT_ACTIVE,
  INTENT_OFFSET,
  PoolState,
  readSuperblock,
  SLOT_CHECKED_BYTES,
  SLOT_SIZE,
  type Superblock,
  writeSuperblockSlot,
} from './layout';
import { MappedMetadata } from './metadata';
import { findUnrepairable, repairDerived } from './repair';

export type CheckState = 'consistent' | 'repaired' | 'inconsistent';

export interface CheckResult {
  state: CheckState;
  /** What repair changed (state 'repaired'). */
  fixes: string[];
  /** What is wrong (state 'inconsistent'), or what was found before repairing (state 'repaired'). */
  problems: string[];
  /** For 'inconsistent': whether check with repair would fix it. */
  repairable: boolean;
  /** The pool state the superblock recorded before the check. */
  poolState: 'clean' | 'mounted' | 'serialised' | 'unreadable';
}

export interface CheckOptions {
  /** Repair what can be repaired (default false: report only, change nothing). */
  repair?: boolean;
}

const stateNames = { [PoolState.Clean]: 'clean', [PoolState.Mounted]: 'mounted', [PoolState.Serialised]: 'serialised' } as const;

/**
 * Checks a pool that is not mounted anywhere: superblock copies, handover blob, intent record, every inode's type,
 * size and extents, block ownership and bitmaps, directory structure and link counts, free lists and counters.
 * With repair, rebuilds what is derived from what is primary and frees orphans; what cannot be repaired is
 * reported and the pool is left as it was.
 */
export function check(pool: Pool, options: CheckOptions = {}): CheckResult {
  const fields = { syscall: 'check', path: pool.label };
  if (isMountedHere(pool) || !native.fdLock(pool.fd, true, false)) {
    throw new GuestmemfsError('EBUSY', 'pool is mounted: unmount it before checking (the checker needs it to itself)', fields);
  }
  const problems: string[] = [];
  const fixes: string[] = [];
  let header: ReturnType<Pool['map']> | undefined;
  let meta: ReturnType<Pool['map']> | undefined;
  try {
    header = pool.map([{ offset: 0, length: Math.min(pool.size, Math.max(pool.pageSize, FIXED_HEADER_BYTES)) }], { populate: false });
    const headerBytes = header.bytes(0, FIXED_HEADER_BYTES);
    let sb: Superblock;
    try {
      sb = readSuperblock(headerBytes, pool);
    } catch (error) {
      return { state: 'inconsistent', fixes, problems: [(error as Error).message], repairable: false, poolState: 'unreadable' };
    }
    const poolState = stateNames[sb.state as PoolState] ?? 'unreadable';
    // Each superblock copy on its own: the newer one was used; a damaged older one is rewritten from it.
    const other = 1 - sb.slot;
    const otherBase = other * SLOT_SIZE;
    const otherCrc = new DataView(headerBytes.buffer, headerBytes.byteOffset + otherBase + SLOT_CHECKED_BYTES, 4).getUint32(0, true);
    const otherValid = otherCrc === crc32(headerBytes.subarray(otherBase, otherBase + SLOT_CHECKED_BYTES));
    if (!otherValid) problems.push(`superblock copy ${other === 0 ? 'A' : 'B'} is damaged (copy ${sb.slot === 0 ? 'A' : 'B'} is intact)`);

    meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false });
    const source = new MappedMetadata(meta.id);
    const metaHeader = source.window(0, FIXED_HEADER_BYTES);
    const hints = new Uint32Array(metaHeader.buffer, metaHeader.byteOffset + HINTS_OFFSET, 1024);
    const intent = new Uint32Array(metaHeader.buffer, metaHeader.byteOffset + INTENT_OFFSET, 1024);
    const inodes = new InodeTable(source, sb.geometry);
    const allocator = new BlockAllocator(source, sb.geometry, hints);
    const extents = new ExtentStore(source, sb.geometry, hints, inodes);

    let handoverValid = false; // only meaningful when serialised
    if (sb.state === PoolState.Serialised) {
      try {
        const area = source.window(sb.geometry.handoverOffset, sb.geometry.handoverLength);
        if (sb.handoverBytes === 0 || sb.handoverBytes > area.length || sb.handoverGeneration !== sb.generation) {
          throw new Error(`the superblock records an impossible blob (${sb.handoverBytes} bytes, generation ${sb.handoverGeneration} vs ${sb.generation})`);
        }
        verifyHandoverBlob(area.subarray(0, sb.handoverBytes), {
          geometry: sb.geometry,
          uuid: sb.uuid,
          generation: sb.generation,
          pool: { size: pool.size, pageSize: pool.pageSize, label: pool.label },
          metadata: {
            header: metaHeader,
            bitmaps: allocator.bitmapBytes(),
            inodeRecord: (ino) => inodes.record(ino),
            pageRecord: (page) => extents.pageRecord(page),
          },
          isLive: (ino) => inodes.type(ino) !== InodeType.Free,
          chainOf: (ino) => (inodes.isValidIno(ino) ? extents.chain(ino) : []),
          blobCrc: sb.handoverCrc,
        });
        handoverValid = true;
      } catch (error) {
        problems.push(`handover blob is not valid: ${(error as Error).message}`);
      }
    }
    if (sb.state === PoolState.Mounted) problems.push(`pool was not unmounted cleanly: its owner (pid ${sb.ownerPid}) died while it was mounted`);
    if (intent[INTENT.magic / 4] === INTENT_ACTIVE) problems.push('an interrupted rename is recorded in the intent record');
    const unclean = sb.state === PoolState.Mounted || intent[INTENT.magic / 4] === INTENT_ACTIVE;
    if (unclean) {
      for (let ino = 2; ino < inodes.count; ino++) {
        if (inodes.type(ino) !== InodeType.Free && inodes.flags(ino) & FLAG_ORPHAN) problems.push(`inode ${ino} was unlinked while mapped and still holds ${inodes.blockCount(ino)} blocks`);
      }
    }
    const unrepairable = findUnrepairable({ geometry: sb.geometry, inodes, extents });
    const derived = unrepairable.length === 0 ? auditMetadata({ geometry: sb.geometry, inodes, extents, allocator, hints }).problems : [];
    problems.push(...unrepairable, ...derived);

    if (problems.length === 0) return { state: 'consistent', fixes, problems, repairable: true, poolState };
    if (unrepairable.length > 0) return { state: 'inconsistent', fixes, problems, repairable: false, poolState };
    if (!options.repair) return { state: 'inconsistent', fixes, problems, repairable: true, poolState };

    // A torn superblock copy alone (a kill while one was being written) needs only that copy rewritten from the intact
    // one; rebuilding derived state here would reorder free lists and invalidate a handover that is still good.
    if (!otherValid && problems.length === 1) {
      writeSuperblockSlot(metaHeader, other, { ...sb, sequence: sb.sequence + 1n });
      return { state: 'repaired', fixes: [`rewrote superblock copy ${other === 0 ? 'A' : 'B'}`], problems, repairable: true, poolState };
    }
    // Repair. Everything below is idempotent: a kill part-way leaves a pool the next check repairs again.
    const result = repairDerived({ geometry: sb.geometry, inodes, extents, allocator, hints, intent, intentBytes: metaHeader.subarray(INTENT_OFFSET, INTENT_OFFSET + 4096) });
    fixes.push(...result.fixes);
    const after = auditMetadata({ geometry: sb.geometry, inodes, extents, allocator, hints }).problems;
    if (after.length > 0) return { state: 'inconsistent', fixes, problems: after, repairable: false, poolState };
    // The repair rewrote derived metadata the blob's checksum covers: a handover cannot survive it and becomes stale.
    if (sb.state === PoolState.Serialised) fixes.push(`marked the handover blob stale${handoverValid ? '' : ' (it was not valid)'}: the next mount uses the metadata itself`);
    if (!otherValid) fixes.push(`rewrote superblock copy ${other === 0 ? 'A' : 'B'}`);
    writeSuperblockSlot(metaHeader, other, { ...sb, sequence: sb.sequence + 1n, state: PoolState.Clean, ownerPid: 0, ownerStartTime: 0n, handoverBytes: 0, handoverCrc: 0 });
    return { state: 'repaired', fixes, problems, repairable: true, poolState };
  } finally {
    header?.unmap();
    meta?.unmap();
    native.fdUnlock(pool.fd);
  }
}

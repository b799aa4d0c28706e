// The consistency checker (pmempool check's model): verify a pool that nobody has mounted, optionally repair it,
// and answer consistent, repaired (with the fixes) or inconsistent (with the reasons).
import { attachRecordedLarge } from './large-region';
import { GuestmemfsError } from '../errors';
import type { Mapping } from '../pool/mapping';
import type { Pool } from '../pool/pool';
import { auditMetadata } from './audit';
import { FLAG_ORPHAN, InodeType } from './inodes';
import { renameInFlight } from './intent';
import {
  excessBytes,
  FIXED_HEADER_BYTES,
  largeFromBlockOf,
  numaNodeOf,
  PoolState,
  readSuperblock,
  slotChecksums,
  type Superblock,
  writeSuperblockSlot,
} from './layout';
import { verifyRecordedBlob } from './lifecycle';
import { MappedMetadata } from './metadata';
import { findUnrepairable } from './ownership';
import { isMountedHere, tryLock, unlock } from './registry';
import { repairDerived } from './repair';
import { trimExcess } from './resize';
import { formatSize } from '../units';
import { blockRange } from './runs';
import { isPinned } from '../pool/pins';
import { misplacedPages } from '../pool/numa';
import { openViews } from './views';
import { quarantineReport } from './badblocks';

export type CheckState = 'consistent' | 'repaired' | 'inconsistent';

export interface CheckResult {
  state: CheckState;
  /** What repair changed (state 'repaired'). */
  fixes: string[];
  /** What is wrong (state 'inconsistent'), or what was found before repairing (state 'repaired'). */
  problems: string[];
  /** For 'inconsistent': whether check with repair would fix it. */
  repairable: boolean;
  /** Quarantined blocks and the inode holding each (null: none holds it); empty when the superblock is unreadable. */
  quarantined: Array<{ block: number; ino: number | null }>;
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
  if (isMountedHere(pool) || !tryLock(pool)) {
    throw new GuestmemfsError('EBUSY', 'pool is mounted: unmount it before checking (the checker needs it to itself)', fields);
  }
  const problems: string[] = [];
  const fixes: string[] = [];
  let header: Mapping | undefined;
  let meta: Mapping | undefined;
  try {
    // Another process may have resized the pool since this object was opened.
    pool.refreshSize();
    header = pool.map([{ offset: 0, length: Math.min(pool.size, Math.max(pool.pageSize, FIXED_HEADER_BYTES)) }], { populate: false });
    const headerBytes = header.bytes(0, FIXED_HEADER_BYTES);
    let sb: Superblock;
    try {
      attachRecordedLarge(pool, headerBytes);
      sb = readSuperblock(headerBytes, pool);
    } catch (error) {
      return {
        state: 'inconsistent',
        fixes,
        problems: [(error as Error).message],
        repairable: false,
        poolState: 'unreadable',
        quarantined: [],
      };
    }
    const poolState = stateNames[sb.state] ?? 'unreadable';
    // Each superblock copy on its own: the newer one was used; a damaged older one is rewritten from it.
    const other = 1 - sb.slot;
    const otherCrc = slotChecksums(headerBytes, other);
    const otherValid = otherCrc.stored === otherCrc.actual;
    if (!otherValid) problems.push(`superblock copy ${other === 0 ? 'A' : 'B'} is damaged (copy ${sb.slot === 0 ? 'A' : 'B'} is intact)`);

    meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false });
    const views = openViews(new MappedMetadata(meta.id), sb.geometry, sb.badBlocks, largeFromBlockOf(sb));
    // Read before any repair: a repair keeps every quarantined block where it is.
    const quarantined = quarantineReport(views, sb);
    const { header: metaHeader, inodes, intent } = views;

    let handoverValid = false; // only meaningful when serialised
    if (sb.state === PoolState.Serialised) {
      try {
        verifyRecordedBlob(views, sb, pool, views.source.window(sb.geometry.handoverOffset, sb.geometry.handoverLength), fields);
        handoverValid = true;
      } catch (error) {
        problems.push(`handover blob is not valid: ${(error as Error).message}`);
      }
    }
    if (sb.state === PoolState.Mounted)
      problems.push(`pool was not unmounted cleanly: its owner (pid ${sb.ownerPid}) died while it was mounted`);
    if (renameInFlight(intent)) problems.push('an interrupted rename is recorded in the intent record');
    const unclean = sb.state === PoolState.Mounted || renameInFlight(intent);
    if (unclean) {
      for (let ino = 2; ino < inodes.count; ino++) {
        if (inodes.type(ino) !== InodeType.Free && inodes.flags(ino) & FLAG_ORPHAN)
          problems.push(`inode ${ino} was unlinked while mapped and still holds ${inodes.blockCount(ino)} blocks`);
      }
    }
    const excess = excessBytes(sb, pool);
    if (excess > 0) problems.push(`the pool file is ${formatSize(excess)} larger than the filesystem: a resize was interrupted`);
    const damaged = findUnrepairable(views);
    const derived = damaged.length === 0 ? auditMetadata(views).problems : [];
    // Pages off the pool's node are not metadata damage, and nothing here can move them back.
    const unrepairable = [...damaged, ...placementProblems(pool, sb)];
    problems.push(...unrepairable, ...derived);

    if (problems.length === 0) return { state: 'consistent', fixes, problems, repairable: true, poolState, quarantined };
    if (unrepairable.length > 0) return { state: 'inconsistent', fixes, problems, repairable: false, poolState, quarantined };
    if (!options.repair) return { state: 'inconsistent', fixes, problems, repairable: true, poolState, quarantined };

    // A torn superblock copy alone (a kill while one was being written) needs only that copy rewritten from the intact
    // one; rebuilding derived state here would reorder free lists and invalidate a handover that is still good.
    if (!otherValid && problems.length === 1) {
      writeSuperblockSlot(metaHeader, other, { ...sb, sequence: sb.sequence + 1n });
      return {
        state: 'repaired',
        fixes: [`rewrote superblock copy ${other === 0 ? 'A' : 'B'}`],
        problems,
        repairable: true,
        poolState,
        quarantined,
      };
    }
    // Repair. Everything below is idempotent: a kill part-way leaves a pool the next check repairs again.
    const result = repairDerived({
      ...views,
      isPinned: (runs) =>
        isPinned(
          pool,
          runs.map((run) => blockRange(sb.geometry, run)),
        ),
    });
    fixes.push(...result.fixes);
    const trimmed = trimExcess(pool, views);
    if (trimmed) fixes.push(trimmed);
    const after = auditMetadata(views).problems;
    if (after.length > 0) return { state: 'inconsistent', fixes, problems: after, repairable: false, poolState, quarantined };
    // The repair rewrote derived metadata the blob's checksum covers: a handover cannot survive it and becomes stale.
    if (sb.state === PoolState.Serialised)
      fixes.push(`marked the handover blob stale${handoverValid ? '' : ' (it was not valid)'}: the next mount uses the metadata itself`);
    if (!otherValid) fixes.push(`rewrote superblock copy ${other === 0 ? 'A' : 'B'}`);
    writeSuperblockSlot(metaHeader, other, {
      ...sb,
      sequence: sb.sequence + 1n,
      state: PoolState.Clean,
      ownerPid: 0,
      ownerStartTime: 0n,
      handoverBytes: 0,
      handoverCrc: 0,
    });
    return { state: 'repaired', fixes, problems, repairable: true, poolState, quarantined };
  } finally {
    header?.unmap();
    meta?.unmap();
    unlock(pool);
  }
}

/** For a pool bound to a NUMA node: its pages that are elsewhere (move_pages on every page, or a sample of them). */
function placementProblems(pool: Pool, sb: Superblock): string[] {
  const node = numaNodeOf(sb);
  if (node === undefined) return [];
  const placement = pool.placement();
  const misplaced = misplacedPages(placement, node);
  if (misplaced === 0) return [];
  const found = Object.entries(placement.pagesByNode)
    .map(([node, pages]) => `${pages} on node ${node}`)
    .concat(placement.missing > 0 ? [`${placement.missing} not allocated`] : [])
    .join(', ');
  return [`the pool is bound to NUMA node ${node}, but ${misplaced} of the pages checked are not there (${found})`];
}

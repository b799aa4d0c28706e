// Mounting a pool: exclusive and read-only mounts, and the policy for the state a pool is found in (adopt a handover,
// recover from a dead owner, audit a clean pool before trusting it).
import * as os from 'node:os';
import { GuestmemfsError } from '../errors';
import { requireRecordHash } from '../handover/blob-verify';
import type { Mapping } from '../pool/mapping';
import type { Pool } from '../pool/pool';
import { processStartTime } from '../process';
import { elapsedMs, formatSize } from '../units';
import { auditMetadata } from './audit';
import { MountContext } from './context';
import { Filesystem } from './filesystem';
import { lockPool, readPoolSuperblock, requireHeaderRoom } from './format';
import { renameInFlight } from './intent';
import { excessBytes, largeFromBlockOf, PoolState, type Superblock } from './layout';
import { verifyRecordedBlob } from './lifecycle';
import { BufferMetadata, MappedMetadata } from './metadata';
import { buildIndex } from './names';
import { releaseIfUnpinned } from './namespace';
import { findUnrepairable } from './ownership';
import type { Credentials } from './permissions';
import { lockIsHeldByOther, markMountedHere, poolKey, requireNotMountedHere, unlock } from './registry';
import { repairDerived } from './repair';
import { trimExcess } from './resize';
import { blockRange } from './runs';
import type { MountOptions, Recovery, Restore } from './types';
import { openViews } from './views';

/** Snapshot attempts before a read-only view gives up on a pool whose owner keeps changing it. */
const SNAPSHOT_ATTEMPTS = 5;
/** Between snapshot attempts: long enough for an owner's operation in flight to finish. */
const SNAPSHOT_RETRY_MS = 2;

function currentCredentials(options: MountOptions): Credentials {
  return {
    uid: options.uid ?? process.getuid?.() ?? 0,
    gid: options.gid ?? process.getgid?.() ?? 0,
    groups: options.groups ?? process.getgroups?.() ?? [],
  };
}

/** Mounts a formatted pool for this process, exclusively (or, with readOnly, as a view that takes no lock). */
export function mount(pool: Pool, options: MountOptions = {}): Filesystem {
  if (os.endianness() !== 'LE')
    throw new GuestmemfsError('EINVAL', 'guestmemfs pools are little-endian; this host is big-endian', { syscall: 'mount' });
  requireHeaderRoom(pool, 'mount');
  const key = poolKey(pool);
  if (options.readOnly) return mountReadOnly(pool, options, key);
  requireNotMountedHere(
    pool,
    key,
    'mount',
    `pool is mounted by pid ${process.pid} (this process): unmount that mount first (only one mount at a time)`,
  );
  lockPool(pool, 'mount');
  let meta: Mapping | undefined;
  try {
    const sb = readPoolSuperblock(pool);
    if (options.requireHandover && (sb.state !== PoolState.Serialised || options.discardHandover)) {
      throw new GuestmemfsError(
        'ENOENT',
        `pool holds no handover (it is ${PoolState[sb.state].toLowerCase()}): its owner let go without serialising it; ` +
          `mount it without requireHandover to recover it`,
        {
          syscall: 'mount',
          path: pool.label,
        },
      );
    }
    // Only the metadata region is mapped now; data blocks get a mapping the first time data is touched.
    meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false, dontDump: true, dontFork: true });
    // No pre-faulting and no view of the whole region: a mount (above all a restore) touches a few metadata pages.
    const ctx = new MountContext(
      pool,
      openViews(new MappedMetadata(meta.id), sb.geometry, sb.badBlocks, largeFromBlockOf(sb)),
      sb,
      currentCredentials(options),
      key,
      false,
      meta,
    );
    const filesystem = takeOver(ctx, sb, options);
    markMountedHere(key, true);
    return filesystem;
  } catch (error) {
    meta?.unmap();
    unlock(pool);
    throw error;
  }
}

/** Decides what the pool's state asks for, does it, and marks the pool as this process's. */
function takeOver(ctx: MountContext, sb: Superblock, options: MountOptions): Filesystem {
  const started = process.hrtime.bigint();
  const fields = { syscall: 'mount', path: ctx.pool.label };
  const owned = { ownerPid: process.pid, ownerStartTime: processStartTime(), mountCount: sb.mountCount + 1n };
  if (sb.state === PoolState.Serialised && !options.discardHandover) {
    // Handed over: adopt the metadata in place after checking the blob describes it; only the volatile index is built.
    // Every listed record is checked (in use, and the blob's record hash) in the pass that indexes it: one pass over
    // the bytes of 100,000 records that are used, not three over whole records.
    const description = verifyRecordedBlob(ctx.views, sb, ctx.pool, ctx.handoverArea(), fields, true);
    const { orphans, recordHash } = buildIndex(ctx, description.liveInodes, fields);
    requireRecordHash(description, recordHash, fields);
    const restored: Restore = { generation: sb.generation, files: description.liveInodes.length, ms: 0, description };
    if (options.keepSerialised) {
      // Still described by its blob: nothing the blob covers may change, so orphans wait for abort().
      ctx.writeSuperblock(owned);
      ctx.frozenAt = sb.generation;
      for (const ino of orphans) ctx.orphans.add(ino);
    } else {
      // Mounted first: freeing orphans below changes metadata the blob describes.
      ctx.writeSuperblock({ ...owned, state: PoolState.Mounted, generation: sb.generation + 1n, handoverBytes: 0, handoverCrc: 0 });
      for (const ino of orphans) releaseIfUnpinned(ctx, ino);
    }
    restored.ms = elapsedMs(started);
    return new Filesystem(ctx, { restored });
  }
  const recovery = recoverIfNeeded(ctx, sb, options);
  // The superblock says "mounted" before anything else changes, so a kill from here on is detected as unclean.
  ctx.writeSuperblock({ ...owned, state: PoolState.Mounted, generation: sb.generation + 1n, handoverBytes: 0, handoverCrc: 0 });
  // Unlinked files: those still pinned by a process that maps them stay until reclaimOrphans() finds them free.
  for (const ino of buildIndex(ctx).orphans) releaseIfUnpinned(ctx, ino);
  return new Filesystem(ctx, { recovery });
}

/**
 * A pool that was not handed over is recovered when its owner died, its handover was discarded, or its derived
 * metadata is damaged. A clean pool is still checked for damage a crash cannot cause (a flipped bit, a stray write):
 * a damaged pool is never mounted as it is. Primary damage is refused.
 */
function recoverIfNeeded(ctx: MountContext, sb: Superblock, options: MountOptions): Recovery | undefined {
  const fields = { syscall: 'mount', path: ctx.pool.label };
  const views = ctx.views;
  let cause: string | undefined;
  const excess = excessBytes(sb, ctx.pool);
  if (sb.state === PoolState.Serialised) cause = 'its handover was discarded';
  else if (sb.state !== PoolState.Clean || renameInFlight(views.intent)) cause = `its owner (pid ${sb.ownerPid}) died while it was mounted`;
  else {
    const problems = findUnrepairable(views);
    if (problems.length > 0) {
      throw new GuestmemfsError(
        'EUCLEAN',
        `pool metadata is damaged: ${problems.slice(0, 5).join('; ')}; run the checker (check) for the full report`,
        fields,
      );
    }
    const derived = auditMetadata(views).problems;
    if (derived.length > 0) cause = `its derived metadata is damaged (${derived.slice(0, 3).join('; ')})`;
    else if (excess > 0) cause = `its pool file is ${formatSize(excess)} larger than the filesystem (a resize was interrupted)`;
  }
  if (cause === undefined) return undefined;
  if (options.repair === false) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `pool was not unmounted cleanly: ${cause}; mount it with { repair: true } (the default) to recover it`,
      fields,
    );
  }
  // Still marked as the dead owner's while recovering: a kill now is recovered from by the next mount.
  const result = repairDerived({ ...views, isPinned: (runs) => ctx.pinned(runs.map((run) => blockRange(ctx.geometry, run))) });
  if (result.unrepairable.length > 0) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `pool was not unmounted cleanly (${cause}) and cannot be recovered: ${result.unrepairable.join('; ')}; it was left as it was`,
      fields,
    );
  }
  const trimmed = trimExcess(ctx.pool, views);
  if (trimmed) result.fixes.push(trimmed);
  const remaining = auditMetadata(views).problems;
  if (remaining.length > 0) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `pool could not be brought back to a consistent state (${remaining.slice(0, 5).join('; ')}): run the checker`,
      fields,
    );
  }
  return { previousOwnerPid: sb.ownerPid, fixes: result.fixes };
}

/**
 * A view: a snapshot of the metadata, trusted only when its audit is clean. A live owner caught mid-operation is
 * retried; damage with nobody holding the pool is refused.
 */
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
    const ctx = new MountContext(
      pool,
      openViews(new BufferMetadata(snapshot), sb.geometry, sb.badBlocks, largeFromBlockOf(sb)),
      sb,
      currentCredentials(options),
      key,
      true,
      undefined,
    );
    lastProblems = auditMetadata(ctx.views).problems;
    if (lastProblems.length === 0) {
      // A view adopts nothing, repairs nothing and writes nothing: unlinked files stay as they are.
      for (const ino of buildIndex(ctx).orphans) ctx.orphans.add(ino);
      return new Filesystem(ctx, {});
    }
    // Nobody holds the mount lock: the damage is not a write in progress, and waiting will not mend it.
    if (!lockIsHeldByOther(pool)) {
      throw new GuestmemfsError(
        'EUCLEAN',
        `pool metadata is not consistent (${lastProblems.slice(0, 3).join('; ')}): run the checker with repair`,
        fields,
      );
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, SNAPSHOT_RETRY_MS);
  }
  throw new GuestmemfsError(
    'EAGAIN',
    `the pool kept changing under its owner while it was read (${lastProblems.slice(0, 2).join('; ')}): try again`,
    fields,
  );
}

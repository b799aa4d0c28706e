// The successor's side of a handover: find the pool the previous owner passed on, map its files ahead of the handover,
// and wait or spin until the owner has serialised and let go of it.
import { GuestmemfsError } from '../errors';
import { POOL_FD_ENV, POOL_LARGE_FD_ENV, POOL_PATH_ENV } from '../handover/blob';
import type { MapOptions, Mapping } from '../pool/mapping';
import type { NativeMapResult } from '../native';
import { Pool } from '../pool/pool';
import { reapExecHolder } from '../process';
import type { MappingRecipe } from '../pool/remap';
import { markPremapped, premap } from './data';
import { contextOf, type Filesystem } from './filesystem';
import { readPoolSuperblock } from './format';
import { PoolState } from './layout';
import { mount } from './mount';
import { tryLock, unlock } from './registry';
import type { MountOptions } from './types';

/**
 * Opens the pool a kexec() handed to this process: an inherited fd (GUESTMEMFS_POOL_FD) or a path (GUESTMEMFS_POOL).
 * A teardown holder the exec left (deferTeardown) is let go and reaped in the background: the blackout of a caller
 * that opens the pool only afterwards is over by now.
 */
export function openHandedOverPool(env: NodeJS.ProcessEnv = process.env): Pool {
  void reapExecHolder(env);
  const fd = env[POOL_FD_ENV];
  if (fd !== undefined) {
    if (!/^\d+$/.test(fd)) throw new GuestmemfsError('EINVAL', `${POOL_FD_ENV}="${fd}" is not an fd number`);
    const largeFd = env[POOL_LARGE_FD_ENV];
    if (largeFd !== undefined && !/^\d+$/.test(largeFd))
      throw new GuestmemfsError('EINVAL', `${POOL_LARGE_FD_ENV}="${largeFd}" is not an fd number`);
    return Pool.fromFd(Number(fd), largeFd === undefined ? undefined : Number(largeFd));
  }
  const poolPath = env[POOL_PATH_ENV];
  if (poolPath) return Pool.open(poolPath);
  throw new GuestmemfsError('ENOENT', `no pool was handed to this process: neither ${POOL_FD_ENV} nor ${POOL_PATH_ENV} is set`);
}

/**
 * Maps a file of a pool another process owns, writable and pre-faulted, as a successor does before a handover so that
 * mapping guest RAM stays out of the blackout. The file's blocks come from a read-only view; map(path, { premapped })
 * in the mount that follows adopts the mapping if the blocks are still the same.
 */
export function premapFile(
  pool: Pool,
  path: string,
  options: MountOptions = {},
  mapOptions: Pick<MapOptions, 'sharePageTables'> = {},
): Mapping {
  const view = mount(pool, { ...options, readOnly: true });
  try {
    return premap(contextOf(view), pool, path, mapOptions);
  } finally {
    view.unmount();
  }
}

/**
 * Takes over a pinned mapping of the mounted pool that this process image made from a recipe before it mounted (an
 * exec-mode launcher's guest RAM, see remap.ts): map(path, { premapped }) then adopts it if the file's extents match.
 */
export function adoptRecipeMapping(fs: Filesystem, made: NativeMapResult, recipe: MappingRecipe): Mapping {
  const ctx = contextOf(fs);
  const mapping = ctx.pool.adoptMapping(made, recipe);
  markPremapped(ctx, mapping);
  return mapping;
}

export interface WaitOptions extends MountOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Poll interval (default 0: every event-loop turn, for the shortest blackout). */
  pollMs?: number;
}

/**
 * For a successor started ahead of time: waits until the current owner has serialised the pool and let go of it
 * (its mount lock is free), then mounts, restoring from the handover.
 */
export async function waitForHandover(pool: Pool, options: WaitOptions = {}): Promise<Filesystem> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    if (tryLock(pool)) {
      let ready: boolean;
      try {
        ready = readPoolSuperblock(pool).state === PoolState.Serialised;
      } finally {
        unlock(pool);
      }
      if (ready) return mount(pool, { ...options, requireHandover: true });
    }
    if (Date.now() > deadline) {
      throw new GuestmemfsError(
        'ETIMEDOUT',
        `no handover arrived within ${options.timeoutMs ?? 60_000} ms: the owner has not serialised and released the pool`,
        {
          syscall: 'mount',
          path: pool.label,
        },
      );
    }
    await new Promise((resolve) => (options.pollMs ? setTimeout(resolve, options.pollMs) : setImmediate(resolve)));
  }
}

/**
 * For a successor told that a handover is imminent (the owner is pausing its guest): spins, never sleeping, until the
 * owner has serialised the pool and let go of it, then mounts. Waking from a sleep costs 0.1-0.6 ms on a virtualized
 * host, a large part of a live update's blackout; spinning for the few milliseconds of the update costs one CPU for
 * that long. Fails (ENOENT) if the owner lets go without serialising (it died), and after timeoutMs (default 10 s).
 */
export function spinForHandover(pool: Pool, options: WaitOptions = {}): Filesystem {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = process.hrtime.bigint() + BigInt(timeoutMs) * 1_000_000n;
  // The mount lock comes free when the owner lets go; only a serialised pool is then taken (requireHandover).
  while (!tryLock(pool)) {
    if (process.hrtime.bigint() > deadline) {
      throw new GuestmemfsError(
        'ETIMEDOUT',
        `no handover arrived within ${timeoutMs} ms of being announced: the owner has not released the pool`,
        {
          syscall: 'mount',
          path: pool.label,
        },
      );
    }
  }
  unlock(pool);
  return mount(pool, { ...options, requireHandover: true });
}

// The successor's side of a handover: find the pool the previous owner passed on, or wait for one to be handed over.
import { GuestmemfsError } from '../errors';
import { type Filesystem, mount, type MountOptions, readPoolSuperblock } from '../fs/filesystem';
import { PoolState } from '../fs/layout';
import { native } from '../native';
import { Pool } from '../pool/pool';
import { POOL_FD_ENV, POOL_PATH_ENV } from './blob';

/** Opens the pool a kexec() handed to this process: an inherited fd (GUESTMEMFS_POOL_FD) or a path (GUESTMEMFS_POOL). */
export function openHandedOverPool(env: NodeJS.ProcessEnv = process.env): Pool {
  const fd = env[POOL_FD_ENV];
  if (fd !== undefined) {
    if (!/^\d+$/.test(fd)) throw new GuestmemfsError('EINVAL', `${POOL_FD_ENV}="${fd}" is not an fd number`);
    return Pool.fromFd(Number(fd));
  }
  const poolPath = env[POOL_PATH_ENV];
  if (poolPath) return Pool.open(poolPath);
  throw new GuestmemfsError('ENOENT', `no pool was handed to this process: neither ${POOL_FD_ENV} nor ${POOL_PATH_ENV} is set`);
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
    if (native.fdLock(pool.fd, true, false)) {
      let ready = false;
      try {
        ready = readPoolSuperblock(pool).state === PoolState.Serialised;
      } finally {
        native.fdUnlock(pool.fd);
      }
      if (ready) return mount(pool, options);
    }
    if (Date.now() > deadline) {
      throw new GuestmemfsError('ETIMEDOUT', `no handover arrived within ${options.timeoutMs ?? 60_000} ms: the owner has not serialised and released the pool`, {
        syscall: 'mount',
        path: pool.label,
      });
    }
    await new Promise((resolve) => (options.pollMs ? setTimeout(resolve, options.pollMs) : setImmediate(resolve)));
  }
}

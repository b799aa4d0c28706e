// Who holds a pool: the flock every mount takes on the pool fd, and the pools this process has mounted (a flock cannot
// tell two mounts through the same open file description apart).
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import type { Pool } from '../pool/pool';

const mountedHere = new Set<string>();

/** Names a pool by device and inode, whichever fd or path it was opened through. */
export function poolKey(pool: Pool): string {
  const info = native.fdInfo(pool.fd);
  return `${info.dev}:${info.ino}`;
}

/** True when this process has the pool mounted (a flock cannot see a second mount through the same fd). */
export function isMountedHere(pool: Pool): boolean {
  return mountedHere.has(poolKey(pool));
}

export function markMountedHere(key: string, mounted: boolean): void {
  if (mounted) mountedHere.add(key);
  else mountedHere.delete(key);
}

/** Refuses (EBUSY) when this process already has the pool mounted. */
export function requireNotMountedHere(pool: Pool, key: string, syscall: string, message: string): void {
  if (mountedHere.has(key)) throw new GuestmemfsError('EBUSY', message, { syscall, path: pool.label });
}

/**
 * Takes the pool's mount lock, or says who holds it. `holderPid` reads the owner's pid from the superblock (which the
 * caller knows how to read); an unreadable header leaves the holder unknown, which the message says.
 */
export function lockOrExplain(pool: Pool, syscall: string, holderPid: () => number): void {
  if (tryLock(pool)) return;
  let holder = 'another process';
  try {
    const pid = holderPid();
    if (pid) holder = `pid ${pid}`;
  } catch {
    // The message says the holder is unknown.
  }
  throw new GuestmemfsError('EBUSY', `pool is mounted by ${holder}: unmount it there first (only one mount at a time)`, {
    syscall,
    path: pool.label,
  });
}

/** True when another open file description holds the pool's mount lock (probed with a shared lock, let go at once). */
export function lockIsHeldByOther(pool: Pool): boolean {
  if (!native.fdLock(pool.fd, false, false)) return true;
  native.fdUnlock(pool.fd);
  return false;
}

/** Takes the mount lock without waiting; false when someone holds it. */
export function tryLock(pool: Pool): boolean {
  return native.fdLock(pool.fd, true, false);
}

export function unlock(pool: Pool): void {
  native.fdUnlock(pool.fd);
}

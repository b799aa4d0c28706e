// Where a pool's mount service listens: a socket named by the pool's device and inode in a runtime directory only its
// owner may write (/run/guestmemfs for root, $XDG_RUNTIME_DIR/guestmemfs otherwise), so that any process that can
// open the pool finds its service, and nobody else can put a socket there.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import type { Pool } from '../pool/pool';

/** The runtime directory: GUESTMEMFS_RUNTIME_DIR, else /run/guestmemfs for root, else $XDG_RUNTIME_DIR/guestmemfs. */
export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.GUESTMEMFS_RUNTIME_DIR) return env.GUESTMEMFS_RUNTIME_DIR;
  if (process.getuid?.() === 0) return '/run/guestmemfs';
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'guestmemfs');
  throw new GuestmemfsError('ENOENT', 'no runtime directory for the service socket: set XDG_RUNTIME_DIR, or pass --socket', {
    syscall: 'socket',
  });
}

/** A pool as the kernel names it: the device and inode of its file (fdInfo of its fd, or stat of its path). */
export interface PoolIdentity {
  dev: number;
  ino: number;
}

export function poolIdentityOf(pool: Pool): PoolIdentity {
  return native.fdInfo(pool.fd);
}

/** The socket a service of this pool listens on by default (or links to from there, when given --socket). */
export function defaultSocketPath(pool: PoolIdentity, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(runtimeDir(env), `pool-${pool.dev}-${pool.ino}.sock`);
}

/**
 * Creates the runtime directory (mode 0755) if needed, and refuses one that someone other than this user or root
 * could write: a socket there could be replaced by another user's.
 */
export function prepareRuntimeDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const stats = fs.lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!stats.isDirectory() || (stats.uid !== uid && stats.uid !== 0) || (stats.mode & 0o022) !== 0) {
    throw new GuestmemfsError(
      'EPERM',
      `runtime directory ${dir} must be a directory owned by uid ${uid} or root and writable by nobody else ` +
        `(it is mode ${(stats.mode & 0o7777).toString(8)}, owner ${stats.uid}): fix it or choose another with GUESTMEMFS_RUNTIME_DIR`,
      { syscall: 'mkdir', path: dir },
    );
  }
}

/** The socket of the service that serves this pool, when one is there (a socket file, or a link to one). */
export function servedSocket(pool: PoolIdentity, env: NodeJS.ProcessEnv = process.env): string | undefined {
  let socket: string;
  try {
    socket = defaultSocketPath(pool, env);
  } catch {
    return undefined;
  }
  return fs.statSync(socket, { throwIfNoEntry: false })?.isSocket() ? socket : undefined;
}

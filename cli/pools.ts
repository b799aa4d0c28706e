// How subcommands open pools: by path or inherited fd, mounted for a change or viewed read-only for a look, and closed
// afterwards unless the fd was inherited (the process that passed it keeps it).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError, hasCode } from '../lib/errors';
import type { Filesystem } from '../lib/fs/filesystem';
import { readPoolSuperblock } from '../lib/fs/format';
import { PoolState } from '../lib/fs/layout';
import { mount } from '../lib/fs/mount';
import type { MountOptions } from '../lib/fs/types';
import { TMPFS_MAGIC } from '../lib/pool/hugepages';
import { native } from '../lib/native';
import { type CreatePoolOptions, Pool, SMALL_PAGE_SIZE } from '../lib/pool/pool';
import { connect, type ServiceClient } from '../lib/service/client';
import { servedSocket } from '../lib/service/discovery';

/** `fd:N` for an inherited pool fd (as kexec passes one; `fd:N+M` with a hybrid pool's 1 GiB-page fd), otherwise a path. */
export function openPool(spec: string): Pool {
  if (spec.startsWith('fd:')) {
    const [fd, largeFd] = spec.slice(3).split('+').map(Number);
    const valid = (value: number | undefined) => Number.isInteger(value) && value! >= 0;
    if (!valid(fd) || (spec.includes('+') && !valid(largeFd))) throw new GuestmemfsError('EINVAL', `"${spec}" is not fd:N or fd:N+M`);
    return Pool.fromFd(fd!, spec.includes('+') ? largeFd : undefined);
  }
  return Pool.open(spec);
}

/** Runs fn, then cleanup: at once, or when the promise fn returned settles. */
function thenCleanUp<T>(fn: () => T, cleanup: () => void): T {
  let result: T;
  try {
    result = fn();
  } catch (error) {
    cleanup();
    throw error;
  }
  if (result instanceof Promise) return result.finally(cleanup) as T;
  cleanup();
  return result;
}

/** Runs fn on the pool `spec` names, then closes it unless its fd was inherited. */
export function withPool<T>(spec: string, fn: (pool: Pool) => T): T {
  const pool = openPool(spec);
  return thenCleanUp(
    () => fn(pool),
    () => {
      if (!spec.startsWith('fd:')) pool.close();
    },
  );
}

/** What a command changes or reads a pool through: the pool's mount service when one serves it, else a mount here. */
export type Metadata = Filesystem | ServiceClient;

/** The pool's identity, from its path (a tenant that may not open the pool can still find its service). */
function poolIdentity(spec: string): { dev: number; ino: number } {
  if (spec.startsWith('fd:')) return withPool(spec, (pool) => native.fdInfo(pool.fd));
  try {
    return fs.statSync(spec);
  } catch (error) {
    throw GuestmemfsError.from(error, { path: spec }).withRemedy('no pool there');
  }
}

/**
 * A client of the service serving the pool, if one answers on its socket. A socket left behind by a service that
 * was killed answers nothing: then the command works on the pool itself, as if it were not served.
 */
async function servedClient(spec: string): Promise<ServiceClient | undefined> {
  const socket = servedSocket(poolIdentity(spec));
  if (!socket) return undefined;
  try {
    return await connect(socket);
  } catch (error) {
    if (hasCode(error, 'ENOTCONN')) return undefined;
    throw error;
  }
}

/** Runs fn through the pool's service when one serves it, else on what `local` opens here. */
export async function servedOr<T, C extends Metadata = ServiceClient>(
  spec: string,
  fn: (gfs: C) => T | Promise<T>,
  local: () => T | Promise<T>,
): Promise<T> {
  const client = await servedClient(spec);
  if (!client) return local();
  return thenCleanUp(
    () => fn(client as C),
    () => client.close(),
  );
}

/** Runs fn through the pool's service when it is served, else on a mount of its own (see withMount). */
export function withFilesystem<T>(spec: string, fn: (gfs: Metadata) => T | Promise<T>): Promise<T> {
  return servedOr<T, Metadata>(spec, fn, () => withMount(spec, (gfs) => fn(gfs)));
}

/** Runs fn through the pool's service when it is served, else on a read-only view (see withView). */
export function withReader<T>(spec: string, fn: (gfs: Metadata) => T | Promise<T>): Promise<T> {
  return servedOr<T, Metadata>(spec, fn, () => withView(spec, (gfs) => fn(gfs)));
}

/** The backend a new pool at `poolPath` gets: hugetlbfs under a hugetlbfs mount, the 4 KiB fallback under tmpfs. */
export function backendFor(poolPath: string, pageSize: number | undefined): CreatePoolOptions['backend'] {
  if (pageSize === SMALL_PAGE_SIZE) return 'shm-4k';
  const dir = path.dirname(path.resolve(poolPath));
  let stats: fs.StatsFs;
  try {
    stats = fs.statfsSync(dir);
  } catch (error) {
    throw GuestmemfsError.from(error, { path: dir }).withRemedy(
      `the pool's directory must exist: create ${dir} (or mount a hugetlbfs there) first`,
    );
  }
  return stats.type === TMPFS_MAGIC && pageSize === undefined ? 'shm-4k' : 'hugetlbfs';
}

/** Runs fn on a read-only view: safe whatever the pool's state (mounted elsewhere, serialised, clean). */
export function withView<T>(spec: string, fn: (gfs: Filesystem, pool: Pool) => T): T {
  return withPool(spec, (pool) => {
    const gfs = mount(pool, { readOnly: true });
    return thenCleanUp(
      () => fn(gfs, pool),
      () => gfs.unmount(),
    );
  });
}

/** Runs fn on a normal mount (recovering a pool whose owner died); a serialised pool must be aborted first. */
export function withMount<T>(
  spec: string,
  fn: (gfs: Filesystem, pool: Pool) => T,
  options: { allowSerialised?: boolean; mount?: MountOptions } = {},
): T {
  return withPool(spec, (pool) => {
    const sb = readPoolSuperblock(pool);
    if (sb.state === PoolState.Serialised && !options.allowSerialised) {
      throw new GuestmemfsError(
        'EBUSY',
        `pool is serialised for handover (generation ${sb.generation}): run \`guestmemfs abort ${spec}\` to change it`,
        {
          syscall: 'mount',
          path: pool.label,
        },
      );
    }
    const gfs = mount(pool, options.mount);
    return thenCleanUp(
      () => fn(gfs, pool),
      () => {
        if (gfs.mounted) gfs.unmount();
      },
    );
  });
}

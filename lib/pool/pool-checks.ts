// The checks Pool.create and Pool.map make before asking the kernel, and the messages its failures get: which directory
// a backend needs, what a hybrid pool's second file must be, and what to do when pages run short.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError, hasCode } from '../errors';
import { formatSize, GiB } from '../units';
import { HUGETLBFS_MAGIC, hugetlbfsMounts, TMPFS_MAGIC } from './hugepages';
import type { CreatePoolOptions, PoolBackend } from './pool';

/** The page size of a hybrid pool's second file. */
export const LARGE_PAGE_SIZE = 1 * GiB;

export const isHugetlbBackend = (backend: PoolBackend) => backend === 'hugetlbfs' || backend === 'memfd-hugetlb';

/** [offset, length] pairs with any pair that crosses `at` cut in two there (the two sides are different files). */
export function splitAt(pairs: ArrayLike<number>, at: number): number[] {
  const out: number[] = [];
  for (let pair = 0; pair < pairs.length; pair += 2) {
    const offset = pairs[pair]!;
    const end = offset + pairs[pair + 1]!;
    if (offset < at && end > at) out.push(offset, at - offset, at, end - at);
    else out.push(offset, end - offset);
  }
  return out;
}

/**
 * Refuses a hybrid pool whose first file could not have 1 GiB pages after it: not huge pages smaller than 1 GiB, or
 * its end not on a GiB.
 */
export function requireHybridShape(
  backend: PoolBackend,
  pageSize: number,
  size: number,
  poolPath: string | undefined,
  syscall?: string,
): void {
  if (!isHugetlbBackend(backend) || pageSize >= LARGE_PAGE_SIZE || size % LARGE_PAGE_SIZE !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `a hybrid pool needs a first file of 2 MiB huge pages that is a whole number of GiB (${poolPath ?? 'the memfd'}: ${backend}, ` +
        `${formatSize(size)} of ${formatSize(pageSize)} pages): use size=1G or more, in whole GiB, of 2 MiB pages`,
      { syscall, path: poolPath },
    );
  }
}

/** Checks a hybrid pool's options before anything is created; returns where its 1 GiB-page file goes (if a path). */
export function checkLargeRegion(options: CreatePoolOptions, pageSize: number, poolPath: string | undefined): string | undefined {
  const large = options.large!;
  requireHybridShape(options.backend, pageSize, options.size, poolPath);
  if (!Number.isSafeInteger(large.size) || large.size <= 0 || large.size % LARGE_PAGE_SIZE !== 0) {
    throw new GuestmemfsError('EINVAL', `the 1 GiB-page region's size ${large.size} must be a positive whole number of GiB`, {
      path: poolPath,
    });
  }
  if (options.backend !== 'hugetlbfs') return undefined;
  if (!large.path)
    throw new GuestmemfsError('EINVAL', 'a hybrid hugetlbfs pool needs a path for its 1 GiB-page file (large.path)', { path: poolPath });
  const largePath = path.resolve(large.path);
  if (largePath === poolPath)
    throw new GuestmemfsError('EINVAL', 'the 1 GiB-page file must be a different file from the pool', { path: poolPath });
  checkDirectoryFilesystem('hugetlbfs', largePath, LARGE_PAGE_SIZE);
  return largePath;
}

/** Refuses a path whose directory is not on the right filesystem, naming mounts that would work. */
export function checkDirectoryFilesystem(backend: PoolBackend, poolPath: string, pageSize: number): void {
  const dir = path.dirname(poolPath);
  let stats: fs.StatsFs;
  try {
    stats = fs.statfsSync(dir);
  } catch (error) {
    throw GuestmemfsError.from(error, { path: dir }).withRemedy('create the directory (or mount hugetlbfs there) first');
  }
  if (backend === 'hugetlbfs') {
    const candidates = hugetlbfsMounts()
      .filter((mount) => mount.pageSize === pageSize)
      .map((mount) => mount.mountpoint);
    const suggestion = candidates.length
      ? `put the pool under ${candidates.join(' or ')}`
      : `mount one (mount -t hugetlbfs -o pagesize=${formatSize(pageSize).replace(' ', '').replace('iB', '')} none DIR, ` +
        `or reserveHugePages({ mount: true }))`;
    if (stats.type !== HUGETLBFS_MAGIC) {
      throw new GuestmemfsError('EINVAL', `${dir} is not on a hugetlbfs mount: ${suggestion}`, { syscall: 'statfs', path: poolPath });
    }
    if (stats.bsize !== pageSize) {
      throw new GuestmemfsError(
        'EINVAL',
        `${dir} is a hugetlbfs mount of ${formatSize(stats.bsize)} pages, not ${formatSize(pageSize)}: ${suggestion}`,
        { syscall: 'statfs', path: poolPath },
      );
    }
  } else if (stats.type !== TMPFS_MAGIC) {
    throw new GuestmemfsError('EINVAL', `${dir} is not on tmpfs: put a 4k-fallback pool under /dev/shm`, {
      syscall: 'statfs',
      path: poolPath,
    });
  }
}

export function explainAllocateFailure(
  error: unknown,
  backend: PoolBackend,
  pageSize: number,
  size: number,
  poolPath?: string,
  node?: number,
): GuestmemfsError {
  const converted = GuestmemfsError.from(error, { path: poolPath });
  // Faulting in a bound range that its node cannot fill fails as the SIGBUS it would otherwise be: EFAULT.
  const short = hasCode(converted, 'ENOSPC') || hasCode(converted, 'ENOMEM') || (node !== undefined && hasCode(converted, 'EFAULT'));
  if (!short) return converted;
  const where = node === undefined ? '' : ` on node ${node}`;
  return isHugetlbBackend(backend)
    ? converted.withRemedy(
        `could not reserve ${size / pageSize} ${formatSize(pageSize)} huge pages${where} (another process took them, ` +
          `or the hugetlbfs mount's size= limit is lower): raise nr_hugepages${node === undefined ? '' : ` of node ${node}`} or the ` +
          `mount limit, or use the 4k fallback`,
      )
    : converted.withRemedy(
        `could not reserve ${formatSize(size)} of shared memory${where}: free memory, enlarge /dev/shm, or use a smaller pool`,
      );
}

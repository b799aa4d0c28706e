// Pool backends on the real kernel: hugetlbfs (2 MiB and 1 GiB), hugetlb memfd, and the 4 KiB fallback; creation misuse.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { GiB, MiB, Pool } from '../lib/index';
import { captureError, distLib, machine, runFixture, skipReason, uniquePath } from './helpers';

const m = machine();
const opened: Pool[] = [];
afterEach(() => {
  while (opened.length) opened.pop()!.destroy();
});
function track(pool: Pool): Pool {
  opened.push(pool);
  return pool;
}

interface ReadResult {
  backend: string;
  pageSize: number;
  size: number;
  bytes: number[];
  kernelPageSizes: number[];
}

describe.skipIf(skipReason(m.skip2M))('hugetlbfs pool, 2 MiB pages', () => {
  it('allocates every page at creation (fallocate), before anything maps it', () => {
    const pool = track(Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'pool'), size: 16 * MiB }));
    // hugetlbfs counts allocated huge pages in st_blocks: all 8 exist although nothing has touched them.
    expect(fs.statSync(pool.path!).blocks * 512).toBe(16 * MiB);
    expect(pool.backend).toBe('hugetlbfs');
    expect(pool.pageSize).toBe(2 * MiB);
    expect(pool.isFallback).toBe(false);
  });

  it('maps with KernelPageSize 2048 kB and shares bytes between two mappings and with a second process', () => {
    const pool = track(Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'pool'), size: 16 * MiB }));
    const first = pool.map([{ offset: 4 * MiB, length: 4 * MiB }]);
    expect(first.kernelPageSizes()).toEqual([2 * MiB]);
    first.bytes().set([1, 2, 3, 4], 2 * MiB);
    const second = pool.map([{ offset: 6 * MiB, length: 2 * MiB }]);
    expect(Array.from(second.bytes(0, 4))).toEqual([1, 2, 3, 4]);
    const child = runFixture<ReadResult>('read-pool', [pool.path!, String(6 * MiB), String(2 * MiB), '4']);
    expect(child).toMatchObject({
      backend: 'hugetlbfs',
      pageSize: 2 * MiB,
      size: 16 * MiB,
      bytes: [1, 2, 3, 4],
      kernelPageSizes: [2 * MiB],
    });
    first.unmap();
    second.unmap();
  });

  it('reopens by path with backend and page size taken from the filesystem', () => {
    const created = track(Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'pool'), size: 8 * MiB }));
    const reopened = Pool.open(created.path!);
    expect([reopened.backend, reopened.pageSize, reopened.size]).toEqual(['hugetlbfs', 2 * MiB, 8 * MiB]);
    reopened.close();
  });

  it('reports pre-allocation progress up to the full size', () => {
    const calls: Array<[number, number]> = [];
    track(
      Pool.create({
        backend: 'hugetlbfs',
        path: uniquePath(m.hugetlbfs2M!, 'pool'),
        size: 8 * MiB,
        onProgress: (done, total) => calls.push([done, total]),
      }),
    );
    expect(calls.at(-1)).toEqual([8 * MiB, 8 * MiB]);
  });

  it('refuses a pool larger than the free huge pages with the exact remedy, creating nothing', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'too-big');
    const pages = 1_000_000;
    const error = captureError(() => Pool.create({ backend: 'hugetlbfs', path: poolPath, size: pages * 2 * MiB }));
    expect(error).toMatchObject({ code: 'ENOMEM', errno: -12, syscall: 'fallocate', path: poolPath });
    expect(error.message).toMatch(
      new RegExp(`need ${pages} free 2 MiB huge pages, \\d+ free: echo \\d+ > /proc/sys/vm/nr_hugepages as root, or use the 4k fallback`),
    );
    expect(fs.existsSync(poolPath)).toBe(false);
  });

  it('refuses a size that is not a multiple of the page size', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'odd');
    expect(captureError(() => Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 3 * MiB }))).toMatchObject({
      code: 'EINVAL',
      errno: -22,
    });
    expect(captureError(() => Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 0 }))).toMatchObject({ code: 'EINVAL' });
    expect(fs.existsSync(poolPath)).toBe(false);
  });

  it('refuses to overwrite an existing pool (O_EXCL)', () => {
    const pool = track(Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'pool'), size: 2 * MiB }));
    expect(captureError(() => Pool.create({ backend: 'hugetlbfs', path: pool.path!, size: 2 * MiB }))).toMatchObject({
      code: 'EEXIST',
      syscall: 'open',
      path: pool.path,
    });
  });

  it('refuses a hugetlbfs pool on another filesystem, naming a mount that would work', () => {
    const error = captureError(() => Pool.create({ backend: 'hugetlbfs', path: uniquePath('/tmp', 'not-huge'), size: 2 * MiB }));
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'statfs' });
    expect(error.message).toContain('is not on a hugetlbfs mount: put the pool under');
    expect(error.message).toContain(m.hugetlbfs2M!);
  });

  it('refuses a hugetlbfs mount of the wrong page size', () => {
    const error = captureError(() =>
      Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'pool'), size: GiB, pageSize: GiB }),
    );
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'statfs' });
    expect(error.message).toContain('is a hugetlbfs mount of 2 MiB pages, not 1 GiB');
  });
});

describe.skipIf(skipReason(m.skip2M))('hugetlb memfd pool', () => {
  it('creates a memfd with MFD_HUGETLB, maps 2 MiB pages, and a child that inherits the fd sees the same bytes', () => {
    const pool = track(Pool.create({ backend: 'memfd-hugetlb', size: 8 * MiB, pageSize: 2 * MiB, name: 'test-pool' }));
    expect(fs.readlinkSync(`/proc/self/fd/${pool.fd}`)).toContain('memfd:test-pool');
    const mapping = pool.mapAll();
    expect(mapping.kernelPageSizes()).toEqual([2 * MiB]);
    mapping.bytes().set([9, 8, 7], 2 * MiB);
    const again = pool.map([{ offset: 2 * MiB, length: 2 * MiB }]);
    expect(Array.from(again.bytes(0, 3))).toEqual([9, 8, 7]);
    const child = runFixture<ReadResult>('read-pool', ['fd:3', String(2 * MiB), String(2 * MiB), '3'], {
      stdio: ['ignore', 'pipe', 'pipe', pool.fd],
    });
    expect(child).toMatchObject({
      backend: 'memfd-hugetlb',
      pageSize: 2 * MiB,
      size: 8 * MiB,
      bytes: [9, 8, 7],
      kernelPageSizes: [2 * MiB],
    });
    mapping.unmap();
    again.unmap();
  });

  it('refuses a memfd pool larger than the free huge pages, naming the remedy', () => {
    const error = captureError(() => Pool.create({ backend: 'memfd-hugetlb', size: 1_000_000 * 2 * MiB, pageSize: 2 * MiB }));
    expect(error).toMatchObject({ code: 'ENOMEM' });
    expect(error.message).toContain('/proc/sys/vm/nr_hugepages');
  });
});

describe('4 KiB fallback pools', () => {
  it('shm-4k: a file under /dev/shm, pre-allocated, says it is the fallback, shared with a second process', () => {
    const pool = track(Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-test'), size: 4 * MiB }));
    expect(pool.isFallback).toBe(true);
    expect(pool.pageSize).toBe(4096);
    expect(pool.describe()).toContain('fallback');
    expect(fs.statSync(pool.path!).blocks * 512).toBe(4 * MiB);
    const mapping = pool.map([{ offset: 8192, length: 4096 }]);
    expect(mapping.kernelPageSizes()).toEqual([4096]);
    expect(mapping.hugepageAdvice).toBe(true); // MADV_HUGEPAGE is tried on the fallback
    mapping.bytes().set([5, 6], 0);
    const child = runFixture<ReadResult>('read-pool', [pool.path!, '8192', '4096', '2']);
    expect(child).toMatchObject({ backend: 'shm-4k', pageSize: 4096, bytes: [5, 6] });
    mapping.unmap();
  });

  it('memfd-4k: a plain memfd, inherited by a child', () => {
    const pool = track(Pool.create({ backend: 'memfd-4k', size: 1 * MiB }));
    expect(pool.isFallback).toBe(true);
    const mapping = pool.mapAll();
    mapping.bytes()[12345] = 42;
    const child = runFixture<ReadResult>('read-pool', ['fd:3', '12288', '4096', '58'], { stdio: ['ignore', 'pipe', 'pipe', pool.fd] });
    expect(child.backend).toBe('memfd-4k');
    expect(child.bytes[57]).toBe(42);
    mapping.unmap();
  });

  it('refuses a fallback pool outside tmpfs', () => {
    const error = captureError(() => Pool.create({ backend: 'shm-4k', path: uniquePath('/tmp', 'nope'), size: 4096 }));
    expect(error).toMatchObject({ code: 'EINVAL', syscall: 'statfs' });
    expect(error.message).toContain('/dev/shm');
  });
});

describe.skipIf(skipReason(m.skip1G))('hugetlbfs pool, 1 GiB pages', () => {
  it('maps with KernelPageSize 1048576 kB and shares bytes across mappings', () => {
    const pool = track(Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs1G!, 'pool'), size: GiB, pageSize: GiB }));
    expect(pool.pageSize).toBe(GiB);
    const first = pool.mapAll();
    expect(first.kernelPageSizes()).toEqual([GiB]);
    first.bytes()[GiB - 1] = 77;
    const second = pool.mapAll({ populate: false });
    expect(second.bytes()[GiB - 1]).toBe(77);
    expect(second.physicalFrames()).toEqual(first.physicalFrames());
    first.unmap();
    second.unmap();
  });
});

describe('opening pools: misuse', () => {
  it('a missing path gives ENOENT with the path and a remedy', () => {
    const error = captureError(() => Pool.open('/dev/shm/guestmemfs-does-not-exist'));
    expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: '/dev/shm/guestmemfs-does-not-exist' });
    expect(error.message).toContain('create one first');
  });

  it('a file on a disk filesystem is not a pool', () => {
    const file = uniquePath('/tmp', 'plain-file');
    fs.writeFileSync(file, Buffer.alloc(4096));
    try {
      expect(captureError(() => Pool.open(file)).message).toContain('not a pool: the file is on neither hugetlbfs nor tmpfs');
    } finally {
      fs.rmSync(file);
    }
  });

  it('an empty tmpfs file is not a pool', () => {
    const file = uniquePath('/dev/shm', 'empty');
    fs.writeFileSync(file, '');
    try {
      expect(captureError(() => Pool.open(file)).message).toContain('not a positive multiple');
    } finally {
      fs.rmSync(file);
    }
  });

  it('an unknown backend and a missing path are refused before anything is created', () => {
    expect(captureError(() => Pool.create({ backend: 'tape' as never, size: 4096 })).code).toBe('EINVAL');
    expect(captureError(() => Pool.create({ backend: 'shm-4k', size: 4096 })).message).toContain('needs a path');
  });

  it('a closed pool refuses to map with EBADF', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 4096 });
    pool.close();
    expect(captureError(() => pool.mapAll())).toMatchObject({ code: 'EBADF', errno: -9 });
  });

  it('the module loads in a plain Node process from the compiled output', () => {
    // The raw addon is not public API: the package loads it, and only lib/native.js hands it out.
    const nativeModule = path.join(path.dirname(distLib), 'native.js');
    const script =
      `const g=require(${JSON.stringify(distLib)}); const n=require(${JSON.stringify(nativeModule)}).native; ` +
      `console.log(n.napiVersion, n.buildType, 'native' in g)`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(result.stdout.trim()).toBe(`8 ${process.env.GUESTMEMFS_BUILD ?? 'Release'} false`);
  });
});

// Hybrid pools: one filesystem over a file of 2 MiB pages and a file of 1 GiB pages. A file gets 1 GiB pages where
// they fit, falls back to 2 MiB pages (and says so) when none is left, maps as one range with each part at its own
// page size (as /proc/self/smaps reports), frees a 1 GiB page only whole, hands over and checks clean; misuse is refused.
import { once } from 'node:events';
import * as fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { readPoolSuperblock } from '../lib/fs/format';
import { FIXED_HEADER_BYTES, INCOMPAT_HYBRID, largeFromBlockOf, readSuperblock } from '../lib/fs/layout';
import { MappedMetadata } from '../lib/fs/metadata';
import { type MetadataViews, openViews } from '../lib/fs/views';
import { describeFiles } from '../lib/fs/external';
import { check, decodeHandoverBlob, GiB, MiB, mkfs, mount, Pool, qemuArgs, type Mapping } from '../lib/index';
import { connect } from '../lib/service/client';
import { captureError, machine, skipReason, uniquePath } from './helpers';
import { runtimeDirectory, startService } from './service-helpers';

const m = machine();
const skip = skipReason(m.skip2M || m.skip1G);
const created: Pool[] = [];
afterEach(() => {
  for (const pool of created.splice(0)) pool.destroy();
});

/** A hybrid pool of 2 GiB of 2 MiB pages and one 1 GiB page, path-backed. */
function hybridPool(stem: string): Pool {
  const pool = Pool.create({
    backend: 'hugetlbfs',
    path: uniquePath(m.hugetlbfs2M!, stem),
    size: 2 * GiB,
    large: { size: 1 * GiB, path: uniquePath(m.hugetlbfs1G!, stem) },
  });
  created.push(pool);
  return pool;
}

/** The KernelPageSize of each VMA inside a mapping, in order, as [bytes into the mapping, length, page size]. */
function pageSizes(mapping: Mapping): Array<[number, number, number]> {
  const start = mapping.address;
  const end = start + BigInt(mapping.length);
  const out: Array<[number, number, number]> = [];
  for (const entry of fs.readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
    const [from, to] = entry
      .split(' ')[0]!
      .split('-')
      .map((hex) => BigInt(`0x${hex}`));
    if (from! < start || to! > end) continue;
    const kib = Number(/KernelPageSize:\s+(\d+) kB/.exec(entry)![1]);
    out.push([Number(from! - start), Number(to! - from!), kib * 1024]);
  }
  return out;
}

describe('hybrid pools', () => {
  it.skipIf(skip)('a file gets a 1 GiB page where one fits and 2 MiB pages for the rest, mapped as one range', () => {
    const pool = hybridPool('hybrid-map');
    mkfs(pool);
    expect(readPoolSuperblock(pool).incompat & INCOMPAT_HYBRID).toBe(INCOMPAT_HYBRID);
    const gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 1 * GiB + 256 * MiB);
    expect(gfs.statfs()).toMatchObject({ largePages: { total: 1, free: 0 }, largeFallbacks: 0 });
    const ram = gfs.map('/ram');
    expect(ram.length).toBe(1 * GiB + 256 * MiB);
    // Adjacent 2 MiB VMAs may be split by the kernel's own accounting: merge by page size before comparing.
    const merged: Array<[number, number, number]> = [];
    for (const [at, length, size] of pageSizes(ram)) {
      const last = merged.at(-1);
      if (last && last[2] === size && last[0] + last[1] === at) last[1] += length;
      else merged.push([at, length, size]);
    }
    expect(merged).toEqual([
      [0, 1 * GiB, 1 * GiB],
      [1 * GiB, 256 * MiB, 2 * MiB],
    ]);
    // Bytes on both sides of the seam, and at each end, read back through a second mapping of the file.
    const marks = [0, 1 * GiB - 1, 1 * GiB, ram.length - 1];
    marks.forEach((at, index) => (ram.bytes(at, 1)[0] = 0xa0 + index));
    ram.unmap();
    const again = gfs.map('/ram', { writable: false });
    expect(marks.map((at) => again.bytes(at, 1)[0])).toEqual([0xa0, 0xa1, 0xa2, 0xa3]);
    again.unmap();
    gfs.unmount();
    expect(check(pool)).toMatchObject({ state: 'consistent', problems: [] });
  });

  it.skipIf(skip)('falls back to 2 MiB pages when no 1 GiB page is free, and says so', async () => {
    const pool = hybridPool('hybrid-fallback');
    mkfs(pool);
    const gfs = mount(pool);
    gfs.create('/first');
    gfs.truncate('/first', 1 * GiB);
    gfs.create('/second');
    const warned = once(process, 'warning') as Promise<[Error & { code?: string }]>;
    gfs.truncate('/second', 1 * GiB);
    const [warning] = await warned;
    expect(warning.code).toBe('GUESTMEMFS_LARGE_FALLBACK');
    expect(warning.message).toContain("1 GiB of '/second' got 2 MiB pages");
    expect(gfs.statfs()).toMatchObject({ largePages: { total: 1, free: 0 }, largeFallbacks: 1 });
    const second = gfs.map('/second', { writable: false });
    expect(new Set(pageSizes(second).map(([, , size]) => size))).toEqual(new Set([2 * MiB]));
    second.unmap();
    gfs.unmount();
    expect(check(pool).state).toBe('consistent');
  });

  it.skipIf(skip)('frees a 1 GiB page only whole: a shrink into it keeps it, a shrink past it frees it', () => {
    const pool = hybridPool('hybrid-shrink');
    mkfs(pool);
    const gfs = mount(pool);
    gfs.create('/ram');
    gfs.truncate('/ram', 1 * GiB + 64 * MiB);
    const free = gfs.statfs().freeBlocks;
    gfs.truncate('/ram', 512 * MiB);
    // The 64 MiB of 2 MiB pages go; the 1 GiB page stays, its tail zeroed if the file grows over it again.
    expect(gfs.statfs()).toMatchObject({ freeBlocks: free + 32, largePages: { free: 0 } });
    const ram = gfs.map('/ram');
    expect(ram.length).toBe(1 * GiB);
    ram.bytes(GiB - 1, 1)[0] = 0x77;
    ram.unmap();
    gfs.truncate('/ram', 1 * GiB);
    const regrown = gfs.map('/ram', { writable: false });
    expect(regrown.bytes(GiB - 1, 1)[0]).toBe(0);
    regrown.unmap();
    gfs.unmount();
    expect(check(pool).state).toBe('consistent');
    const again = mount(pool);
    again.truncate('/ram', 0);
    expect(again.statfs().largePages).toEqual({ total: 1, free: 1 });
    again.unmount();
  });

  it.skipIf(skip)('hands over: the blob records the 1 GiB pages, a pool opened by path finds its second file again', () => {
    const pool = hybridPool('hybrid-handover');
    mkfs(pool);
    let gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 1 * GiB + 2 * MiB);
    const ram = gfs.map('/ram');
    ram.bytes(1 * GiB - 8, 8).set([1, 2, 3, 4, 5, 6, 7, 8]);
    ram.unmap();
    const { blob } = gfs.serialise();
    expect(decodeHandoverBlob(blob).fsMem.large).toEqual({ offset: 2 * GiB, size: 1 * GiB, pageSize: 1 * GiB, path: pool.large!.path });
    gfs.unmount();
    const reopened = Pool.open(pool.path!);
    created.push(reopened);
    expect(reopened.large).toBeUndefined();
    gfs = mount(reopened, { requireHandover: true });
    expect(gfs.restored).toBeTruthy();
    expect(reopened.large).toMatchObject({ path: pool.large!.path, size: 1 * GiB, from: 2 * GiB });
    const again = gfs.map('/ram', { writable: false });
    expect([...again.bytes(1 * GiB - 8, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    again.unmap();
    gfs.unmount();
    expect(check(reopened).state).toBe('consistent');
  });

  it.skipIf(skip)("a client of the pool's service maps a hybrid file from both files it is passed", async () => {
    const pool = hybridPool('hybrid-served');
    mkfs(pool);
    const runtime = runtimeDirectory();
    const service = await startService(pool.path!, runtime);
    const client = await connect(service.socket);
    try {
      await client.create('/ram', { type: 'guest' });
      await client.truncate('/ram', 1 * GiB + 2 * MiB);
      const ram = await client.map('/ram');
      expect(pageSizes(ram).map(([, , size]) => size)).toEqual([1 * GiB, 2 * MiB]);
      ram.bytes(1 * GiB, 1)[0] = 0x5a;
      ram.unmap();
      expect(client.pool().large).toMatchObject({ from: 2 * GiB, size: 1 * GiB });
    } finally {
      client.close();
      service.child.kill('SIGTERM');
      await service.exited;
      fs.rmSync(runtime, { recursive: true, force: true });
    }
    const gfs = mount(pool, { readOnly: true });
    const again = gfs.map('/ram', { writable: false });
    expect(again.bytes(1 * GiB, 1)[0]).toBe(0x5a);
    again.unmap();
    gfs.unmount();
  });

  it.skipIf(skip)("QEMU backs a file on 1 GiB pages with the 1 GiB-page file, at that file's own offset", () => {
    const pool = hybridPool('hybrid-qemu');
    mkfs(pool);
    const gfs = mount(pool);
    gfs.create('/big', { type: 'guest' });
    gfs.truncate('/big', 1 * GiB);
    gfs.create('/small', { contiguous: true, type: 'guest' });
    gfs.truncate('/small', 64 * MiB);
    gfs.unmount();
    const [big, small] = describeFiles(pool, ['/big', '/small']);
    expect(qemuArgs(pool.path!, big!, 0, pool.large)[1]).toBe(
      `memory-backend-file,id=gmfs0-big,mem-path=${pool.large!.path},offset=0,size=${GiB},share=on`,
    );
    expect(qemuArgs(pool.path!, small!, 1, pool.large)[1]).toContain(`mem-path=${pool.path},offset=${small!.extents[0]!.offset},`);
  });

  it.skipIf(skip)('the checker refuses a file that holds part of a 1 GiB page', () => {
    const pool = hybridPool('hybrid-check');
    mkfs(pool);
    const gfs = mount(pool);
    gfs.create('/ram');
    gfs.truncate('/ram', 1 * GiB);
    const ino = gfs.stat('/ram').ino;
    gfs.unmount();
    expect(check(pool).state).toBe('consistent');
    // As a release that split 1 GiB pages would leave it: the file holds the first half of its page, the rest is free.
    const edit = (fn: (views: MetadataViews) => void) => {
      const header = pool.map([{ offset: 0, length: 2 * MiB }], { populate: false });
      const sb = readSuperblock(header.bytes(0, FIXED_HEADER_BYTES), pool);
      header.unmap();
      const meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false });
      fn(openViews(new MappedMetadata(meta.id), sb.geometry, sb.badBlocks, largeFromBlockOf(sb)));
      meta.unmap();
    };
    edit(({ inodes, extents, allocator }) => {
      const [run] = extents.read(ino);
      extents.truncate(ino, run!.length / 2);
      inodes.setBlockCount(ino, run!.length / 2);
      inodes.setSize(ino, 512 * MiB);
      allocator.markFree([{ start: run!.start + run!.length / 2, length: run!.length / 2 }]);
    });
    const result = check(pool);
    expect(result.state).not.toBe('consistent');
    expect(result.problems.join('\n')).toContain('are 1 GiB pages, but not whole pages at a GiB of the file');
  });

  it.skipIf(skip)('refuses what a hybrid pool cannot be, and changes nothing', () => {
    const stray = uniquePath(m.hugetlbfs2M!, 'hybrid-bad');
    const strayLarge = uniquePath(m.hugetlbfs1G!, 'hybrid-bad');
    const notWhole = captureError(() =>
      Pool.create({ backend: 'hugetlbfs', path: stray, size: 512 * MiB, large: { size: GiB, path: strayLarge } }),
    );
    expect(notWhole).toMatchObject({ code: 'EINVAL', message: expect.stringContaining('whole number of GiB') });
    const noPath = captureError(() => Pool.create({ backend: 'hugetlbfs', path: stray, size: GiB, large: { size: GiB } }));
    expect(noPath).toMatchObject({ code: 'EINVAL', message: expect.stringContaining('large.path') });
    const wrongMount = captureError(() =>
      Pool.create({ backend: 'hugetlbfs', path: stray, size: GiB, large: { size: GiB, path: uniquePath(m.hugetlbfs2M!, 'x') } }),
    );
    expect(wrongMount).toMatchObject({ code: 'EINVAL', message: expect.stringContaining('2 MiB pages, not 1 GiB') });
    expect(fs.existsSync(stray) || fs.existsSync(strayLarge)).toBe(false);

    const pool = hybridPool('hybrid-misuse');
    expect(captureError(() => mkfs(pool, { maxSize: 4 * GiB }))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringContaining('drop maxSize'),
    });
    mkfs(pool);
    const gfs = mount(pool);
    expect(captureError(() => gfs.resize(4 * GiB))).toMatchObject({ code: 'ENOTSUP' });
    gfs.create('/ram');
    gfs.truncate('/ram', GiB);
    const ram = gfs.map('/ram');
    // Part of a 1 GiB page cannot be mapped: the pool refuses, the kernel is never asked.
    expect(captureError(() => pool.map([{ offset: 2 * GiB, length: 2 * MiB }]))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringContaining('map 1 GiB pages whole'),
    });
    ram.unmap();
    gfs.unmount();

    // The second file gone: the pool opened by path is refused with the remedy, and left as it was.
    const largePath = pool.large!.path!;
    const saved = `${largePath}.moved`;
    fs.renameSync(largePath, saved);
    try {
      const reopened = Pool.open(pool.path!);
      created.push(reopened);
      expect(captureError(() => mount(reopened))).toMatchObject({
        code: 'ENOENT',
        message: expect.stringContaining('1 GiB pages is missing'),
      });
    } finally {
      fs.renameSync(saved, largePath);
    }
    expect(check(pool).state).toBe('consistent');
  });
});

// Machine detection (/proc/mounts, sysfs huge page counters) and the root helper that reserves pages and mounts hugetlbfs.
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  GiB,
  hugePageSizeInfo,
  hugePageSizes,
  hugetlbfsMounts,
  machineSupport,
  MiB,
  requireFreeHugePages,
  reserveHugePages,
} from '../lib/index';
import { captureError, machine, skipReason } from './helpers';

const m = machine();

describe('detecting what the machine offers', () => {
  it('parses hugetlbfs mounts with and without pagesize=, unescaping octal in paths', () => {
    const text = [
      'proc /proc proc rw,nosuid 0 0',
      'hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0',
      'none /mnt/huge\\0401G hugetlbfs rw,relatime,pagesize=1024M 0 0',
      'none /mnt/default hugetlbfs rw,relatime 0 0',
      'tmpfs /dev/shm tmpfs rw 0 0',
    ].join('\n');
    expect(hugetlbfsMounts(text)).toEqual([
      { mountpoint: '/dev/hugepages', pageSize: 2 * MiB, options: 'rw,relatime,pagesize=2M' },
      { mountpoint: '/mnt/huge 1G', pageSize: GiB, options: 'rw,relatime,pagesize=1024M' },
      { mountpoint: '/mnt/default', pageSize: 2 * MiB, options: 'rw,relatime' },
    ]);
  });

  it('reads per-size counters from sysfs that agree with /proc/meminfo for the default size', () => {
    const sizes = hugePageSizes();
    expect(sizes.map((size) => size.pageSize)).toContain(2 * MiB);
    const meminfo = fs.readFileSync('/proc/meminfo', 'utf8');
    const total = Number(/HugePages_Total:\s+(\d+)/.exec(meminfo)![1]);
    expect(hugePageSizeInfo(2 * MiB)!.total).toBe(total);
    for (const size of sizes) expect(size.available).toBe(Math.max(0, size.free - size.reserved));
  });

  it('summarises the machine, including our own test mounts when root', () => {
    const support = machineSupport();
    expect(support.defaultHugePageSize).toBe(2 * MiB);
    if (m.hugetlbfs2M) expect(support.hugetlbfsMounts.map((mount) => mount.mountpoint)).toContain(m.hugetlbfs2M);
  });

  it('names the exact command when pages are short, and refuses a page size the kernel lacks', () => {
    const short = captureError(() => requireFreeHugePages(2 * MiB, 10_000_000, { path: '/x' }));
    expect(short).toMatchObject({ code: 'ENOMEM', errno: -12, path: '/x' });
    expect(short.message).toMatch(
      /^ENOMEM: need 10000000 free 2 MiB huge pages, \d+ free: echo \d+ > \/proc\/sys\/vm\/nr_hugepages as root, or use the 4k fallback$/,
    );
    const oneGig = captureError(() => requireFreeHugePages(GiB, 1_000_000));
    if (hugePageSizeInfo(GiB)) {
      expect(oneGig.message).toContain('echo');
      expect(oneGig.message).toContain('/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages');
    } else {
      // A kernel without 1 GiB pages (no hugepages-1048576kB in sysfs) says so, rather than naming a file it lacks.
      expect(oneGig).toMatchObject({ code: 'EINVAL' });
      expect(oneGig.message).toContain('no 1 GiB huge pages');
    }
    const missing = captureError(() => requireFreeHugePages(64 * 1024, 1));
    expect(missing).toMatchObject({ code: 'EINVAL' });
    expect(missing.message).toContain('no 64 KiB huge pages');
  });
});

describe.skipIf(skipReason(m.isRoot ? '' : 'not root: reserving huge pages needs root'))('reserving huge pages (root)', () => {
  it('raises nr_hugepages only by the shortfall, mounts a private hugetlbfs, and undoes both', () => {
    const before = hugePageSizeInfo(2 * MiB)!;
    const reservation = reserveHugePages({ pageSize: 2 * MiB, pages: before.available + 3, mount: true });
    try {
      expect(reservation.previousTotal).toBe(before.total);
      expect(reservation.total).toBeGreaterThanOrEqual(before.total + 3);
      expect(reservation.changes[0]).toContain(`from ${before.total} to ${reservation.total}`);
      const mount = hugetlbfsMounts().find((entry) => entry.mountpoint === reservation.mountpoint);
      expect(mount).toMatchObject({ pageSize: 2 * MiB });
      expect(mount!.options).toContain('mode=700');
    } finally {
      reservation.release();
    }
    expect(hugetlbfsMounts().some((entry) => entry.mountpoint === reservation.mountpoint)).toBe(false);
    expect(fs.existsSync(reservation.mountpoint!)).toBe(false);
    expect(hugePageSizeInfo(2 * MiB)!.total).toBe(before.total);
    reservation.release(); // idempotent
  });

  it('changes nothing when enough pages are already free', () => {
    const before = hugePageSizeInfo(2 * MiB)!;
    const reservation = reserveHugePages({ pageSize: 2 * MiB, pages: 0 });
    expect(reservation.changes).toEqual([]);
    expect(reservation.total).toBe(before.total);
    reservation.release();
    expect(hugePageSizeInfo(2 * MiB)!.total).toBe(before.total);
  });

  it('refuses bad counts', () => {
    expect(captureError(() => reserveHugePages({ pageSize: 2 * MiB, pages: -1 })).code).toBe('EINVAL');
  });
});

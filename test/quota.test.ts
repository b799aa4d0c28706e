// Quotas: block limits per uid and per directory tree, kept in the pool (RO_COMPAT_QUOTA), enforced with EDQUOT by
// every allocation path, and usage that always equals a recount from the inodes.
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { contextOf } from '../lib/fs/filesystem';
import { readPoolSuperblock } from '../lib/fs/format';
import { RO_COMPAT_QUOTA, SLOT_A_OFFSET, SLOT_B_OFFSET } from '../lib/fs/layout';
import { recountedUsage } from '../lib/fs/quota';
import { check, KiB, mount } from '../lib/index';
import { smallFs, type TestFs } from './fs-helpers';
import { captureError, captureRejection } from './helpers';

const B = 64 * KiB;
let t: TestFs;

afterEach(() => t?.close());

/** Every limit's usage against a fresh count from the inodes. */
function expectUsageMatchesRecount(): void {
  const ctx = contextOf(t.fs);
  const fresh = recountedUsage(ctx);
  for (const quota of t.fs.quotas()) {
    const recount = quota.kind === 'uid' ? fresh?.byUid.get(quota.id) : fresh?.byDir.get(quota.id);
    expect(quota.usedBlocks, `${quota.kind} ${quota.id}`).toBe(recount ?? 0);
  }
}

describe('quotas', () => {
  it('a uid limit refuses truncate, truncateAsync and extending writes with EDQUOT, naming the remedy, and changes nothing', async () => {
    t = smallFs();
    const gfs = t.fs;
    gfs.setQuota({ uid: 0 }, 4 * B + B / 2); // rounded down to 4 blocks
    expect(gfs.quotas()).toEqual([{ kind: 'uid', id: 0, limitBlocks: 4, usedBlocks: 0, limitBytes: 4 * B, usedBytes: 0 }]);
    gfs.create('/a', { type: 'guest' });
    gfs.truncate('/a', 3 * B);
    const free = gfs.statfs().freeBlocks;
    const error = captureError(() => gfs.truncate('/a', 5 * B));
    expect(error).toMatchObject({ code: 'EDQUOT', errno: -122, syscall: 'ftruncate', path: '/a' });
    expect(error.message).toContain('uid 0 holds 3 of its 4-block limit');
    expect(error.message).toContain('guestmemfs quota POOL --uid 0 SIZE');
    expect(gfs.stat('/a')).toMatchObject({ size: 3 * B, blocks: 3 });
    expect(gfs.statfs().freeBlocks).toBe(free);
    expect(await captureRejection(gfs.truncateAsync('/a', 6 * B))).toMatchObject({ code: 'EDQUOT' });
    gfs.create('/s', { type: 'state' });
    expect(captureError(() => gfs.write('/s', new Uint8Array(2 * B)))).toMatchObject({ code: 'EDQUOT', syscall: 'ftruncate' });
    expect(gfs.stat('/s').size).toBe(0);
    await gfs.truncateAsync('/a', 4 * B); // exactly at the limit is allowed
    expect(gfs.quotas()[0]).toMatchObject({ usedBlocks: 4 });
    gfs.truncate('/a', B); // shrinking gives blocks back
    expect(gfs.quotas()[0]).toMatchObject({ usedBlocks: 1 });
    gfs.setQuota({ uid: 0 }, null);
    expect(gfs.quotas()).toEqual([]);
    gfs.truncate('/a', 10 * B);
    expect(gfs.audit().problems).toEqual([]);
  });

  it('a directory limit counts every file below it; renames in are refused when they do not fit; unlink and chown move usage', () => {
    t = smallFs();
    const gfs = t.fs;
    gfs.mkdir('/tenant/vm0', { recursive: true });
    gfs.mkdir('/outside');
    gfs.setQuota({ dir: '/tenant' }, 5 * B);
    gfs.create('/tenant/vm0/ram', { type: 'guest' });
    gfs.truncate('/tenant/vm0/ram', 4 * B);
    gfs.create('/outside/big', { type: 'guest' });
    gfs.truncate('/outside/big', 2 * B);
    expect(captureError(() => gfs.rename('/outside/big', '/tenant/big'))).toMatchObject({ code: 'EDQUOT', syscall: 'rename' });
    expect(gfs.exists('/outside/big')).toBe(true);
    expect(captureError(() => gfs.truncate('/tenant/vm0/ram', 6 * B)).message).toContain('directory /tenant holds 4 of its 5-block limit');
    gfs.rename('/tenant/vm0', '/outside/vm0'); // out of the tree: its blocks leave the count
    expect(gfs.quotas()[0]).toMatchObject({ kind: 'dir', path: '/tenant', usedBlocks: 0 });
    gfs.rename('/outside/big', '/tenant/big');
    expect(gfs.quotas()[0]).toMatchObject({ usedBlocks: 2 });
    gfs.unlink('/tenant/big');
    expect(gfs.quotas()[0]).toMatchObject({ usedBlocks: 0 });
    // A chown hands the blocks to the new owner's account, which must hold them.
    gfs.setQuota({ uid: 1000 }, 3 * B);
    expect(captureError(() => gfs.chown('/outside/vm0/ram', 1000, undefined))).toMatchObject({ code: 'EDQUOT', syscall: 'chown' });
    gfs.truncate('/outside/vm0/ram', 3 * B);
    gfs.chown('/outside/vm0/ram', 1000, undefined);
    expect(gfs.quotas().find((quota) => quota.kind === 'uid')).toMatchObject({ id: 1000, usedBlocks: 3 });
    expectUsageMatchesRecount();
  });

  it('limits live in the pool: they survive a remount and a handover, mark the pool RO_COMPAT_QUOTA, and are checksummed', () => {
    t = smallFs();
    const gfs = t.fs;
    expect(gfs.superblock.roCompat & RO_COMPAT_QUOTA).toBe(0);
    gfs.setQuota({ uid: 7 }, 3 * B);
    expect(gfs.superblock.roCompat & RO_COMPAT_QUOTA).toBe(RO_COMPAT_QUOTA);
    gfs.setQuota({ uid: 8 }, 2 * B);
    gfs.serialise();
    gfs.unmount();
    const restored = mount(t.pool);
    expect(restored.restored).toBeDefined();
    expect(restored.quotas().map((quota) => [quota.id, quota.limitBlocks])).toEqual([
      [7, 3],
      [8, 2],
    ]);
    // Damage the quota table of the newest superblock copy: its checksum refuses it, and the older copy speaks.
    restored.unmount();
    const newest = readPoolSuperblock(t.pool).slot;
    const header = t.pool.mapAll();
    const bytes = header.bytes(newest === 0 ? SLOT_A_OFFSET : SLOT_B_OFFSET, 4096);
    bytes[528 + 12] = bytes[528 + 12]! ^ 0xff; // the first entry's limit
    header.unmap();
    expect(readPoolSuperblock(t.pool).slot).toBe(1 - newest);
    const fallback = mount(t.pool);
    expect(fallback.quotas().length).toBeGreaterThan(0);
    fallback.setQuota({ uid: 7 }, null);
    fallback.setQuota({ uid: 8 }, null);
    expect(fallback.superblock.roCompat & RO_COMPAT_QUOTA).toBe(0); // no limits left: nothing for an older release to ignore
    fallback.unmount();
    expect(check(t.pool).state).toBe('consistent');
    t = { ...t, fs: mount(t.pool) };
  });

  it('only root sets limits, and bad input changes nothing', () => {
    t = smallFs();
    t.fs.mkdir('/d');
    t.fs.create('/f');
    expect(captureError(() => t.fs.setQuota({ dir: '/f' }, B))).toMatchObject({ code: 'ENOTDIR' });
    expect(captureError(() => t.fs.setQuota({ uid: -5 }, B))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => t.fs.setQuota({ uid: 1 }, -1))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => t.fs.setQuota({ dir: '/missing' }, B))).toMatchObject({ code: 'ENOENT' });
    expect(captureError(() => t.fs.actingAs({ uid: 1000, gid: 1000 }, () => t.fs.setQuota({ uid: 1000 }, 100 * B)))).toMatchObject({
      code: 'EPERM',
      syscall: 'quotactl',
    });
    expect(t.fs.quotas()).toEqual([]);
    expect(t.fs.superblock.roCompat & RO_COMPAT_QUOTA).toBe(0);
  });

  it('usage always equals a recount from the inodes, whatever operations run (fast-check)', () => {
    const names = ['/a', '/b', '/d/a', '/d/b', '/d/e/a', '/e/a'];
    const step = fc.oneof(
      fc.record({ op: fc.constant('truncate' as const), path: fc.constantFrom(...names), blocks: fc.integer({ min: 0, max: 6 }) }),
      fc.record({
        op: fc.constant('rename' as const),
        from: fc.constantFrom(...names, '/d/e', '/e'),
        to: fc.constantFrom(...names, '/d/e', '/e', '/d/x'),
      }),
      fc.record({ op: fc.constant('unlink' as const), path: fc.constantFrom(...names) }),
      fc.record({ op: fc.constant('chown' as const), path: fc.constantFrom(...names), uid: fc.constantFrom(0, 1, 2) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
        t?.close();
        t = smallFs({ size: 8 * 1024 * KiB });
        const gfs = t.fs;
        gfs.mkdir('/d/e', { recursive: true });
        gfs.mkdir('/e');
        for (const name of names) gfs.create(name, { type: 'guest' });
        gfs.setQuota({ dir: '/d' }, 12 * B);
        gfs.setQuota({ dir: '/d/e' }, 4 * B);
        gfs.setQuota({ uid: 1 }, 5 * B);
        gfs.setQuota({ uid: 0 }, 30 * B);
        for (const s of steps) {
          try {
            if (s.op === 'truncate') gfs.truncate(s.path, s.blocks * B);
            else if (s.op === 'rename') gfs.rename(s.from, s.to);
            else if (s.op === 'unlink') gfs.unlink(s.path);
            else gfs.chown(s.path, s.uid, undefined);
          } catch (error) {
            expect(['ENOENT', 'EDQUOT', 'ENOSPC', 'EISDIR', 'ENOTDIR', 'EINVAL', 'ENOTEMPTY']).toContain((error as { code: string }).code);
          }
          expectUsageMatchesRecount();
          for (const quota of gfs.quotas()) expect(quota.usedBlocks).toBeLessThanOrEqual(quota.limitBlocks);
        }
      }),
      { numRuns: 60 },
    );
  });
});

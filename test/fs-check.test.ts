// The consistency checker: consistent, repaired (with fixes) or inconsistent (with reasons); repair rebuilds what is
// derived and never touches a consistent file's data; what cannot be repaired leaves the pool exactly as it was.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FIXED_HEADER_BYTES, PoolState, readSuperblock, writeSuperblockSlot } from '../lib/fs/layout';
import { MappedMetadata } from '../lib/fs/metadata';
import { type MetadataViews, openViews } from '../lib/fs/views';
import { check, KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, repoRoot, uniquePath } from './helpers';

const B = 64 * KiB;
let pool: Pool;

type Views = MetadataViews;

/** Edits the unmounted pool's metadata in place through the same views the filesystem uses. */
function edit(fn: (views: Views) => void): void {
  const header = pool.map([{ offset: 0, length: FIXED_HEADER_BYTES }], { populate: false });
  const sb = readSuperblock(header.bytes(), pool);
  header.unmap();
  const meta = pool.map([{ offset: 0, length: sb.geometry.metadataBytes }], { populate: false });
  fn(openViews(new MappedMetadata(meta.id), sb.geometry));
  meta.unmap();
}

/** What a kill leaves in the superblock: the pool still marked as mounted by an owner that is gone. */
function markOwnerDead(header: Uint8Array): void {
  const sb = readSuperblock(header, pool);
  writeSuperblockSlot(header, 1 - sb.slot, { ...sb, sequence: sb.sequence + 1n, state: PoolState.Mounted, ownerPid: 999_999 });
}

function digest(): string {
  const mapping = pool.map([{ offset: 0, length: pool.size }], { populate: false, writable: false });
  const hash = crypto.createHash('sha256').update(mapping.bytes()).digest('hex');
  mapping.unmap();
  return hash;
}

beforeEach(() => {
  pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-check'), size: 4 * MiB });
  mkfs(pool, { blockSize: B });
  const gfs = mount(pool);
  gfs.mkdir('/vm');
  gfs.create('/vm/state', { type: 'state' });
  gfs.write('/vm/state', new TextEncoder().encode('device state'));
  gfs.create('/vm/ram', { type: 'guest' });
  gfs.truncate('/vm/ram', 3 * B);
  gfs.unmount();
});
afterEach(() => pool.destroy());

function expectDataIntact(): void {
  const gfs = mount(pool);
  expect(new TextDecoder().decode(gfs.read('/vm/state'))).toBe('device state');
  expect(gfs.stat('/vm/ram').size).toBe(3 * B);
  expect(gfs.audit().problems).toEqual([]);
  gfs.unmount();
}

describe('check', () => {
  it('a cleanly unmounted pool is consistent, and checking changes nothing', () => {
    const before = digest();
    expect(check(pool)).toEqual({ state: 'consistent', fixes: [], problems: [], repairable: true, poolState: 'clean', quarantined: [] });
    expect(check(pool, { repair: true }).state).toBe('consistent');
    expect(digest()).toBe(before);
  });

  it('refuses a mounted pool with EBUSY', () => {
    const gfs = mount(pool);
    expect(captureError(() => check(pool))).toMatchObject({ code: 'EBUSY', syscall: 'check' });
    gfs.unmount();
  });

  it('a pool whose owner was killed: inconsistent and repairable; repair frees the orphan and marks it clean', async () => {
    const script = `
      const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
      const fs = g.mount(g.Pool.open(${JSON.stringify(pool.path)}));
      fs.create('/doomed', { type: 'guest' }); fs.truncate('/doomed', ${2 * B});
      globalThis.m = fs.map('/doomed'); fs.unlink('/doomed');
      process.stdout.write('ready\\n'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const before = digest();
    const dry = check(pool);
    expect(dry).toMatchObject({ state: 'inconsistent', repairable: true, poolState: 'mounted' });
    expect(dry.problems).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`owner (pid ${child.pid}) died`),
        expect.stringMatching(/unlinked while mapped and still holds 2 blocks/),
      ]),
    );
    expect(digest()).toBe(before);
    const repaired = check(pool, { repair: true });
    expect(repaired.state).toBe('repaired');
    expect(repaired.fixes.some((fix) => fix.includes('freed unlinked inode'))).toBe(true);
    expect(check(pool).state).toBe('consistent');
    const gfs = mount(pool);
    expect(gfs.recovery).toBeUndefined();
    gfs.unmount();
    expectDataIntact();
  });

  it('an extent page left linked by a kill inside a shrink is released, and the kept extents are untouched', () => {
    // Two files allocated in turn get five extents each: the fifth needs an extent page.
    const gfs = mount(pool);
    gfs.create('/a', { type: 'state' });
    gfs.create('/b', { type: 'state' });
    for (let blocks = 1; blocks <= 5; blocks++) for (const name of ['/a', '/b']) gfs.truncate(name, blocks * B);
    expect(gfs.stat('/a').extents).toBe(5);
    gfs.write('/a', new TextEncoder().encode('kept'), 0);
    const ino = gfs.lookup('/a');
    gfs.unmount();
    // A shrink to four blocks killed after its commit point and the lower extent count, before the page was freed.
    edit(({ inodes, header }) => {
      inodes.setSize(ino, 4 * B);
      inodes.setExtentCount(ino, 4);
      inodes.setBlockCount(ino, 4);
      markOwnerDead(header);
    });
    const dry = check(pool);
    expect(dry).toMatchObject({ state: 'inconsistent', repairable: true });
    expect(dry.problems.join('\n')).toContain(`inode ${ino}: 1 extent pages for 4 extents`);
    const repaired = check(pool, { repair: true });
    expect(repaired.state).toBe('repaired');
    expect(repaired.fixes.join('\n')).toContain(`inode ${ino}: released 1 extent page(s) past its extents`);
    expect(check(pool).state).toBe('consistent');
    const after = mount(pool);
    expect(after.stat('/a')).toMatchObject({ size: 4 * B, extents: 4, blocks: 4 });
    expect(new TextDecoder().decode(after.read('/a', 0, 4))).toBe('kept');
    after.unmount();
  });

  it('rebuilds damaged derived state (bitmap, free list, counters, entry lists) without touching file data', () => {
    edit(({ allocator, hints, inodes }) => {
      allocator.markAllocated([{ start: 40, length: 3 }]); // leaked blocks
      hints.freeInodes = 3; // wrong counter
      inodes.setFirstChild(inodes.parent(3), 0); // a directory list that lost its entries
    });
    const dry = check(pool);
    expect(dry).toMatchObject({ state: 'inconsistent', repairable: true });
    expect(dry.problems.join('\n')).toMatch(/bitmap says allocated, extents say free/);
    expect(dry.problems.join('\n')).toMatch(/free inode counter 3/);
    const repaired = check(pool, { repair: true });
    expect(repaired.state).toBe('repaired');
    expect(repaired.fixes.join('\n')).toContain('freed 3 allocated blocks no file held');
    expect(check(pool).state).toBe('consistent');
    expectDataIntact();
  });

  it('rewrites a damaged superblock copy from the intact one', () => {
    edit(({ header }) => {
      const sb = readSuperblock(header, pool);
      const older = (1 - sb.slot) * 4096;
      header[older + 40] = header[older + 40]! ^ 0xff;
    });
    expect(check(pool).problems.join()).toMatch(/superblock copy [AB] is damaged/);
    const repaired = check(pool, { repair: true });
    expect(repaired).toMatchObject({ state: 'repaired' });
    expect(repaired.fixes.join()).toMatch(/rewrote superblock copy/);
    expect(check(pool).state).toBe('consistent');
  });

  it('a torn superblock copy next to a valid handover is rewritten alone, and the handover still restores', () => {
    const gfs = mount(pool);
    gfs.serialise();
    gfs.unmount();
    edit(({ header }) => {
      const sb = readSuperblock(header, pool);
      const older = (1 - sb.slot) * 4096;
      header[older + 508] = header[older + 508]! ^ 0xff; // its CRC: as a kill in the middle of abort() leaves it
    });
    const repaired = check(pool, { repair: true });
    expect(repaired).toMatchObject({
      state: 'repaired',
      fixes: [expect.stringMatching(/rewrote superblock copy/)],
      poolState: 'serialised',
    });
    const restored = mount(pool);
    expect(restored.restored).toBeDefined();
    restored.unmount();
    expectDataIntact();
  });

  it('a stale or damaged handover blob is reported and, with repair, marked stale so the next mount ignores it', () => {
    const gfs = mount(pool);
    gfs.serialise();
    gfs.unmount();
    expect(check(pool)).toMatchObject({ state: 'consistent', poolState: 'serialised' });
    edit(({ hints }) => (hints.freeBlocks += 1)); // metadata changed after serialise
    const dry = check(pool);
    expect(dry.state).toBe('inconsistent');
    expect(dry.problems.join()).toContain('handover blob is not valid');
    const repaired = check(pool, { repair: true });
    expect(repaired.state).toBe('repaired');
    expect(repaired.fixes.join()).toContain('marked the handover blob stale');
    const after = mount(pool);
    expect(after.restored).toBeUndefined();
    after.unmount();
    expectDataIntact();
  });

  it('a block owned by two files cannot be repaired: reported precisely, the pool left as it was', () => {
    edit(({ inodes, extents }) => {
      const ram = extents.read(4)[0]!; // /vm/ram is inode 4
      extents.append(3, [{ start: ram.start, length: 1 }]); // /vm/state now claims ram's first block too
      inodes.setBlockCount(3, inodes.blockCount(3) + 1);
    });
    const before = digest();
    const result = check(pool, { repair: true });
    expect(result).toMatchObject({ state: 'inconsistent', repairable: false });
    expect(result.problems.join()).toMatch(/block \d+ belongs to inode 3 and inode 4|block \d+ belongs to inode 4 and inode 3/);
    expect(digest()).toBe(before);
    expect(captureError(() => mount(pool, { repair: true }))).toMatchObject({ code: 'EUCLEAN' });
  });

  it('a directory cycle (unreachable inodes) cannot be repaired either', () => {
    edit(({ inodes }) => {
      // /vm (inode 2) claims to live inside itself.
      inodes.setParent(2, 2);
    });
    const before = digest();
    const result = check(pool, { repair: true });
    expect(result).toMatchObject({ state: 'inconsistent', repairable: false });
    expect(result.problems.join()).toContain('unreachable from the root');
    expect(digest()).toBe(before);
  });

  it('a root directory marked unlinked (a flipped bit the fuzzer found) is refused, never freed', () => {
    edit(({ inodes }) => inodes.setFlags(1, inodes.flags(1) | 1));
    const before = digest();
    expect(check(pool, { repair: true })).toMatchObject({
      state: 'inconsistent',
      repairable: false,
      problems: [expect.stringContaining('root directory is marked unlinked')],
    });
    expect(captureError(() => mount(pool))).toMatchObject({ code: 'EUCLEAN' });
    expect(digest()).toBe(before);
  });

  it('an unknown inode type and an extent outside the pool are reported, not repaired', () => {
    edit(({ inodes }) => inodes.setType(3, 9 as never));
    const result = check(pool, { repair: true });
    expect(result).toMatchObject({ state: 'inconsistent', repairable: false });
    expect(result.problems.join()).toContain('inode 3 has unknown type 9');
  });
});

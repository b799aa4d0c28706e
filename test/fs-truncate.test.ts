// Truncate and the block allocator: contiguous runs first, extents that grow without a cap, ENOSPC that changes nothing,
// zero-on-reuse, the dirty bitmap and scrub, asynchronous truncate with progress.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Filesystem, KiB } from '../lib/index';
import { captureError, captureRejection } from './helpers';
import { smallFs, type TestFs } from './fs-helpers';

const B = 64 * KiB;
/** Fills the pool with one-block files and deletes every other one, so no two free blocks are adjacent. */
function fragment(fs: Filesystem): void {
  const free = fs.statfs().freeBlocks;
  for (let i = 0; i < free; i++) {
    fs.create(`/s${i}`);
    fs.truncate(`/s${i}`, B);
  }
  for (let i = 0; i < free; i += 2) fs.unlink(`/s${i}`);
}

let t: TestFs;
beforeEach(() => {
  t = smallFs({ size: 8 * 1024 * KiB }); // 128 blocks of 64 KiB
});
afterEach(() => t.close());

describe('truncate', () => {
  it('grows a file in one contiguous extent and shrinks it by whole blocks; sizes need not be block multiples', () => {
    const { fs } = t;
    fs.create('/f');
    fs.truncate('/f', 10 * B + 1);
    expect(fs.stat('/f')).toMatchObject({ size: 10 * B + 1, blocks: 11, extents: 1 });
    fs.truncate('/f', 3 * B);
    expect(fs.stat('/f')).toMatchObject({ size: 3 * B, blocks: 3, extents: 1 });
    fs.truncate('/f', 3 * B - 5);
    expect(fs.stat('/f')).toMatchObject({ size: 3 * B - 5, blocks: 3 });
    fs.truncate('/f', 0);
    expect(fs.stat('/f')).toMatchObject({ size: 0, blocks: 0, extents: 0 });
    expect(fs.audit().problems).toEqual([]);
  });

  it('extends the last extent in place when the next blocks are free', () => {
    const { fs } = t;
    fs.create('/f');
    fs.truncate('/f', 2 * B);
    fs.truncate('/f', 5 * B);
    fs.truncate('/f', 9 * B);
    expect(fs.stat('/f').extents).toBe(1);
    expect(fs.extents('/f')).toHaveLength(1);
  });

  it('moves to a single fresh run when the blocks after the file are taken, and falls back to several runs', () => {
    const { fs } = t;
    fs.create('/a');
    fs.truncate('/a', 2 * B);
    fs.create('/wall');
    fs.truncate('/wall', B);
    fs.truncate('/a', 6 * B);
    expect(fs.stat('/a').extents).toBe(2); // cannot grow in place: the rest comes as one run elsewhere
    fragment(fs);
    fs.create('/fragmented');
    fs.truncate('/fragmented', 10 * B);
    const stat = fs.stat('/fragmented');
    expect(stat.blocks).toBe(10);
    expect(stat.extents).toBe(10);
    expect(fs.audit().problems).toEqual([]);
  });

  it('holds hundreds of extents (overflow extent pages) and frees them all again', () => {
    const big = smallFs({ size: 64 * 1024 * KiB }); // 1024 blocks
    try {
      const { fs } = big;
      fragment(fs);
      fs.create('/f');
      const blocks = fs.statfs().freeBlocks;
      fs.truncate('/f', blocks * B);
      expect(fs.stat('/f')).toMatchObject({ blocks, extents: blocks });
      expect(blocks).toBeGreaterThan(400);
      expect(fs.audit().problems).toEqual([]);
      const mapping = fs.map('/f', { populate: false });
      expect(mapping.length).toBe(blocks * B);
      expect(mapping.mmapCalls).toBe(blocks);
      mapping.unmap();
      fs.truncate('/f', 3 * B);
      expect(fs.stat('/f').extents).toBe(3);
      fs.unlink('/f');
      expect(fs.audit().problems).toEqual([]);
    } finally {
      big.close();
    }
  });

  it('on ENOSPC changes nothing: same size, same free blocks, nothing leaked', () => {
    const { fs } = t;
    fs.create('/f');
    fs.truncate('/f', 5 * B);
    const before = fs.statfs();
    const error = captureError(() => fs.truncate('/f', 1000 * B));
    expect(error).toMatchObject({ code: 'ENOSPC', errno: -28, syscall: 'ftruncate', path: '/f' });
    expect(error.message).toMatch(/pool has \d+ free 64 KiB blocks, truncate needs 995/);
    expect(fs.stat('/f').size).toBe(5 * B);
    expect(fs.statfs()).toEqual(before);
    expect(fs.audit().problems).toEqual([]);
  });

  it('rejects bad sizes, directories and missing files', () => {
    const { fs } = t;
    fs.create('/f');
    fs.mkdir('/d');
    for (const size of [-1, 1.5, Number.NaN, 2 ** 60]) expect(captureError(() => fs.truncate('/f', size)).code).toMatch(/EINVAL|ENOSPC/);
    expect(captureError(() => fs.truncate('/d', B))).toMatchObject({ code: 'EISDIR' });
    expect(captureError(() => fs.truncate('/nope', B))).toMatchObject({ code: 'ENOENT' });
  });
});

describe('zeroing', () => {
  it('zero-on-reuse: a new file never sees the bytes a deleted file wrote', () => {
    const { fs } = t;
    fs.create('/old', { type: 'state' });
    const pattern = new Uint8Array(8 * B).fill(0xab);
    fs.write('/old', pattern);
    fs.unlink('/old');
    expect(fs.statfs().dirtyFreeBlocks).toBe(8);
    fs.create('/new', { type: 'state' });
    fs.truncate('/new', 8 * B);
    expect(fs.read('/new').every((byte) => byte === 0)).toBe(true);
    expect(fs.statfs().dirtyFreeBlocks).toBe(0);
  });

  it('shrink then grow inside the same block reads zeros past the old end', () => {
    const { fs } = t;
    fs.create('/f');
    fs.write('/f', new Uint8Array(1000).fill(9));
    fs.truncate('/f', 10);
    fs.truncate('/f', 1000);
    const bytes = fs.read('/f');
    expect(Array.from(bytes.subarray(0, 10))).toEqual(Array(10).fill(9));
    expect(bytes.subarray(10).every((byte) => byte === 0)).toBe(true);
  });

  it('scrub zeroes dirty free blocks off the JS thread, so later allocations need no zeroing', async () => {
    const { fs } = t;
    fs.create('/f');
    fs.write('/f', new Uint8Array(4 * B).fill(1));
    fs.unlink('/f');
    expect(fs.statfs().dirtyFreeBlocks).toBe(4);
    const progress: number[] = [];
    expect(await fs.scrub({ onProgress: (done) => progress.push(done) })).toBe(4 * B);
    expect(progress.at(-1)).toBe(4 * B);
    expect(fs.statfs().dirtyFreeBlocks).toBe(0);
    expect(fs.audit().problems).toEqual([]);
  });

  it('truncateAsync zeroes dirty blocks off-thread with progress, keeping the file busy meanwhile', async () => {
    const { fs } = t;
    fs.create('/junk');
    fs.write('/junk', new Uint8Array(20 * B).fill(3));
    fs.unlink('/junk');
    fs.create('/f', { type: 'state' });
    const progress: Array<[number, number]> = [];
    const pending = fs.truncateAsync('/f', 20 * B, { onProgress: (done, total) => progress.push([done, total]) });
    expect(captureError(() => fs.truncate('/f', 0))).toMatchObject({ code: 'EBUSY' });
    expect(captureError(() => fs.unlink('/f'))).toMatchObject({ code: 'EBUSY' });
    expect(captureError(() => fs.unmount())).toMatchObject({ code: 'EBUSY' });
    await pending;
    expect(progress.at(-1)).toEqual([20 * B, 20 * B]);
    expect(fs.stat('/f').size).toBe(20 * B);
    expect(fs.read('/f').every((byte) => byte === 0)).toBe(true);
    expect(fs.audit().problems).toEqual([]);
    expect(await captureRejection(fs.truncateAsync('/f', 10_000 * B))).toMatchObject({ code: 'ENOSPC' });
    await fs.truncateAsync('/f', B);
    expect(fs.stat('/f').size).toBe(B);
  });
});

// The memfile notifier in one process: invalidate before shrink, punch and the release of an unlinked file, never for
// a change that pins refuse; get_pfn; the three flags; misuse; and a fast-check model of what consumers are told.
import * as fs from 'node:fs';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MEMFILE_F_UNMOVABLE, MEMFILE_F_UNRECLAIMABLE, MEMFILE_F_USER_INACCESSIBLE, type Mapping } from '../lib/index';
import { captureError, skipReason } from './helpers';
import { smallFs, type TestFs } from './fs-helpers';

const B = 64 * KiB;
let t: TestFs;
beforeEach(() => {
  t = smallFs({ size: 8 * 1024 * KiB });
});
afterEach(() => t.close());

/** A consumer that records what it is told, and what the file looked like when it was told. */
function recorder(path: string) {
  const told: Array<{ start: number; end: number; sizeThen: number; firstByteThen: number }> = [];
  return {
    told,
    consumer: {
      description: 'test consumer',
      invalidate(start: number, end: number) {
        const exists = t.fs.exists(path);
        told.push({
          start,
          end,
          sizeThen: exists ? t.fs.stat(path).size : -1,
          firstByteThen: exists && t.fs.stat(path).size > start ? t.fs.read(path, start, 1)[0]! : -1,
        });
      },
    },
  };
}

/** Bytes of the mapping the kernel has locked (the Locked: lines of /proc/self/smaps over its range). */
function lockedBytes(mapping: Mapping): number {
  let inside = false;
  let locked = 0;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      inside = BigInt(`0x${range[1]}`) < mapping.address + BigInt(mapping.length) && BigInt(`0x${range[2]}`) > mapping.address;
      continue;
    }
    const value = /^Locked:\s+(\d+) kB$/.exec(line);
    if (inside && value) locked += Number(value[1]) * KiB;
  }
  return locked;
}

describe('memfile notifier', () => {
  it('tells consumers of a shrink before the blocks go, while the bytes are still there', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.write('/f', new Uint8Array(4 * B).fill(7));
    const { told, consumer } = recorder('/f');
    const notifier = gfs.registerNotifier('/f', consumer);
    gfs.truncate('/f', B + 10);
    expect(told).toEqual([{ start: B + 10, end: 4 * B, sizeThen: 4 * B, firstByteThen: 7 }]);
    expect(gfs.stat('/f')).toMatchObject({ size: B + 10, blocks: 2 });
    // A grow takes nothing from anyone.
    gfs.truncate('/f', 8 * B);
    expect(told).toHaveLength(1);
    expect(notifier.registered).toBe(true);
  });

  it('tells nobody anything about a shrink or punch that a mapping refuses, and changes nothing', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.write('/f', new Uint8Array(4 * B).fill(9));
    const { told, consumer } = recorder('/f');
    gfs.registerNotifier('/f', consumer);
    const mapping = gfs.map('/f');
    expect(captureError(() => gfs.truncate('/f', B)).code).toBe('EBUSY');
    expect(captureError(() => gfs.punch('/f', 0, B)).code).toBe('EBUSY');
    expect(told).toEqual([]);
    expect(gfs.stat('/f').size).toBe(4 * B);
    expect(mapping.bytes(0, 1)[0]).toBe(9);
    mapping.unmap();
  });

  it('punch invalidates then zeroes whole blocks, keeping the size and the blocks', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.write('/f', new Uint8Array(4 * B).fill(5));
    const { told, consumer } = recorder('/f');
    gfs.registerNotifier('/f', consumer);
    const before = gfs.extents('/f');
    gfs.punch('/f', B, 2 * B);
    expect(told).toEqual([{ start: B, end: 3 * B, sizeThen: 4 * B, firstByteThen: 5 }]);
    const bytes = gfs.read('/f');
    expect(bytes.subarray(0, B).every((b) => b === 5)).toBe(true);
    expect(bytes.subarray(B, 3 * B).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(3 * B).every((b) => b === 5)).toBe(true);
    expect(gfs.extents('/f')).toEqual(before);
    // Past the end is clamped; an empty range tells nobody.
    gfs.punch('/f', 3 * B, 8 * B);
    gfs.punch('/f', 8 * B, B);
    expect(told.map(({ start, end }) => [start, end])).toEqual([
      [B, 3 * B],
      [3 * B, 4 * B],
    ]);
  });

  it('refuses a misaligned or negative punch, and one on a directory or a missing file, changing nothing', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.write('/f', new Uint8Array(2 * B).fill(3));
    gfs.mkdir('/d');
    for (const [path, offset, length, code] of [
      ['/f', 1, B, 'EINVAL'],
      ['/f', 0, B + 1, 'EINVAL'],
      ['/f', -B, B, 'EINVAL'],
      ['/f', 0, Number.NaN, 'EINVAL'],
      ['/d', 0, B, 'EISDIR'],
      ['/missing', 0, B, 'ENOENT'],
    ] as const) {
      const error = captureError(() => gfs.punch(path, offset, length));
      expect(error.code, `${path} ${offset} ${length}`).toBe(code);
      expect(error.syscall).toBe('fallocate');
    }
    expect(gfs.read('/f').every((b) => b === 3)).toBe(true);
  });

  it('tells consumers of an unlinked file only when its last mapping goes, and then ends their registration', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.truncate('/f', 3 * B);
    const told: Array<[number, number]> = [];
    const notifier = gfs.registerNotifier('/f', { invalidate: (start, end) => told.push([start, end]) });
    const mapping = gfs.map('/f');
    gfs.unlink('/f');
    expect(told).toEqual([]);
    expect(notifier.registered).toBe(true);
    const free = gfs.statfs().freeBlocks;
    mapping.unmap();
    expect(told).toEqual([[0, 3 * B]]);
    expect(notifier.registered).toBe(false);
    expect(gfs.statfs().freeBlocks).toBe(free + 3);
    expect(captureError(() => notifier.getPfn(0)).code).toBe('EINVAL');
    notifier.unregister(); // a no-op now
  });

  it('an unregistered consumer is told nothing more', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.truncate('/f', 2 * B);
    const told: number[] = [];
    const notifier = gfs.registerNotifier('/f', { invalidate: (start) => told.push(start) });
    notifier.unregister();
    expect(notifier.registered).toBe(false);
    gfs.truncate('/f', 0);
    expect(told).toEqual([]);
  });

  it('a consumer that throws is reported as a warning, and the change still happens', async () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.truncate('/f', 2 * B);
    gfs.registerNotifier('/f', {
      invalidate: () => {
        throw new Error('consumer bug');
      },
    });
    const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
    gfs.truncate('/f', B);
    expect((await warned).message).toMatch(/consumer bug/);
    expect(gfs.stat('/f').size).toBe(B);
  });

  it.skipIf(skipReason(process.getuid?.() === 0 ? '' : 'get_pfn needs root to read physical frames'))(
    'get_pfn gives the frame and order a mapping of the file sees',
    () => {
      const { fs: gfs } = t;
      gfs.create('/f');
      gfs.truncate('/f', 2 * B);
      const notifier = gfs.registerNotifier('/f', { invalidate: () => {} });
      const mapping = gfs.map('/f');
      for (const offset of [0, 4 * KiB + 17, B, 2 * B - 1]) {
        const page = offset - (offset % t.pool.pageSize);
        expect(notifier.getPfn(offset)).toEqual({ pfn: mapping.physicalFrames(page, t.pool.pageSize)[0], order: 0 });
      }
      mapping.unmap();
      for (const offset of [-1, 2 * B, 0.5]) expect(captureError(() => notifier.getPfn(offset)).code).toBe('EINVAL');
    },
  );

  it('user-inaccessible: read, write and map are refused to all but the consumer, and only an unmapped file may be held so', () => {
    const { fs: gfs } = t;
    gfs.create('/secret');
    gfs.truncate('/secret', 2 * B);
    const mapping = gfs.map('/secret');
    expect(captureError(() => gfs.registerNotifier('/secret', { invalidate: () => {} }, MEMFILE_F_USER_INACCESSIBLE)).code).toBe('EBUSY');
    mapping.unmap();
    const notifier = gfs.registerNotifier('/secret', { invalidate: () => {} }, MEMFILE_F_USER_INACCESSIBLE);
    for (const attempt of [() => gfs.read('/secret'), () => gfs.write('/secret', new Uint8Array(1)), () => gfs.map('/secret')]) {
      const error = captureError(attempt);
      expect(error.code).toBe('EPERM');
      expect(error.message).toMatch(/user-inaccessible/);
    }
    const own = notifier.map();
    own.bytes(0, 1)[0] = 42;
    own.unmap();
    notifier.unregister();
    expect(gfs.read('/secret', 0, 1)[0]).toBe(42);
  });

  it('unreclaimable: the consumer’s mapping is mlocked; unmovable is recorded (blocks never move here)', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.truncate('/f', 2 * B);
    const extents = gfs.extents('/f');
    const locked = gfs.registerNotifier('/f', { invalidate: () => {} }, MEMFILE_F_UNRECLAIMABLE | MEMFILE_F_UNMOVABLE);
    expect(locked.flags).toBe(MEMFILE_F_UNRECLAIMABLE | MEMFILE_F_UNMOVABLE);
    const mapping = locked.map();
    expect(lockedBytes(mapping)).toBe(2 * B);
    mapping.unmap();
    gfs.truncate('/f', 6 * B);
    expect(gfs.extents('/f')[0]!.offset).toBe(extents[0]!.offset);
  });

  it('refuses bad flags, a consumer without invalidate, directories and files the caller may not write', () => {
    const { fs: gfs } = t;
    gfs.create('/f');
    gfs.mkdir('/d');
    for (const flags of [8, -1, 1.5])
      expect(captureError(() => gfs.registerNotifier('/f', { invalidate: () => {} }, flags)).code).toBe('EINVAL');
    expect(() => gfs.registerNotifier('/f', {} as never)).toThrow(TypeError);
    expect(captureError(() => gfs.registerNotifier('/d', { invalidate: () => {} })).code).toBe('EISDIR');
    expect(captureError(() => gfs.registerNotifier('/nope', { invalidate: () => {} })).code).toBe('ENOENT');
    gfs.chmod('/f', 0o444);
    const error = captureError(() =>
      gfs.actingAs({ uid: 65534, gid: 65534, groups: [] }, () => gfs.registerNotifier('/f', { invalidate: () => {} })),
    );
    expect(error.code).toBe('EACCES');
  });

  it('against a model: every byte that leaves a file was invalidated first, and nothing else was (fast-check)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('truncate' as const), blocks: fc.integer({ min: 0, max: 8 }), extra: fc.integer({ min: 0, max: 3 }) }),
      fc.record({ kind: fc.constant('punch' as const), at: fc.integer({ min: 0, max: 8 }), blocks: fc.integer({ min: 0, max: 4 }) }),
      fc.record({ kind: fc.constant('map-unlink' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 12 }), (ops) => {
        const { fs: gfs } = t;
        if (gfs.exists('/m')) gfs.unlink('/m');
        gfs.create('/m');
        const told: Array<[number, number]> = [];
        const notifier = gfs.registerNotifier('/m', { invalidate: (start, end) => told.push([start, end]) });
        let size = 0;
        for (const step of ops) {
          told.length = 0;
          if (step.kind === 'truncate') {
            const next = step.blocks * B + step.extra;
            gfs.truncate('/m', next);
            expect(told).toEqual(next < size ? [[next, size]] : []);
            size = next;
          } else if (step.kind === 'punch') {
            gfs.punch('/m', step.at * B, step.blocks * B);
            const end = Math.min(step.at * B + step.blocks * B, Math.ceil(size / B) * B);
            expect(told).toEqual(end > step.at * B ? [[step.at * B, end]] : []);
          } else {
            if (size === 0) continue;
            const mapping = gfs.map('/m');
            gfs.unlink('/m');
            expect(told).toEqual([]);
            mapping.unmap();
            expect(told).toEqual([[0, size]]);
            expect(notifier.registered).toBe(false);
            return;
          }
        }
        notifier.unregister();
      }),
      { numRuns: 60 },
    );
  });
});

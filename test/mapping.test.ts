// The data path: extent stitching and coalescing, madvise/mlock flags, zero/populate, pagemap, and unmap safety.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GiB, MiB, Pool } from '../lib/index';
import { native } from '../lib/native';
import { mapFromRecipe, type MappingRecipe } from '../lib/pool/remap';
import { captureError, captureRejection, collectUntil, machine, mappingCollected, repoRoot, skipReason, uniquePath } from './helpers';

const m = machine();

/** The VmFlags of the VMA that starts at address, from /proc/self/smaps ("dd" = dontdump, "dc" = dontfork, "lo" = locked). */
function vmFlags(address: bigint): string[] {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const start = lines.findIndex((line) => line.startsWith(`${address.toString(16)}-`));
  if (start < 0) throw new Error(`no VMA at 0x${address.toString(16)}`);
  const flagsLine = lines.slice(start).find((line) => line.startsWith('VmFlags:'))!;
  return flagsLine.slice('VmFlags:'.length).trim().split(/\s+/);
}

function isMapped(address: bigint): boolean {
  return fs
    .readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .some((line) => line.startsWith(`${address.toString(16)}-`));
}

describe.skipIf(skipReason(m.skip2M))('mapping extents of a 2 MiB-page pool', () => {
  let pool: Pool;
  beforeAll(() => {
    pool = Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'map'), size: 32 * MiB });
    // Give each 2 MiB page a recognisable first byte: its page index.
    const whole = pool.mapAll();
    for (let page = 0; page < 16; page++) whole.bytes()[page * 2 * MiB] = page;
    whole.unmap();
  });
  afterAll(() => pool.destroy());

  it('coalesces adjacent extents into one mmap call and stitches the rest in the order given', () => {
    const extents = [
      { offset: 10 * MiB, length: 2 * MiB },
      { offset: 12 * MiB, length: 4 * MiB },
      { offset: 0, length: 2 * MiB },
      { offset: 2 * MiB, length: 2 * MiB },
      { offset: 30 * MiB, length: 2 * MiB },
    ];
    const mapping = pool.map(extents);
    expect(mapping.mmapCalls).toBe(3);
    expect(mapping.length).toBe(12 * MiB);
    const firstBytes = [0, 1, 2, 3, 4, 5].map((page) => mapping.bytes()[page * 2 * MiB]);
    expect(firstBytes).toEqual([5, 6, 7, 0, 1, 15]);
    expect(mapping.kernelPageSizes()).toEqual([2 * MiB]);
    expect(mapping.address % BigInt(2 * MiB)).toBe(0n);
    mapping.unmap();
  });

  it('maps 16 separate extents with 16 calls and one adjacent run with one call', () => {
    const scattered = Array.from({ length: 8 }, (_, i) => ({ offset: (15 - 2 * i) * 2 * MiB - 2 * MiB + 2 * MiB, length: 2 * MiB }));
    const apart = pool.map(scattered);
    expect(apart.mmapCalls).toBe(8);
    apart.unmap();
    const adjacent = pool.map(Array.from({ length: 16 }, (_, i) => ({ offset: i * 2 * MiB, length: 2 * MiB })));
    expect(adjacent.mmapCalls).toBe(1);
    adjacent.unmap();
  });

  it('two mappings of the same extent sit on the same physical pages (pagemap)', () => {
    const a = pool.map([{ offset: 4 * MiB, length: 4 * MiB }]);
    const b = pool.map([{ offset: 4 * MiB, length: 4 * MiB }]);
    const framesA = a.physicalFrames();
    expect(framesA).toHaveLength(2);
    expect(framesA.every((frame) => typeof frame === 'bigint' && frame > 0n)).toBe(true);
    expect(b.physicalFrames()).toEqual(framesA);
    // 2 MiB pages are physically contiguous: 512 frames of 4 KiB each.
    expect(framesA[0]! % 512n).toBe(0n);
    a.unmap();
    b.unmap();
  });

  it('applies MADV_DONTDUMP and MADV_DONTFORK as asked', () => {
    const plain = pool.map([{ offset: 0, length: 2 * MiB }]);
    expect(vmFlags(plain.address)).not.toContain('dd');
    expect(vmFlags(plain.address)).not.toContain('dc');
    const guest = pool.map([{ offset: 0, length: 2 * MiB }], { dontDump: true, dontFork: true, lock: true });
    expect(vmFlags(guest.address)).toEqual(expect.arrayContaining(['dd', 'dc']));
    // The kernel never marks hugetlb VMAs VM_LOCKED (huge pages cannot be swapped): lock succeeds without "lo".
    expect(vmFlags(guest.address)).not.toContain('lo');
    guest.advise('MADV_DODUMP');
    expect(vmFlags(guest.address)).not.toContain('dd');
    plain.unmap();
    guest.unmap();
  });

  it('maps read-only when asked, leaving writes impossible from that mapping', () => {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }], { writable: false });
    expect(vmFlags(mapping.address)).not.toContain('wr');
    mapping.unmap();
  });

  it('zeroes synchronously and asynchronously with progress, keeping the pages allocated', async () => {
    const mapping = pool.map([{ offset: 16 * MiB, length: 8 * MiB }]);
    mapping.bytes().fill(0xab);
    mapping.zero(0, 2 * MiB);
    expect(mapping.bytes(0, 2 * MiB).every((byte) => byte === 0)).toBe(true);
    expect(mapping.bytes()[2 * MiB]).toBe(0xab);
    const progress: number[] = [];
    await mapping.zeroAsync(2 * MiB, 6 * MiB, { onProgress: (done) => progress.push(done) });
    expect(mapping.bytes().every((byte) => byte === 0)).toBe(true);
    expect(progress.at(-1)).toBe(6 * MiB);
    expect(fs.statSync(pool.path!).blocks * 512).toBe(32 * MiB);
    mapping.unmap();
  });

  it('populates off the JS thread (MADV_POPULATE_WRITE) with progress', async () => {
    const mapping = pool.map([{ offset: 0, length: 8 * MiB }], { populate: false });
    let last = 0;
    await mapping.populateAsync({ write: true, onProgress: (done) => (last = done) });
    expect(last).toBe(8 * MiB);
    expect(mapping.physicalFrames().every((frame) => frame !== null)).toBe(true);
    mapping.unmap();
  });

  it('refuses to unmap while async work is in flight (EBUSY), then unmaps once it settles', async () => {
    const mapping = pool.map([{ offset: 0, length: 8 * MiB }]);
    const work = mapping.zeroAsync();
    expect(captureError(() => mapping.unmap())).toMatchObject({ code: 'EBUSY', errno: -16, syscall: 'munmap' });
    await work;
    mapping.unmap();
    expect(isMapped(mapping.address)).toBe(false);
  });

  it('detaches the buffer on unmap: use after unmap throws, never faults', () => {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    const buffer = mapping.buffer;
    const view = new DataView(buffer);
    const bytes = mapping.bytes();
    mapping.unmap();
    expect(isMapped(mapping.address)).toBe(false);
    expect(buffer.byteLength).toBe(0);
    expect(bytes.length).toBe(0);
    expect(bytes[0]).toBeUndefined();
    expect(() => view.getUint8(0)).toThrow(TypeError);
    expect(() => new Uint8Array(buffer)).toThrow(TypeError);
    for (const use of [
      () => mapping.buffer,
      () => mapping.bytes(),
      () => mapping.zero(),
      () => mapping.unmap(),
      () => mapping.physicalFrames(),
    ]) {
      expect(captureError(use)).toMatchObject({ code: 'EINVAL', errno: -22 });
    }
    expect(captureError(() => mapping.bytes()).message).toContain('was unmapped; map the region again');
  });

  it('rejects bad extents with specific errors and maps nothing', () => {
    const before = native.liveMappings();
    const cases: Array<[unknown, string]> = [
      [[{ offset: 1 * MiB, length: 2 * MiB }], "is not aligned to the pool's 2 MiB pages"],
      [[{ offset: 0, length: 3 * MiB }], 'is not aligned'],
      [[{ offset: 30 * MiB, length: 4 * MiB }], 'beyond the 32 MiB pool'],
      [[{ offset: 64 * MiB, length: 2 * MiB }], 'beyond the 32 MiB pool'],
      [[{ offset: -2 * MiB, length: 2 * MiB }], 'non-negative integer offset'],
      [[{ offset: 0, length: 0 }], 'positive integer length'],
      [[{ offset: 0.5, length: 2 * MiB }], 'non-negative integer offset'],
      [[], 'at least one extent'],
    ];
    for (const [extents, message] of cases) {
      const error = captureError(() => pool.map(extents as never));
      expect(error).toMatchObject({ code: 'EINVAL', errno: -22, syscall: 'mmap', path: pool.path });
      expect(error.message).toContain(message);
    }
    expect(native.liveMappings()).toBe(before);
  });

  it("a mapping made from another mapping's recipe maps the same pages, pinned, and the pool adopts it; misfits are refused", () => {
    const original = pool.map(
      [
        { offset: 6 * MiB, length: 2 * MiB },
        { offset: 2 * MiB, length: 2 * MiB },
      ],
      { dontDump: true, pin: true },
    );
    expect(original.recipe).toEqual({
      extents: [6 * MiB, 2 * MiB, 2 * MiB, 2 * MiB],
      flags: native.mapFlags.populate | native.mapFlags.writable | native.mapFlags.dontDump,
      alignment: 2 * MiB,
      congruence: 0,
    });
    const made = mapFromRecipe(pool.fd, original.recipe);
    const before = native.liveMappings();
    // Misfits change nothing: the mapping stays as it was, unowned.
    const misfits: Array<[MappingRecipe, string]> = [
      [{ ...original.recipe, alignment: 4096 }, 'was made with 4096-byte pages'],
      [{ ...original.recipe, extents: [6 * MiB, 2 * MiB] }, 'the recipe covers 2097152'],
      [{ ...original.recipe, extents: [31 * MiB, 2 * MiB, 2 * MiB, 2 * MiB] }, "is not aligned to the pool's 2 MiB pages"],
    ];
    for (const [recipe, message] of misfits) {
      const error = captureError(() => pool.adoptMapping(made, recipe));
      expect(error).toMatchObject({ code: 'EINVAL', syscall: 'mmap', path: pool.path });
      expect(error.message).toContain(message);
    }
    expect(native.liveMappings()).toBe(before);
    const adopted = pool.adoptMapping(made, original.recipe);
    expect(adopted).toMatchObject({ pinned: true, extents: original.extents, length: 4 * MiB });
    expect(vmFlags(adopted.address)).toContain('dd');
    expect(adopted.physicalFrames()).toEqual(original.physicalFrames());
    original.bytes()[2 * MiB] = 0xa5; // the page at 2 MiB, second in both
    expect(adopted.bytes()[2 * MiB]).toBe(0xa5);
    original.unmap();
    adopted.unmap();
  });

  it('zero and populate outside the mapping are refused', async () => {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    expect(captureError(() => mapping.zero(2 * MiB - 1, 2))).toMatchObject({ code: 'EINVAL', syscall: 'memset' });
    expect(await captureRejection(mapping.populateAsync({ offset: 0, length: 4 * MiB }))).toMatchObject({ code: 'EINVAL' });
    mapping.unmap();
  });

  it('unmaps a Mapping that was garbage-collected, detaching buffers still held', async () => {
    let address = 0n;
    let id = -1;
    let kept: ArrayBuffer | undefined;
    const unmapped = mappingCollected(() => id);
    (() => {
      const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
      address = mapping.address;
      id = mapping.id;
      kept = mapping.buffer;
    })();
    expect(kept.byteLength).toBe(2 * MiB);
    await collectUntil(unmapped);
    expect(isMapped(address)).toBe(false);
    expect(kept.byteLength).toBe(0);
  });

  it('a Mapping collected while native work runs on it is unmapped when the work ends, not before', async () => {
    let address = 0n;
    let id = -1;
    let workDone = false;
    // What the collector's unmap left, seen at the moment it ran: memory still mapped exactly while the worker used it.
    let atCollection: { mapped: boolean; workDone: boolean } | undefined;
    const unmapped = mappingCollected(() => id).then(() => (atCollection = { mapped: isMapped(address), workDone }));
    const work = (() => {
      const mapping = pool.map([{ offset: 0, length: 32 * MiB }]);
      address = mapping.address;
      id = mapping.id;
      // Hold only the id, so the Mapping object is unreachable while the worker zeroes its memory.
      return native.zeroAsync(mapping.id, 0, 32 * MiB);
    })();
    void work.then(() => (workDone = true));
    await collectUntil(unmapped);
    expect(atCollection).toBeDefined();
    expect(atCollection!.mapped).toBe(!atCollection!.workDone);
    await work;
    expect(isMapped(address)).toBe(false);
  });

  it('creates no ArrayBuffer until one is asked for, and small views get small buffers', () => {
    const mapping = pool.map([{ offset: 0, length: 8 * MiB }]);
    const window = mapping.bytes(2 * MiB, 16);
    expect(window.buffer.byteLength).toBe(16);
    window[3] = 0x5a;
    const whole = mapping.buffer;
    expect(whole.byteLength).toBe(8 * MiB);
    expect(new Uint8Array(whole)[2 * MiB + 3]).toBe(0x5a);
    expect(mapping.bytes(2 * MiB, 16).buffer).toBe(whole);
    mapping.unmap();
    expect(window.length).toBe(0);
    expect(whole.byteLength).toBe(0);
  });

  it('unmaps everything when a worker thread environment is torn down', async () => {
    const worker = new Worker(path.join(repoRoot, 'dist', 'test', 'fixtures', 'map-in-worker.js'), { workerData: { path: pool.path } });
    // Listen for the exit first: a worker that exits before its message is handled has the message delivered and
    // 'exit' emitted in the same turn, so a listener added after the message arrives would wait for ever.
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    const address = BigInt(`0x${await new Promise<string>((resolve, reject) => worker.once('message', resolve).once('error', reject))}`);
    await exited;
    expect(isMapped(address)).toBe(false);
  });
});

describe.skipIf(skipReason(m.skip2M))('placement for page-table sharing (2 MiB pages)', () => {
  it('with sharePageTables, places a mapping of 1 GiB or more at an address congruent to its file offset modulo 1 GiB', () => {
    // What lets Linux share the page tables of two processes mapping the same guest RAM (hugetlb PMD sharing).
    const pool = Pool.create({ backend: 'hugetlbfs', path: uniquePath(m.hugetlbfs2M!, 'share'), size: GiB + 4 * MiB });
    try {
      const marks = pool.map([{ offset: 0, length: 4 * MiB }]);
      marks.bytes()[0] = 0xa0;
      marks.bytes()[2 * MiB] = 0xa2;
      marks.unmap();
      for (const offset of [0, 2 * MiB, 4 * MiB]) {
        const mapping = pool.map([{ offset, length: GiB }], { sharePageTables: true });
        expect(mapping.address % BigInt(GiB)).toBe(BigInt(offset));
        expect(mapping.mmapCalls).toBe(1);
        if (offset <= 2 * MiB) expect(mapping.bytes(0, 1)[0]).toBe(offset === 0 ? 0xa0 : 0xa2);
        mapping.unmap();
      }
      // Stitched extents: the first one decides where the mapping starts; the pieces stay in the order given.
      const stitched = pool.map(
        [
          { offset: 2 * MiB, length: GiB },
          { offset: 0, length: 2 * MiB },
        ],
        { sharePageTables: true },
      );
      expect(stitched.address % BigInt(GiB)).toBe(BigInt(2 * MiB));
      expect(stitched.mmapCalls).toBe(2);
      expect([stitched.bytes(0, 1)[0], stitched.bytes(GiB, 1)[0]]).toEqual([0xa2, 0xa0]);
      stitched.unmap();
    } finally {
      pool.destroy();
    }
  });
});

describe.skipIf(skipReason(process.env.GUESTMEMFS_BUILD === 'Asan' ? 'AddressSanitizer turns mlock into a no-op' : ''))(
  'mlock on the 4 KiB fallback',
  () => {
    it('locks and unlocks the range (VmFlags "lo")', () => {
      const pool = Pool.create({ backend: 'memfd-4k', size: 1 * MiB });
      const mapping = pool.mapAll({ lock: true });
      expect(vmFlags(mapping.address)).toContain('lo');
      mapping.lock(false);
      expect(vmFlags(mapping.address)).not.toContain('lo');
      mapping.lock(true);
      expect(vmFlags(mapping.address)).toContain('lo');
      mapping.unmap();
      pool.close();
    });
  },
);

describe('a mapping larger than JavaScript can view at once', () => {
  it('refuses a whole view over 4 GiB with the remedy, and windows of it work', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 5 * GiB, sparse: true });
    const mapping = pool.mapAll({ populate: false });
    try {
      expect(captureError(() => mapping.bytes())).toMatchObject({
        code: 'EINVAL',
        message: expect.stringMatching(/larger than JavaScript allows.*bytes\(offset, length\)/),
      });
      expect(captureError(() => mapping.buffer)).toMatchObject({ code: 'EINVAL' });
      const last = mapping.bytes(5 * GiB - 4096, 4096);
      last[4095] = 7;
      expect(mapping.bytes(5 * GiB - 1, 1)[0]).toBe(7);
    } finally {
      mapping.unmap();
      pool.close();
    }
  });
});

describe('native layer re-checks its arguments', () => {
  it('rejects wrong types, fractions, negatives and misaligned extents without touching memory', () => {
    const pool = Pool.create({ backend: 'memfd-4k', size: 64 * 1024 });
    try {
      const result = new Float64Array(native.mapResult.slots);
      const map = (extents: unknown, overrides: { flags?: number; alignment?: number; congruence?: number; result?: unknown } = {}) =>
        native.mapExtents(
          pool.fd,
          extents as Float64Array,
          overrides.flags ?? native.mapFlags.writable,
          overrides.alignment ?? 4096,
          overrides.congruence ?? 0,
          (overrides.result ?? result) as Float64Array,
        );
      const signature =
        'mapExtents(fd, Float64Array [offset, length, ...], flags, alignment, congruence, Float64Array result[, largeFd, largeFrom])';
      const mapHybrid = (largeFrom: number, congruence = 0) =>
        native.mapExtents(pool.fd, new Float64Array([0, 4096]), native.mapFlags.writable, 4096, congruence, result, pool.fd, largeFrom);
      const bad: Array<[() => unknown, string]> = [
        [() => native.fileResize('3' as never, 1), 'fd must be a number'],
        [() => native.fileResize(pool.fd, 1.5), 'size must be an integer'],
        [() => native.fileAllocate(pool.fd, -4096, 4096), 'offset must be an integer'],
        [() => map([0, 4096]), signature],
        [() => map(new Float64Array([0, 4096]), { result: new Float64Array(2) }), signature],
        [() => map(new Float64Array([0, 4096]), { result: [0, 0, 0, 0, 0] }), signature],
        [() => map(new Float64Array([0, 4096, 1])), '[offset, length] pairs'],
        [() => map(new Float64Array([100, 4096])), 'is not aligned to 4096'],
        [() => map(new Float64Array([0, 1 << 20])), 'beyond the pool'],
        [() => map(new Float64Array([0, 4096]), { flags: 64 }), 'flags must be an integer'],
        [() => map(new Float64Array([0, 4096]), { flags: 1.5 }), 'flags must be an integer'],
        [() => map(new Float64Array([0, 4096]), { alignment: 3 * 4096 }), 'alignment must be a power of two'],
        [() => map(new Float64Array([0, 4096]), { alignment: 2048 }), 'alignment must be an integer'],
        [() => map(new Float64Array([0, 4096]), { congruence: 2048 }), 'congruence must be 0 or a power of two'],
        [() => map(new Float64Array([0, 4096]), { congruence: 3 * 4096 }), 'congruence must be 0 or a power of two'],
        [() => map(new Float64Array([0, 4096]), { congruence: 2 * GiB }), 'congruence must be an integer'],
        [() => mapHybrid(GiB + 4096), 'largeFrom must be a multiple of 1 GiB'],
        [() => mapHybrid(4096), 'largeFrom must be an integer'],
        [() => mapHybrid(GiB, 2 * MiB), 'congruence is for pools of 2 MiB pages only'],
        [() => native.unmap(999_999), 'is not mapped'],
        [() => native.mapAnonymous(4095, true), 'length must be an integer in [4096,'],
        [() => native.mapAnonymous(4096 + 512, false), 'length must be a multiple of 4096'],
        [() => native.mapAnonymous('4096' as never, false), 'length must be a number'],
        [() => native.memfdCreate('x', 3 << 20), 'power of two'],
        [() => native.fileOpen('a\0b', false, false, 0), 'must not contain NUL'],
      ];
      for (const [call, message] of bad) {
        const error = captureError(call);
        expect(error).toMatchObject({ code: 'EINVAL', errno: -22 });
        expect(error.message).toContain(message);
      }
      expect(captureError(() => native.fdInfo(987_654))).toMatchObject({ code: 'EBADF', errno: -9, syscall: 'fstat' });
    } finally {
      pool.close();
    }
  });
});

// Fuzzing the parsers that read memory which may be torn or corrupted: the handover blob decoder, the superblock
// reader and the inode/extent readers behind mount. Every mutation of a valid image must end in a clean error or a
// correct result: never another kind of exception, a hang, an out-of-range read, or a mount of damaged metadata.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestmemfsError } from '../lib/errors';
import { decodeHandoverBlob } from '../lib/handover/blob-decode';
import { verifyHandoverBlob } from '../lib/handover/blob-verify';
import { FdtError, parseFdt } from '../lib/handover/fdt';
import { FIXED_HEADER_BYTES, readSuperblock } from '../lib/fs/layout';
import { blobLayout } from '../lib/fs/lifecycle';
import { type Filesystem, KiB, MiB, mkfs, mount, Pool } from '../lib/index';

/** Runs per property; the soak (npm run soak:fuzz) raises it. */
const scale = Number(process.env.GUESTMEMFS_FUZZ_SCALE ?? 1);
const B = 16 * KiB;

type ByteWrite = { at: number; value: number };
const interesting32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 40, 4096, 16384];

/** A mutation of an image: byte writes, aligned 32-bit writes of boundary values, and maybe a truncation. */
const mutationArb = fc.record({
  bytes: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 8 }),
  words: fc.array(fc.record({ at: fc.nat(), value: fc.constantFrom(...interesting32) }), { maxLength: 3 }),
  truncate: fc.option(fc.nat(), { nil: undefined }),
});
type Mutation = { bytes: ByteWrite[]; words: ByteWrite[]; truncate: number | undefined };

function mutate(original: Uint8Array, mutation: Mutation, window?: { start: number; length: number }): Uint8Array {
  const out = original.slice();
  const start = window?.start ?? 0;
  const length = window?.length ?? out.length;
  for (const { at, value } of mutation.bytes) out[start + (at % length)] = value;
  const view = new DataView(out.buffer);
  for (const { at, value } of mutation.words) {
    const offset = start + ((at % Math.max(1, length - 4)) & ~3);
    if (offset + 4 <= out.length) view.setUint32(offset, value, window ? true : false);
  }
  return mutation.truncate === undefined || window ? out : out.subarray(0, mutation.truncate % (out.length + 1));
}

/** A formatted pool with directories, files of several extents (extent pages included) and a serialised blob. */
let pool: Pool;
let blob: Uint8Array;
let pristineMetadata: Uint8Array;
let metadataBytes: number;
let expectations: Parameters<typeof verifyHandoverBlob>[1];
let regions: Array<{ start: number; length: number }>;

beforeAll(() => {
  pool = Pool.create({ backend: 'memfd-4k', size: 2 * MiB });
  mkfs(pool, { blockSize: B, inodes: 32 });
  const gfs = mount(pool);
  gfs.mkdir('/vms/a', { recursive: true });
  for (let i = 0; i < 12; i++) {
    gfs.create(`/vms/f${i}`, { type: i % 2 ? 'guest' : 'state' });
    gfs.truncate(`/vms/f${i}`, B);
  }
  for (let i = 0; i < 12; i += 2) gfs.unlink(`/vms/f${i}`);
  gfs.create('/vms/a/big', { type: 'state' });
  gfs.truncate('/vms/a/big', 14 * B); // fragmented: spills into an extent page
  gfs.write('/vms/a/big', new TextEncoder().encode('payload'));
  const g = gfs.geometry;
  metadataBytes = g.metadataBytes;
  regions = [
    { start: 8192, length: 8192 }, // intent + hints
    { start: g.bitmapOffset, length: g.bitmapLength },
    { start: g.dirtyOffset, length: g.bitmapLength },
    { start: g.inodeOffset, length: g.inodeCount * 512 },
    { start: g.extentOffset, length: g.extentPageCount * 512 },
  ];
  gfs.unmount();
  const snap = pool.map([{ offset: 0, length: metadataBytes }], { populate: true, writable: false });
  pristineMetadata = snap.bytes().slice();
  snap.unmap();
  // The blob and what verifying it expects, from a serialised copy of the same metadata.
  const serialised = mount(pool);
  blob = serialised.serialise().blob.slice();
  serialised.abort();
  serialised.unmount();
  restorePristine();
  const sbCopy = readSuperblock(pristineMetadata.subarray(0, FIXED_HEADER_BYTES), pool);
  expectations = {
    layout: blobLayout(sbCopy.geometry),
    uuid: sbCopy.uuid,
    generation: BigInt(decodeHandoverBlob(blob).generation),
    pool: { size: pool.size, pageSize: pool.pageSize, label: 'fuzz' },
    metadata: {
      checkedHeader: new Uint8Array(FIXED_HEADER_BYTES / 2),
      bitmaps: [new Uint8Array(0), new Uint8Array(0)],
      inodeRecords: (_first: number, count: number) => [new Uint8Array(512 * count)],
      pageRecords: (_first: number, count: number) => [new Uint8Array(512 * count)],
      recordHash: () => [0, 0, 0, 0],
    },
    isLive: () => true,
    chainOf: () => [],
    blobCrc: 0,
    badBlocks: [],
  };
});
afterAll(() => pool.close());

function restorePristine(): void {
  const mapping = pool.map([{ offset: 0, length: metadataBytes }]);
  mapping.bytes().set(pristineMetadata);
  mapping.unmap();
}

function cleanError(error: unknown, classes: Array<new (...args: never[]) => Error>): boolean {
  return classes.some((errorClass) => error instanceof errorClass);
}

describe('fuzzing the handover blob decoder', () => {
  it('parseFdt and decodeHandoverBlob end in an FdtError/decoder error or a decode', () => {
    const original = decodeHandoverBlob(blob);
    fc.assert(
      fc.property(mutationArb, (mutation) => {
        const damaged = mutate(blob, mutation);
        try {
          parseFdt(damaged);
        } catch (error) {
          expect(cleanError(error, [FdtError]), String(error)).toBe(true);
        }
        try {
          const decoded = decodeHandoverBlob(damaged);
          expect(decoded.liveInodes.length).toBeLessThanOrEqual(damaged.length);
          if (Buffer.from(damaged).equals(Buffer.from(blob))) expect(decoded).toEqual(original);
        } catch (error) {
          // The decoder's own refusals carry a check name; anything else would be a bug.
          expect(error instanceof FdtError || (error as { check?: string }).check !== undefined, String(error)).toBe(true);
        }
      }),
      { numRuns: 2000 * scale },
    );
  });

  it('verifyHandoverBlob accepts only the genuine blob and refuses everything else with a GuestmemfsError', () => {
    fc.assert(
      fc.property(mutationArb, (mutation) => {
        const damaged = mutate(blob, mutation);
        try {
          verifyHandoverBlob(damaged, expectations);
        } catch (error) {
          expect(error, String(error)).toBeInstanceOf(GuestmemfsError);
          expect(['EUCLEAN', 'EINVAL']).toContain((error as GuestmemfsError).code);
          return;
        }
        // Our expectations never match a real pool (blobCrc 0), so verification can only get here by a bug.
        throw new Error('a damaged blob passed verification');
      }),
      { numRuns: 1000 * scale },
    );
  });
});

describe('fuzzing the superblock reader', () => {
  it('readSuperblock returns the original geometry or refuses with a GuestmemfsError', () => {
    const header = pristineMetadata.subarray(0, FIXED_HEADER_BYTES);
    const original = readSuperblock(header, pool);
    fc.assert(
      fc.property(mutationArb, (mutation) => {
        const damaged = mutate(header, mutation, { start: 0, length: 8192 });
        try {
          const sb = readSuperblock(damaged, pool);
          expect(sb.geometry).toEqual(original.geometry);
          expect(sb.uuid).toBe(original.uuid);
        } catch (error) {
          expect(error, String(error)).toBeInstanceOf(GuestmemfsError);
        }
      }),
      { numRuns: 1000 * scale },
    );
  });
});

describe('fuzzing the inode and extent readers behind mount', () => {
  it('mount refuses damaged metadata with a GuestmemfsError or mounts a filesystem whose audit is clean', () => {
    let mounted = 0;
    let refused = 0;
    fc.assert(
      fc.property(fc.nat(), mutationArb, (regionPick, mutation) => {
        restorePristine();
        const region = regions[regionPick % regions.length]!;
        const mapping = pool.map([{ offset: 0, length: metadataBytes }]);
        const damaged = mutate(pristineMetadata, mutation, region);
        mapping.bytes().set(damaged);
        mapping.unmap();
        let gfs: Filesystem | undefined;
        try {
          gfs = mount(pool);
        } catch (error) {
          expect(error, String(error)).toBeInstanceOf(GuestmemfsError);
          refused++;
          return;
        }
        try {
          mounted++;
          expect(gfs.audit().problems).toEqual([]);
          const walk = (dir: string): void => {
            for (const entry of gfs.readdirEntries(dir)) {
              const full = dir === '/' ? `/${entry.name}` : `${dir}/${entry.name}`;
              const stat = gfs.stat(full);
              if (entry.type === 'directory') walk(full);
              else if (stat.fileType !== 'guest') gfs.read(full, 0, 64);
            }
          };
          walk('/');
        } finally {
          gfs.unmount();
        }
      }),
      { numRuns: 1500 * scale },
    );
    process.stdout.write(`[fuzz] mount: ${mounted} mounted clean, ${refused} refused\n`);
    expect(mounted).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
  }, 120_000);
});

// Handover versions: version 2's record hash (exactly the words the format names, checked in the restore's own pass)
// and version 1, still read and still written on request for a predecessor's release.
import * as crypto from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FIXED_HEADER_BYTES, readSuperblock, writeSuperblockSlot } from '../lib/fs/layout';
import { check, decodeHandoverBlob, type Filesystem, HANDOVER_VERSIONS, KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { crc32, RECORD_HASH } from '../lib/checksum';
import { leaveHoles } from './fs-helpers';
import { captureError } from './helpers';

const B = 64 * KiB;
const INODE_SIZE = 512;

/**
 * The record hash as the blob's format comment states it, written from that text alone: the live list cut into groups
 * of inodes sharing ino >> 11; each group's four lanes start at the seeds XOR the group number and take, for each of
 * its inodes, words [0, 36) of its record, then words [64, 64 + 4 * ceil(n / 16)) where n = min(name length, 255),
 * word k of the group's sequence stepping lane k mod 4 as (lane XOR word) * multiplier mod 2^32; the groups' lanes
 * are summed mod 2^32.
 */
function referenceHash(metadata: Uint8Array, inodeOffset: number, live: ArrayLike<number>): number[] {
  const view = new DataView(metadata.buffer, metadata.byteOffset, metadata.byteLength);
  const multipliers = RECORD_HASH.multipliers.map((multiplier) => BigInt(multiplier >>> 0));
  const groups = new Map<number, number[]>();
  for (let index = 0; index < live.length; index++) {
    const ino = live[index]!;
    const record = inodeOffset + ino * INODE_SIZE;
    const words = groups.get(ino >> 11) ?? [];
    groups.set(ino >> 11, words);
    for (let word = 0; word < 36; word++) words.push(view.getUint32(record + word * 4, true));
    const nameLength = Math.min(view.getUint32(record + 100, true), 255);
    for (let word = 0; word < 4 * Math.ceil(nameLength / 16); word++) words.push(view.getUint32(record + 256 + word * 4, true));
  }
  const sums = [0n, 0n, 0n, 0n];
  for (const [group, words] of groups) {
    const lanes = RECORD_HASH.seeds.map((seed) => BigInt((seed ^ group) >>> 0));
    words.forEach((word, k) => {
      lanes[k % 4] = ((lanes[k % 4]! ^ BigInt(word)) * multipliers[k % 4]!) & 0xffffffffn;
    });
    lanes.forEach((lane, at) => (sums[at] = (sums[at]! + lane) & 0xffffffffn));
  }
  return sums.map(Number);
}

/** Where a 4-byte property's value starts in a blob: after its PROP token, length and name offset. */
function valueOffset(blob: Uint8Array, name: string): number {
  const bytes = Buffer.from(blob);
  const stringsAt = bytes.readUInt32BE(12);
  const header = Buffer.alloc(12);
  header.writeUInt32BE(3, 0);
  header.writeUInt32BE(4, 4);
  header.writeUInt32BE(bytes.indexOf(`${name}\0`, stringsAt) - stringsAt, 8);
  return bytes.indexOf(header, bytes.readUInt32BE(8)) + 12;
}

describe('handover version 2', () => {
  let pool: Pool;
  let gfs: Filesystem | undefined;

  beforeEach(() => {
    pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB });
    mkfs(pool, { blockSize: B, inodes: 256 });
  });
  afterEach(() => {
    if (gfs?.mounted) {
      if (gfs.serialised) gfs.abort();
      gfs.unmount();
    }
    pool.close();
  });

  /** Names of every length class a record hash rounds (1 to 255 bytes, non-ASCII too), a directory, extent pages. */
  function populate(fs: Filesystem): void {
    fs.mkdir('/vms');
    for (const length of [1, 3, 4, 7, 8, 9, 16, 100, 255]) fs.create(`/vms/${'n'.repeat(length)}`, { type: 'guest' });
    fs.create('/vms/é-ünïcode-名前', { type: 'state' });
    fs.create('/spread');
    leaveHoles(fs, 5, '/hole');
    fs.truncate('/spread', 5 * B); // into the holes: more extents than a record holds inline
    expect(fs.extents('/spread').length).toBeGreaterThan(4);
  }

  function metadata(): { bytes: Uint8Array; done: () => void } {
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    return { bytes: mapping.bytes(), done: () => mapping.unmap() };
  }

  function digest(): string {
    const { bytes, done } = metadata();
    const sum = crypto.createHash('sha256').update(bytes).digest('hex');
    done();
    return sum;
  }

  it('records the hash the format defines, over exactly the live records, and restores from it', () => {
    gfs = mount(pool);
    populate(gfs);
    const { blob, files } = gfs.serialise();
    const description = decodeHandoverBlob(blob);
    expect(description.handoverVersion).toBe(2);
    const { bytes, done } = metadata();
    expect(description.liveHash).toEqual(referenceHash(bytes, gfs.geometry.inodeOffset, description.liveInodes));
    done();
    gfs.unmount();
    gfs = mount(pool);
    expect(gfs.restored).toMatchObject({ files, description: { handoverVersion: 2 } });
    expect(gfs.readdir('/vms')).toHaveLength(10);
    expect(gfs.stat('/vms/é-ünïcode-名前').fileType).toBe('state');
    expect(gfs.extents('/spread').length).toBeGreaterThan(4);
  });

  it('refuses a change to any word it covers, in mount and in check, and leaves the pool untouched', () => {
    gfs = mount(pool);
    populate(gfs);
    const ino = gfs.stat(`/vms/${'n'.repeat(9)}`).ino;
    gfs.serialise();
    const record = gfs.geometry.inodeOffset + ino * INODE_SIZE;
    gfs.unmount();
    gfs = undefined;
    // Every field word and the two of padding, and the name's words up to the rounded quad (9 bytes: 4 words).
    const covered = [...Array.from({ length: 36 }, (_, word) => word * 4), ...[0, 1, 2, 3].map((word) => 256 + word * 4)];
    for (const at of covered) {
      const flip = () => {
        const { bytes, done } = metadata();
        bytes[record + at + 1] = bytes[record + at + 1]! ^ 0x02; // bit 9 of the word: the type field stays non-zero (in use)
        done();
      };
      flip();
      const before = digest();
      const refused = captureError(() => mount(pool));
      expect(refused, `byte ${at}`).toMatchObject({ code: 'EUCLEAN', syscall: 'mount' });
      expect(refused.message).toMatch(
        new RegExp(
          "^EUCLEAN: handover refused \\(checksum\\): metadata changed after serialise: the live inodes' record hash is " +
            '[0-9a-f]{32}, the blob recorded [0-9a-f]{32}; the pool was left untouched$',
        ),
      );
      expect(digest()).toBe(before);
      expect(check(pool).problems.join('; ')).toContain("the live inodes' record hash is");
      flip();
    }
    gfs = mount(pool);
    expect(gfs.restored).toBeDefined();
  });

  it('does not cover what a record does not use: bytes [144, 256) and the name past its last quad', () => {
    gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    const ino = gfs.stat('/ram').ino;
    gfs.serialise();
    const record = gfs.geometry.inodeOffset + ino * INODE_SIZE;
    gfs.unmount();
    const { bytes, done } = metadata();
    bytes[record + 144] = bytes[record + 144]! ^ 0xff;
    bytes[record + 255] = bytes[record + 255]! ^ 0xff;
    bytes[record + 256 + 16] = bytes[record + 256 + 16]! ^ 0xff; // "ram" is 3 bytes: one quad of words, [256, 272)
    done();
    gfs = mount(pool);
    expect(gfs.restored).toBeDefined();
    expect(gfs.stat('/ram').fileType).toBe('guest');
  });

  it('refuses a version-2 blob without its live-hash, and a version it does not know', () => {
    gfs = mount(pool);
    gfs.create('/ram');
    const { blob } = gfs.serialise({ handoverVersion: 1 });
    gfs.unmount();
    gfs = undefined;
    const at = valueOffset(blob, 'handover-version');
    expect(blob.slice(at, at + 4)).toEqual(new Uint8Array([0, 0, 0, 1]));
    for (const [version, check, message] of [
      [2, 'missing-property', '/guestmemfs/inodes has no "live-hash" property'],
      [3, 'version', 'handover version 3 is not supported (this guestmemfs reads 1 and 2)'],
    ] as const) {
      const forged = blob.slice();
      forged[at + 3] = version;
      const { bytes, done } = metadata();
      const sb = readSuperblock(bytes.subarray(0, FIXED_HEADER_BYTES), pool);
      bytes.set(forged, sb.geometry.handoverOffset);
      writeSuperblockSlot(bytes, 1 - sb.slot, { ...sb, sequence: sb.sequence + 1n, handoverCrc: crc32(forged) });
      done();
      const refused = captureError(() => mount(pool));
      expect(refused.message).toBe(
        `${version === 2 ? 'EUCLEAN' : 'EINVAL'}: handover refused (${check}): ${message}; the pool was left untouched`,
      );
    }
  });
});

describe('the record hash across groups of 2048 inodes', () => {
  let pool: Pool;

  beforeEach(() => {
    pool = Pool.create({ backend: 'memfd-4k', size: 16 * MiB });
    mkfs(pool, { blockSize: B, inodes: 6000 });
  });
  afterEach(() => pool.close());

  function liveHashMatchesReference(blob: Uint8Array, inodeOffset: number): void {
    const description = decodeHandoverBlob(blob);
    const mapping = pool.map([{ offset: 0, length: inodeOffset + 6000 * INODE_SIZE }], { populate: false, writable: false });
    expect(description.liveHash).toEqual(referenceHash(mapping.bytes(), inodeOffset, description.liveInodes));
    mapping.unmap();
  }

  it('a serialise rehashes the groups written since, through every kind of change, and each restores', () => {
    let gfs = mount(pool);
    for (let i = 0; i < 5000; i++) gfs.create(`/f${i}`);
    const inodeOffset = gfs.geometry.inodeOffset;
    expect(gfs.stat('/f4900').ino >> 11).toBe(2); // three groups
    const changes: Array<(fs: Filesystem) => void> = [
      () => undefined, // nothing written: every group's hash is reused
      (fs) => fs.chmod('/f10', 0o640),
      (fs) => fs.chown('/f2100', 7, 8),
      (fs) => fs.utimes('/f4500', 1n, 2n),
      (fs) => fs.truncate('/f4501', B),
      (fs) => fs.rename('/f4502', '/renamed'),
      (fs) => fs.unlink('/f3000'),
      (fs) => fs.create('/new'),
      (fs) => fs.mkdir('/dir'),
      (fs) => fs.rmdir('/dir'),
    ];
    for (const change of changes) {
      change(gfs);
      const { blob } = gfs.serialise();
      liveHashMatchesReference(blob, inodeOffset);
      gfs.unmount();
      gfs = mount(pool);
      expect(gfs.restored).toBeDefined();
    }
    expect(gfs.stat('/renamed').ino).toBeGreaterThan(4096);
    gfs.unmount();
  });

  it('is only a shortcut: a record changed behind the filesystem after a restore makes the next restore refuse', () => {
    let gfs = mount(pool);
    for (let i = 0; i < 5000; i++) gfs.create(`/f${i}`);
    gfs.serialise();
    gfs.unmount();
    gfs = mount(pool); // restored: every group's hash is known and clean
    const record = gfs.geometry.inodeOffset + gfs.stat('/f4900').ino * INODE_SIZE;
    const poke = () => {
      const mapping = pool.map([{ offset: 0, length: 4 * MiB }]);
      const bytes = mapping.bytes();
      bytes[record + 12] = bytes[record + 12]! ^ 0x01; // the uid, not through the filesystem
      mapping.unmap();
    };
    poke();
    gfs.serialise(); // reuses the group's hash from before the poke
    gfs.unmount();
    expect(captureError(() => mount(pool)).message).toContain(
      "handover refused (checksum): metadata changed after serialise: the live inodes' record hash",
    );
    poke();
    const again = mount(pool);
    expect(again.restored).toBeDefined();
    again.unmount();
  });
});

describe('handover version 1', () => {
  let pool: Pool;

  beforeEach(() => {
    pool = Pool.create({ backend: 'memfd-4k', size: 8 * MiB });
    mkfs(pool, { blockSize: B, inodes: 64 });
  });
  afterEach(() => pool.close());

  it('is written on request, for a predecessor release, and restored: its CRC covers whole records', () => {
    const gfs = mount(pool);
    gfs.create('/ram', { type: 'guest' });
    gfs.truncate('/ram', 2 * B);
    const ino = gfs.stat('/ram').ino;
    const { blob } = gfs.serialise({ handoverVersion: 1 });
    const description = decodeHandoverBlob(blob);
    expect(description.handoverVersion).toBe(1);
    expect(description.liveHash).toBeUndefined();
    // Asking again for the same version returns the same blob; another one is refused while frozen.
    expect(gfs.serialise({ handoverVersion: 1 }).blob).toEqual(blob);
    expect(gfs.serialise().blob).toEqual(blob);
    expect(captureError(() => gfs.serialise({ handoverVersion: 2 }))).toMatchObject({
      code: 'EBUSY',
      message: expect.stringContaining('serialised already, as handover version 1: abort() first to serialise it as version 2'),
    });
    const record = gfs.geometry.inodeOffset + ino * INODE_SIZE;
    gfs.unmount();
    const restored = mount(pool);
    expect(restored.restored?.description.handoverVersion).toBe(1);
    expect(restored.stat('/ram').size).toBe(2 * B);
    restored.serialise({ handoverVersion: 1 });
    restored.unmount();
    // A byte version 2 leaves uncovered is covered by version 1's CRC.
    const mapping = pool.map([{ offset: 0, length: 2 * MiB }]);
    const damaged = mapping.bytes();
    damaged[record + 200] = damaged[record + 200]! ^ 0x01;
    mapping.unmap();
    expect(captureError(() => mount(pool)).message).toContain(
      'handover refused (checksum): metadata changed after serialise: live-metadata CRC32',
    );
  });

  it('refuses a version it does not write, and changes nothing', () => {
    const gfs = mount(pool);
    expect(HANDOVER_VERSIONS).toEqual([1, 2]);
    expect(captureError(() => gfs.serialise({ handoverVersion: 3 as 1 }))).toBeInstanceOf(RangeError);
    expect(captureError(() => gfs.serialise({ handoverVersion: '2' as unknown as 2 }))).toBeInstanceOf(TypeError);
    expect(gfs.serialised).toBe(false);
    gfs.create('/still-writable');
    gfs.unmount();
  });
});

// On-pool format: where the superblock, intent record, hints, bitmaps, inode table, extent pages and handover area live.
//
// Everything is little-endian. The metadata region is the first `metadataBlocks` blocks of the pool:
//
//   offset 0        superblock slot A (4 KiB)  \ two copies, each with its own CRC32 and sequence number: a writer
//   offset 4096     superblock slot B (4 KiB)  / updates the older slot, so a kill mid-write leaves the other intact
//   offset 8192     intent record (4 KiB)      rename's redo record (see namespace ordering in filesystem.ts)
//   offset 12288    hints (4 KiB)              free-list heads and counters: derived, rebuilt by the checker
//   bitmapOffset    allocated bitmap           one bit per block; derived from the extents of live inodes
//   dirtyOffset     dirty bitmap               one bit per block: freed but not yet zeroed (primary: not derivable)
//   inodeOffset     inode table                inodeCount x 512 bytes; inode 0 is never used, inode 1 is the root
//   extentOffset    extent pages               extentPageCount x 512 bytes; page 0 is never used
//   handoverOffset  handover area              the KHO-style blob (issue: handover)
import * as zlib from 'node:zlib';
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';

export const FORMAT_MAGIC = 'GMFSPOOL';
export const FORMAT_MAJOR = 1;
export const FORMAT_MINOR = 0;
/** Feature masks: a mount refuses any incompatible bit it does not know; read-only-compatible bits force read-only. */
export const KNOWN_COMPAT = 0;
export const KNOWN_INCOMPAT = 0;
export const KNOWN_RO_COMPAT = 0;

export const SLOT_SIZE = 4096;
export const SLOT_A_OFFSET = 0;
export const SLOT_B_OFFSET = 4096;
export const INTENT_OFFSET = 8192;
export const HINTS_OFFSET = 12288;
export const FIXED_HEADER_BYTES = 16384;
/** Bytes of a superblock slot covered by its CRC32 (the CRC sits right after them). */
export const SLOT_CHECKED_BYTES = 508;

export const INODE_SIZE = 512;
export const EXTENT_PAGE_SIZE = 512;
export const INLINE_EXTENTS = 4;
export const EXTENTS_PER_PAGE = 62;
export const ROOT_INO = 1;

export enum PoolState {
  Clean = 0,
  Mounted = 1,
  Serialised = 2,
}

// Superblock slot field offsets.
const SB = {
  magic: 0,
  major: 8,
  minor: 10,
  checkedBytes: 12,
  compat: 16,
  incompat: 20,
  roCompat: 24,
  uuid: 32,
  poolSize: 48,
  pageSize: 56,
  blockSize: 64,
  blockCount: 72,
  metadataBlocks: 76,
  inodeCount: 80,
  inodeSize: 84,
  extentPageCount: 88,
  extentPageSize: 92,
  bitmapOffset: 96,
  bitmapLength: 104,
  dirtyOffset: 112,
  inodeOffset: 120,
  extentOffset: 128,
  handoverOffset: 136,
  handoverLength: 144,
  createdNs: 152,
  sequence: 160,
  generation: 168,
  state: 176,
  ownerPid: 180,
  ownerStartTime: 184,
  mountCount: 192,
  handoverBytes: 200,
  handoverCrc: 204,
  handoverGeneration: 208,
  crc: SLOT_CHECKED_BYTES,
} as const;

/** Pool geometry fixed at mkfs. */
export interface Geometry {
  poolSize: number;
  pageSize: number;
  blockSize: number;
  blockCount: number;
  metadataBlocks: number;
  inodeCount: number;
  extentPageCount: number;
  bitmapOffset: number;
  bitmapLength: number;
  dirtyOffset: number;
  inodeOffset: number;
  extentOffset: number;
  handoverOffset: number;
  handoverLength: number;
  /** Bytes of the metadata region (metadataBlocks x blockSize). */
  metadataBytes: number;
}

/** The mutable part of the superblock. */
export interface SuperblockState {
  sequence: bigint;
  generation: bigint;
  state: PoolState;
  ownerPid: number;
  ownerStartTime: bigint;
  mountCount: bigint;
  /** Length and CRC-32 of the handover blob in the handover area, valid while state is Serialised. */
  handoverBytes: number;
  handoverCrc: number;
  /** Generation the blob was serialised at. */
  handoverGeneration: bigint;
}

export interface Superblock extends SuperblockState {
  major: number;
  minor: number;
  compat: number;
  incompat: number;
  roCompat: number;
  uuid: string;
  createdNs: bigint;
  geometry: Geometry;
  /** Which slot (0 = A, 1 = B) this copy came from. */
  slot: number;
}

const align = (value: number, to: number) => Math.ceil(value / to) * to;

/** Default inode count: two per block, at least 1024 and at most 65536. */
export function defaultInodeCount(blockCount: number): number {
  return Math.min(65536, Math.max(1024, blockCount * 2));
}

/**
 * Extent pages needed so that the extent store can never run out: a file with E > 4 extents uses at most
 * ceil((E - 4) / 62) pages, every extent holds at least one block, so at most blockCount / 5 files overflow.
 */
export function extentPagesFor(blockCount: number): number {
  return Math.ceil(blockCount / 5) + Math.ceil(blockCount / EXTENTS_PER_PAGE) + 8;
}

export function computeGeometry(poolSize: number, pageSize: number, blockSize: number, inodeCount: number): Geometry {
  if (blockSize % pageSize !== 0) {
    throw new GuestmemfsError('EINVAL', `block size ${formatSize(blockSize)} must be a multiple of the pool's ${formatSize(pageSize)} pages`);
  }
  if (poolSize % blockSize !== 0) {
    throw new GuestmemfsError('EINVAL', `pool size ${formatSize(poolSize)} is not a multiple of the ${formatSize(blockSize)} block size`);
  }
  const blockCount = poolSize / blockSize;
  if (blockCount > 0xffffffff) throw new GuestmemfsError('EINVAL', `pool has ${blockCount} blocks; at most 2^32 are supported: use a larger block size`);
  if (!Number.isSafeInteger(inodeCount) || inodeCount < 2 || inodeCount > 0x7fffffff) {
    throw new GuestmemfsError('EINVAL', `inode count ${inodeCount} must be an integer between 2 and 2^31`);
  }
  const extentPageCount = extentPagesFor(blockCount);
  const bitmapLength = align(Math.ceil(blockCount / 8), 8);
  const bitmapOffset = FIXED_HEADER_BYTES;
  const dirtyOffset = align(bitmapOffset + bitmapLength, 4096);
  const inodeOffset = align(dirtyOffset + bitmapLength, 4096);
  const extentOffset = align(inodeOffset + inodeCount * INODE_SIZE, 4096);
  const handoverOffset = align(extentOffset + extentPageCount * EXTENT_PAGE_SIZE, 4096);
  // Room for the handover blob: fixed nodes plus per-inode and per-extent-page entries.
  const handoverLength = align(65536 + 8 * inodeCount + 8 * extentPageCount, 4096);
  const metadataBlocks = Math.ceil((handoverOffset + handoverLength) / blockSize);
  if (metadataBlocks >= blockCount) {
    throw new GuestmemfsError(
      'ENOSPC',
      `pool of ${formatSize(poolSize)} is too small: its metadata (${inodeCount} inodes) needs ${metadataBlocks} of its ${blockCount} ${formatSize(blockSize)} blocks; use a larger pool or fewer inodes`,
    );
  }
  return {
    poolSize,
    pageSize,
    blockSize,
    blockCount,
    metadataBlocks,
    inodeCount,
    extentPageCount,
    bitmapOffset,
    bitmapLength,
    dirtyOffset,
    inodeOffset,
    extentOffset,
    handoverOffset,
    handoverLength,
    metadataBytes: metadataBlocks * blockSize,
  };
}

export function newUuid(): string {
  // Loaded here, not at the top: node:crypto costs 3-5 ms to load, inside an exec-mode update's blackout, and only
  // mkfs needs it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:crypto') as typeof import('node:crypto')).randomUUID();
}

function writeUuid(view: DataView, offset: number, uuid: string): void {
  const hex = uuid.replace(/-/g, '');
  for (let i = 0; i < 16; i++) view.setUint8(offset + i, Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16));
}

function readUuid(view: DataView, offset: number): string {
  let hex = '';
  for (let i = 0; i < 16; i++) hex += view.getUint8(offset + i).toString(16).padStart(2, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function crc32(bytes: Uint8Array): number {
  return zlib.crc32(bytes) >>> 0;
}

/** Writes a complete superblock copy into one slot, CRC last, so a reader never accepts a half-written slot. */
export function writeSuperblockSlot(metadata: Uint8Array, slot: number, sb: Omit<Superblock, 'slot'>): void {
  const base = slot === 0 ? SLOT_A_OFFSET : SLOT_B_OFFSET;
  const view = new DataView(metadata.buffer, metadata.byteOffset + base, SLOT_SIZE);
  const g = sb.geometry;
  // Invalidate the slot first: a kill during the rewrite must not leave the old CRC over mixed fields.
  view.setUint32(SB.crc, 0, true);
  for (let i = 0; i < 8; i++) view.setUint8(SB.magic + i, FORMAT_MAGIC.charCodeAt(i));
  view.setUint16(SB.major, sb.major, true);
  view.setUint16(SB.minor, sb.minor, true);
  view.setUint32(SB.checkedBytes, SLOT_CHECKED_BYTES, true);
  view.setUint32(SB.compat, sb.compat, true);
  view.setUint32(SB.incompat, sb.incompat, true);
  view.setUint32(SB.roCompat, sb.roCompat, true);
  writeUuid(view, SB.uuid, sb.uuid);
  view.setBigUint64(SB.poolSize, BigInt(g.poolSize), true);
  view.setBigUint64(SB.pageSize, BigInt(g.pageSize), true);
  view.setBigUint64(SB.blockSize, BigInt(g.blockSize), true);
  view.setUint32(SB.blockCount, g.blockCount, true);
  view.setUint32(SB.metadataBlocks, g.metadataBlocks, true);
  view.setUint32(SB.inodeCount, g.inodeCount, true);
  view.setUint32(SB.inodeSize, INODE_SIZE, true);
  view.setUint32(SB.extentPageCount, g.extentPageCount, true);
  view.setUint32(SB.extentPageSize, EXTENT_PAGE_SIZE, true);
  view.setBigUint64(SB.bitmapOffset, BigInt(g.bitmapOffset), true);
  view.setBigUint64(SB.bitmapLength, BigInt(g.bitmapLength), true);
  view.setBigUint64(SB.dirtyOffset, BigInt(g.dirtyOffset), true);
  view.setBigUint64(SB.inodeOffset, BigInt(g.inodeOffset), true);
  view.setBigUint64(SB.extentOffset, BigInt(g.extentOffset), true);
  view.setBigUint64(SB.handoverOffset, BigInt(g.handoverOffset), true);
  view.setBigUint64(SB.handoverLength, BigInt(g.handoverLength), true);
  view.setBigUint64(SB.createdNs, sb.createdNs, true);
  view.setBigUint64(SB.sequence, sb.sequence, true);
  view.setBigUint64(SB.generation, sb.generation, true);
  view.setUint32(SB.state, sb.state, true);
  view.setUint32(SB.ownerPid, sb.ownerPid, true);
  view.setBigUint64(SB.ownerStartTime, sb.ownerStartTime, true);
  view.setBigUint64(SB.mountCount, sb.mountCount, true);
  view.setUint32(SB.handoverBytes, sb.handoverBytes, true);
  view.setUint32(SB.handoverCrc, sb.handoverCrc, true);
  view.setBigUint64(SB.handoverGeneration, sb.handoverGeneration, true);
  view.setUint32(SB.crc, crc32(new Uint8Array(view.buffer, view.byteOffset, SLOT_CHECKED_BYTES)), true);
}

type SlotResult = { ok: true; sb: Superblock } | { ok: false; reason: string; code: string };

function readSlot(metadata: Uint8Array, slot: number): SlotResult {
  const base = slot === 0 ? SLOT_A_OFFSET : SLOT_B_OFFSET;
  const view = new DataView(metadata.buffer, metadata.byteOffset + base, SLOT_SIZE);
  let magic = '';
  for (let i = 0; i < 8; i++) magic += String.fromCharCode(view.getUint8(SB.magic + i));
  if (magic !== FORMAT_MAGIC) return { ok: false, code: 'ENOTFS', reason: 'no guestmemfs superblock (bad magic)' };
  const stored = view.getUint32(SB.crc, true);
  const actual = crc32(new Uint8Array(view.buffer, view.byteOffset, SLOT_CHECKED_BYTES));
  if (stored !== actual) {
    return { ok: false, code: 'EUCLEAN', reason: `superblock checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})` };
  }
  const major = view.getUint16(SB.major, true);
  const minor = view.getUint16(SB.minor, true);
  const num = (offset: number) => Number(view.getBigUint64(offset, true));
  const geometry: Geometry = {
    poolSize: num(SB.poolSize),
    pageSize: num(SB.pageSize),
    blockSize: num(SB.blockSize),
    blockCount: view.getUint32(SB.blockCount, true),
    metadataBlocks: view.getUint32(SB.metadataBlocks, true),
    inodeCount: view.getUint32(SB.inodeCount, true),
    extentPageCount: view.getUint32(SB.extentPageCount, true),
    bitmapOffset: num(SB.bitmapOffset),
    bitmapLength: num(SB.bitmapLength),
    dirtyOffset: num(SB.dirtyOffset),
    inodeOffset: num(SB.inodeOffset),
    extentOffset: num(SB.extentOffset),
    handoverOffset: num(SB.handoverOffset),
    handoverLength: num(SB.handoverLength),
    metadataBytes: 0,
  };
  geometry.metadataBytes = geometry.metadataBlocks * geometry.blockSize;
  return {
    ok: true,
    sb: {
      major,
      minor,
      compat: view.getUint32(SB.compat, true),
      incompat: view.getUint32(SB.incompat, true),
      roCompat: view.getUint32(SB.roCompat, true),
      uuid: readUuid(view, SB.uuid),
      createdNs: view.getBigUint64(SB.createdNs, true),
      sequence: view.getBigUint64(SB.sequence, true),
      generation: view.getBigUint64(SB.generation, true),
      state: view.getUint32(SB.state, true),
      ownerPid: view.getUint32(SB.ownerPid, true),
      ownerStartTime: view.getBigUint64(SB.ownerStartTime, true),
      mountCount: view.getBigUint64(SB.mountCount, true),
      handoverBytes: view.getUint32(SB.handoverBytes, true),
      handoverCrc: view.getUint32(SB.handoverCrc, true),
      handoverGeneration: view.getBigUint64(SB.handoverGeneration, true),
      geometry,
      slot,
    },
  };
}

/** True when the first slot carries the guestmemfs magic (a formatted pool, whatever its state). */
export function hasMagic(header: Uint8Array): boolean {
  let magic = '';
  for (let i = 0; i < 8; i++) magic += String.fromCharCode(header[i]!);
  let magicB = '';
  for (let i = 0; i < 8; i++) magicB += String.fromCharCode(header[SLOT_B_OFFSET + i]!);
  return magic === FORMAT_MAGIC || magicB === FORMAT_MAGIC;
}

/**
 * Reads the newest valid superblock copy and checks that this code understands it and that it describes this pool.
 * Refuses (never reformats) anything else, naming the check that failed.
 */
export function readSuperblock(header: Uint8Array, pool: { size: number; pageSize: number; label: string }): Superblock {
  const slots = [readSlot(header, 0), readSlot(header, 1)];
  const valid = slots.filter((slot): slot is { ok: true; sb: Superblock } => slot.ok).map((slot) => slot.sb);
  const fields = { syscall: 'mount', path: pool.label };
  if (valid.length === 0) {
    const first = slots[0] as { reason: string; code: string };
    const second = slots[1] as { reason: string; code: string };
    if (first.code === 'ENOTFS' && second.code === 'ENOTFS') {
      throw new GuestmemfsError('EINVAL', `${pool.label} holds no guestmemfs filesystem: format it first with mkfs`, fields);
    }
    throw new GuestmemfsError('EUCLEAN', `both superblock copies are damaged (A: ${first.reason}; B: ${second.reason}); the pool was left untouched`, fields);
  }
  const sb = valid.reduce((newest, candidate) => (candidate.sequence > newest.sequence ? candidate : newest));
  if (sb.major !== FORMAT_MAJOR) {
    throw new GuestmemfsError(
      'EINVAL',
      `format version ${sb.major}.${sb.minor} is not supported by this guestmemfs (it reads ${FORMAT_MAJOR}.x): use a matching guestmemfs release; the pool was left untouched`,
      fields,
    );
  }
  const unknownIncompat = sb.incompat & ~KNOWN_INCOMPAT;
  if (unknownIncompat !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `pool uses incompatible features 0x${unknownIncompat.toString(16)} this guestmemfs does not know: use a newer release; the pool was left untouched`,
      fields,
    );
  }
  const unknownRoCompat = sb.roCompat & ~KNOWN_RO_COMPAT;
  if (unknownRoCompat !== 0) {
    throw new GuestmemfsError(
      'EROFS',
      `pool uses read-only-compatible features 0x${unknownRoCompat.toString(16)} this guestmemfs does not know: it cannot be mounted for writing by this release`,
      fields,
    );
  }
  checkGeometry(sb.geometry, pool, fields);
  return sb;
}

function checkGeometry(g: Geometry, pool: { size: number; pageSize: number; label: string }, fields: { syscall: string; path: string }): void {
  const fail = (what: string) => {
    throw new GuestmemfsError('EUCLEAN', `superblock geometry does not fit this pool: ${what}; the pool was left untouched`, fields);
  };
  if (g.poolSize !== pool.size) fail(`it describes ${g.poolSize} bytes, the pool has ${pool.size}`);
  if (g.pageSize !== pool.pageSize) fail(`it describes ${formatSize(g.pageSize)} pages, the pool has ${formatSize(pool.pageSize)}`);
  let expected: Geometry;
  try {
    expected = computeGeometry(g.poolSize, g.pageSize, g.blockSize, g.inodeCount);
  } catch (error) {
    return fail((error as Error).message);
  }
  for (const key of Object.keys(expected) as Array<keyof Geometry>) {
    if (expected[key] !== g[key]) fail(`${key} is ${g[key]}, expected ${expected[key]}`);
  }
}

/** Hints block: derived free-list heads and counters (rebuilt by the checker after a crash). */
export const HINTS = {
  freeInodeHead: 0,
  freeInodes: 4,
  freePageHead: 8,
  freePages: 12,
  freeBlocks: 16,
  dirtyBlocks: 20,
} as const;

/** Intent record: rename's redo log. */
export const INTENT = {
  magic: 0,
  op: 4,
  srcIno: 8,
  dstParent: 12,
  victimIno: 16,
  nameLength: 20,
  crc: 24,
  name: 32,
} as const;
export const INTENT_ACTIVE = 0x544e5449; // "ITNT"
export const INTENT_OP_RENAME = 1;

/** CRC32 over the intent's fields (op..nameLength) and its name bytes. */
export function intentChecksum(intent: Uint8Array, nameLength: number): number {
  const fields = crc32(intent.subarray(INTENT.op, INTENT.crc));
  return zlib.crc32(intent.subarray(INTENT.name, INTENT.name + nameLength), fields) >>> 0;
}

// On-pool format: where the superblock, intent record, hints, bitmaps, inode table, extent pages and handover area live.
//
// Everything is little-endian. The metadata region is the first `metadataBlocks` blocks of the pool:
//
//   offset 0        superblock slot A (4 KiB)  \ two copies, each with its own CRC32 and sequence number: a writer
//   offset 4096     superblock slot B (4 KiB)  / updates the older slot, so a kill mid-write leaves the other intact
//   offset 8192     intent record (4 KiB)      rename's redo record (intent.ts)
//   offset 12288    hints (4 KiB)              free-list heads and counters: derived, rebuilt by the checker
//   bitmapOffset    allocated bitmap           one bit per block; derived from the extents of live inodes
//   dirtyOffset     dirty bitmap               one bit per block: freed but not yet zeroed (primary: not derivable)
//   inodeOffset     inode table                inodeCount x 512 bytes; inode 0 is never used, inode 1 is the root
//   extentOffset    extent pages               extentPageCount x 512 bytes; page 0 is never used
//   handoverOffset  handover area              the KHO-style blob (issue: handover)
import { LARGE_PAGE_SIZE } from '../pool/pool-checks';
import type { randomUUID } from 'node:crypto';
import { crc32 } from '../checksum';
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';
import { readBadBlockList, writeBadBlockList } from './bad-block-list';
import { computeGeometry, EXTENT_PAGE_SIZE, type Geometry, HEADER_RECORD_BYTES, INODE_SIZE } from './geometry';
import { type QuotaLimit, readQuotaTable, writeQuotaTable } from './quota-table';

export const FORMAT_MAGIC = 'GMFSPOOL';
export const FORMAT_MAJOR = 1;
export const FORMAT_MINOR = 0;
/** Feature masks: a mount refuses any incompatible bit it does not know; read-only-compatible bits force read-only. */
/**
 * The pool's pages were allocated on one NUMA node, which `numaNode` names. Compatible: a release that does not know
 * it reads and writes the pool as before; only the checker's placement check and the handover's node are lost to it.
 */
export const COMPAT_NUMA_NODE = 1;
export const KNOWN_COMPAT = COMPAT_NUMA_NODE;
/**
 * The pool may be resized: the superblock's block-count field holds its capacity (what the metadata is sized for) and
 * the blocks it spans now follow from its size. A release that does not know the flag would take the capacity for
 * blocks that exist, so it must not mount the pool at all.
 */
export const INCOMPAT_RESIZABLE = 1;
/**
 * A hybrid pool: the blocks from `largeFromBlock` on are in a second file, of 1 GiB pages (its record is in the intent
 * page's second half, large-region.ts), and are allocated only as whole, GiB-aligned groups. A release that does not
 * know the flag would map them from the first file, so it must not mount the pool at all.
 */
export const INCOMPAT_HYBRID = 2;
export const KNOWN_INCOMPAT = INCOMPAT_RESIZABLE | INCOMPAT_HYBRID;
/**
 * Set once a contiguous file exists: a release that does not know the flag could grow such a file into a second
 * extent, so it may only mount the pool read-only.
 */
export const RO_COMPAT_CONTIGUOUS = 1;
/** Set once a block limit exists (as ext4's RO_COMPAT_QUOTA): a release that ignores limits may only read the pool. */
export const RO_COMPAT_QUOTA = 2;
/**
 * Set once a block is quarantined (the userspace analogue of memory failure handling): a release that does not know
 * the list would hand the block out again, so it may only mount the pool read-only.
 */
export const RO_COMPAT_BADBLOCKS = 4;
export const KNOWN_RO_COMPAT = RO_COMPAT_CONTIGUOUS | RO_COMPAT_QUOTA | RO_COMPAT_BADBLOCKS;

export {
  computeGeometry,
  defaultInodeCount,
  EXTENT_PAGE_SIZE,
  extentPagesFor,
  EXTENTS_PER_PAGE,
  FIXED_HEADER_BYTES,
  type Geometry,
  HEADER_RECORD_BYTES,
  INLINE_EXTENTS,
  INODE_SIZE,
  REGION_ALIGNMENT,
} from './geometry';
export const HEADER_RECORD_WORDS = HEADER_RECORD_BYTES / 4;
export const SLOT_SIZE = HEADER_RECORD_BYTES;
export const SLOT_A_OFFSET = 0;
export const SLOT_B_OFFSET = SLOT_SIZE;
export const INTENT_OFFSET = 2 * HEADER_RECORD_BYTES;
export const HINTS_OFFSET = 3 * HEADER_RECORD_BYTES;
/** Bytes of a superblock slot covered by its CRC32 (the CRC sits right after them). */
export const SLOT_CHECKED_BYTES = 508;
export const ROOT_INO = 1;

export enum PoolState {
  Clean = 0,
  Mounted = 1,
  Serialised = 2,
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
  /** Block limits per uid and per directory (the quota table, valid when roCompat has RO_COMPAT_QUOTA). */
  quotas: readonly QuotaLimit[];
  /** Quarantined blocks, ascending: never allocated again (valid when roCompat has RO_COMPAT_BADBLOCKS). */
  badBlocks: readonly number[];
}

export interface Superblock extends SuperblockState {
  major: number;
  minor: number;
  compat: number;
  incompat: number;
  roCompat: number;
  uuid: string;
  /** The NUMA node every page of the pool was allocated on (valid when compat has COMPAT_NUMA_NODE). */
  numaNode: number;
  /** A hybrid pool's first block of 1 GiB pages (valid when incompat has INCOMPAT_HYBRID; 0 otherwise). */
  largeFromBlock: number;
  createdNs: bigint;
  geometry: Geometry;
  /** Which slot (0 = A, 1 = B) this copy came from. */
  slot: number;
}

export function newUuid(): string {
  // Loaded here, not at the top: node:crypto costs 3-5 ms to load, inside an exec-mode update's blackout, and only
  // mkfs needs it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:crypto') as { randomUUID: typeof randomUUID }).randomUUID();
}

// ------------------------------------------------------------------ superblock slots

/**
 * How a field is stored: `u16`/`u32` as numbers; `u64` a number stored as 64 bits (sizes and offsets, all below
 * 2^53); `bigint` a 64-bit counter or time; `uuid` 16 raw bytes; `magic` the 8-byte format magic. A field with
 * `fixed` holds a constant of this format version, written by every writer and checked by every reader.
 */
type FieldType = 'u16' | 'u32' | 'u64' | 'bigint' | 'uuid' | 'magic';

interface FieldSpec {
  name: string;
  offset: number;
  type: FieldType;
  /** Where the value lives in a Superblock: on it, or in its geometry. */
  in?: 'geometry';
  fixed?: number;
}

/** The superblock slot, field by field: encode, decode and the fixed-value checks are all driven by this list. */
const SUPERBLOCK_FIELDS: readonly FieldSpec[] = [
  { name: 'magic', offset: 0, type: 'magic' },
  { name: 'major', offset: 8, type: 'u16' },
  { name: 'minor', offset: 10, type: 'u16' },
  { name: 'checkedBytes', offset: 12, type: 'u32', fixed: SLOT_CHECKED_BYTES },
  { name: 'compat', offset: 16, type: 'u32' },
  { name: 'incompat', offset: 20, type: 'u32' },
  { name: 'roCompat', offset: 24, type: 'u32' },
  { name: 'uuid', offset: 32, type: 'uuid' },
  { name: 'poolSize', offset: 48, type: 'u64', in: 'geometry' },
  { name: 'pageSize', offset: 56, type: 'u64', in: 'geometry' },
  { name: 'blockSize', offset: 64, type: 'u64', in: 'geometry' },
  // Named blockCount in pools without INCOMPAT_RESIZABLE, where the two are equal.
  { name: 'maxBlockCount', offset: 72, type: 'u32', in: 'geometry' },
  { name: 'metadataBlocks', offset: 76, type: 'u32', in: 'geometry' },
  { name: 'inodeCount', offset: 80, type: 'u32', in: 'geometry' },
  { name: 'inodeSize', offset: 84, type: 'u32', fixed: INODE_SIZE },
  { name: 'extentPageCount', offset: 88, type: 'u32', in: 'geometry' },
  { name: 'extentPageSize', offset: 92, type: 'u32', fixed: EXTENT_PAGE_SIZE },
  { name: 'bitmapOffset', offset: 96, type: 'u64', in: 'geometry' },
  { name: 'bitmapLength', offset: 104, type: 'u64', in: 'geometry' },
  { name: 'dirtyOffset', offset: 112, type: 'u64', in: 'geometry' },
  { name: 'inodeOffset', offset: 120, type: 'u64', in: 'geometry' },
  { name: 'extentOffset', offset: 128, type: 'u64', in: 'geometry' },
  { name: 'handoverOffset', offset: 136, type: 'u64', in: 'geometry' },
  { name: 'handoverLength', offset: 144, type: 'u64', in: 'geometry' },
  { name: 'createdNs', offset: 152, type: 'bigint' },
  { name: 'sequence', offset: 160, type: 'bigint' },
  { name: 'generation', offset: 168, type: 'bigint' },
  { name: 'state', offset: 176, type: 'u32' },
  { name: 'ownerPid', offset: 180, type: 'u32' },
  { name: 'ownerStartTime', offset: 184, type: 'bigint' },
  { name: 'mountCount', offset: 192, type: 'bigint' },
  { name: 'handoverBytes', offset: 200, type: 'u32' },
  { name: 'handoverCrc', offset: 204, type: 'u32' },
  { name: 'handoverGeneration', offset: 208, type: 'bigint' },
  { name: 'numaNode', offset: 216, type: 'u32' },
  { name: 'largeFromBlock', offset: 220, type: 'u32' },
];
/** The slot's own CRC32, over its first SLOT_CHECKED_BYTES bytes. */
const SLOT_CRC_OFFSET = SLOT_CHECKED_BYTES;
const MAGIC_BYTES = 8;

type FieldValue = number | bigint | string;

function writeField(view: DataView, field: FieldSpec, value: FieldValue): void {
  const at = field.offset;
  switch (field.type) {
    case 'u16':
      return view.setUint16(at, value as number, true);
    case 'u32':
      return view.setUint32(at, value as number, true);
    case 'u64':
      return view.setBigUint64(at, BigInt(value), true);
    case 'bigint':
      return view.setBigUint64(at, value as bigint, true);
    case 'uuid': {
      const hex = (value as string).replace(/-/g, '');
      for (let i = 0; i < 16; i++) view.setUint8(at + i, Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16));
      return;
    }
    case 'magic':
      for (let i = 0; i < MAGIC_BYTES; i++) view.setUint8(at + i, FORMAT_MAGIC.charCodeAt(i));
  }
}

function readField(view: DataView, field: FieldSpec): FieldValue {
  const at = field.offset;
  switch (field.type) {
    case 'u16':
      return view.getUint16(at, true);
    case 'u32':
      return view.getUint32(at, true);
    case 'u64':
      return Number(view.getBigUint64(at, true));
    case 'bigint':
      return view.getBigUint64(at, true);
    case 'uuid': {
      let hex = '';
      for (let i = 0; i < 16; i++)
        hex += view
          .getUint8(at + i)
          .toString(16)
          .padStart(2, '0');
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    }
    case 'magic':
      return magicAt(new Uint8Array(view.buffer, view.byteOffset, MAGIC_BYTES), 0);
  }
}

function magicAt(bytes: Uint8Array, offset: number): string {
  let magic = '';
  for (let i = 0; i < MAGIC_BYTES; i++) magic += String.fromCharCode(bytes[offset + i]!);
  return magic;
}

function slotView(metadata: Uint8Array, slot: number): DataView {
  return new DataView(metadata.buffer, metadata.byteOffset + (slot === 0 ? SLOT_A_OFFSET : SLOT_B_OFFSET), SLOT_SIZE);
}

/** The CRC a slot carries and the one its bytes have: a slot is whole only when they agree. */
export function slotChecksums(metadata: Uint8Array, slot: number): { stored: number; actual: number } {
  const view = slotView(metadata, slot);
  return { stored: view.getUint32(SLOT_CRC_OFFSET, true), actual: crc32(new Uint8Array(view.buffer, view.byteOffset, SLOT_CHECKED_BYTES)) };
}

/** Writes a complete superblock copy into one slot, CRC last, so a reader never accepts a half-written slot. */
export function writeSuperblockSlot(metadata: Uint8Array, slot: number, sb: Omit<Superblock, 'slot'>): void {
  const view = slotView(metadata, slot);
  // Invalidate the slot first: a kill during the rewrite must not leave the old CRC over mixed fields.
  view.setUint32(SLOT_CRC_OFFSET, 0, true);
  const source = sb as unknown as Record<string, FieldValue>;
  const geometry = sb.geometry as unknown as Record<string, FieldValue>;
  for (const field of SUPERBLOCK_FIELDS) {
    writeField(view, field, field.fixed ?? (field.in === 'geometry' ? geometry : source)[field.name]!);
  }
  writeQuotaTable(view, sb.quotas);
  writeBadBlockList(view, sb.badBlocks);
  view.setUint32(SLOT_CRC_OFFSET, slotChecksums(metadata, slot).actual, true);
}

type SlotResult = { ok: true; sb: Superblock } | { ok: false; reason: string; code: string };

function readSlot(metadata: Uint8Array, slot: number): SlotResult {
  const view = slotView(metadata, slot);
  if (magicAt(metadata, slot === 0 ? SLOT_A_OFFSET : SLOT_B_OFFSET) !== FORMAT_MAGIC) {
    return { ok: false, code: 'ENOTFS', reason: 'no guestmemfs superblock (bad magic)' };
  }
  const { stored, actual } = slotChecksums(metadata, slot);
  if (stored !== actual) {
    return {
      ok: false,
      code: 'EUCLEAN',
      reason: `superblock checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    };
  }
  const sb: Record<string, FieldValue> = {};
  const geometry: Record<string, FieldValue> = {};
  for (const field of SUPERBLOCK_FIELDS) {
    const value = readField(view, field);
    if (field.fixed !== undefined && value !== field.fixed) {
      return { ok: false, code: 'EUCLEAN', reason: `superblock field ${field.name} is ${value}, this format version has ${field.fixed}` };
    }
    if (field.type !== 'magic' && field.fixed === undefined) (field.in === 'geometry' ? geometry : sb)[field.name] = value;
  }
  geometry.metadataBytes = (geometry.metadataBlocks as number) * (geometry.blockSize as number);
  // Not an integer for a damaged slot: checkGeometry refuses that.
  geometry.blockCount = (geometry.poolSize as number) / (geometry.blockSize as number);
  // Pools from before the table have zeros there, without a checksum: only a pool that says it has limits is read.
  let quotas: QuotaLimit[] = [];
  if ((sb.roCompat as number) & RO_COMPAT_QUOTA) {
    const table = readQuotaTable(view);
    if (!table.ok) return { ok: false, code: 'EUCLEAN', reason: table.reason };
    quotas = table.limits;
  }
  let badBlocks: number[] = [];
  if ((sb.roCompat as number) & RO_COMPAT_BADBLOCKS) {
    const list = readBadBlockList(view, geometry.metadataBlocks as number, geometry.blockCount);
    if (!list.ok) return { ok: false, code: 'EUCLEAN', reason: list.reason };
    badBlocks = list.blocks;
  }
  const fields = sb as unknown as Omit<Superblock, 'geometry' | 'slot' | 'quotas' | 'badBlocks'>;
  return { ok: true, sb: { ...fields, quotas, badBlocks, geometry: geometry as unknown as Geometry, slot } };
}

/** True when either slot carries the guestmemfs magic (a formatted pool, whatever its state). */
export function hasMagic(header: Uint8Array): boolean {
  return magicAt(header, SLOT_A_OFFSET) === FORMAT_MAGIC || magicAt(header, SLOT_B_OFFSET) === FORMAT_MAGIC;
}

/**
 * Reads the newest valid superblock copy and checks that this code understands it and that it describes this pool.
 * Refuses (never reformats) anything else, naming the check that failed.
 */
export function readSuperblock(header: Uint8Array, pool: PoolShape): Superblock {
  const slots = [readSlot(header, 0), readSlot(header, 1)];
  const valid = slots.filter((slot): slot is { ok: true; sb: Superblock } => slot.ok).map((slot) => slot.sb);
  const fields = { syscall: 'mount', path: pool.label };
  if (valid.length === 0) {
    const first = slots[0] as { reason: string; code: string };
    const second = slots[1] as { reason: string; code: string };
    if (first.code === 'ENOTFS' && second.code === 'ENOTFS') {
      throw new GuestmemfsError('EINVAL', `${pool.label} holds no guestmemfs filesystem: format it first with mkfs`, fields);
    }
    throw new GuestmemfsError(
      'EUCLEAN',
      `both superblock copies are damaged (A: ${first.reason}; B: ${second.reason}); the pool was left untouched`,
      fields,
    );
  }
  const sb = valid.reduce((newest, candidate) => (candidate.sequence > newest.sequence ? candidate : newest));
  if (sb.major !== FORMAT_MAJOR) {
    throw new GuestmemfsError(
      'EINVAL',
      `format version ${sb.major}.${sb.minor} is not supported by this guestmemfs (it reads ${FORMAT_MAJOR}.x): ` +
        `use a matching guestmemfs release; the pool was left untouched`,
      fields,
    );
  }
  const unknownIncompat = sb.incompat & ~KNOWN_INCOMPAT;
  if (unknownIncompat !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `pool uses incompatible features 0x${unknownIncompat.toString(16)} this guestmemfs does not know: use a newer release; ` +
        `the pool was left untouched`,
      fields,
    );
  }
  const unknownRoCompat = sb.roCompat & ~KNOWN_RO_COMPAT;
  if (unknownRoCompat !== 0) {
    throw new GuestmemfsError(
      'EROFS',
      `pool uses read-only-compatible features 0x${unknownRoCompat.toString(16)} this guestmemfs does not know: ` +
        `it cannot be mounted for writing by this release`,
      fields,
    );
  }
  checkGeometry(sb, pool, fields);
  return sb;
}

/** The NUMA node a bound pool's pages are all on (undefined for a pool bound to none). */
export function numaNodeOf(sb: Pick<Superblock, 'compat' | 'numaNode'>): number | undefined {
  return sb.compat & COMPAT_NUMA_NODE ? sb.numaNode : undefined;
}

/** A hybrid pool's first block of 1 GiB pages; undefined for a pool of one page size. */
export function largeFromBlockOf(sb: Pick<Superblock, 'incompat' | 'largeFromBlock'>): number | undefined {
  return sb.incompat & INCOMPAT_HYBRID ? sb.largeFromBlock : undefined;
}

/** True for a pool formatted for growth, or resized since: its capacity and its size may differ. */
export function isResizable(sb: Pick<Superblock, 'incompat'>): boolean {
  return (sb.incompat & INCOMPAT_RESIZABLE) !== 0;
}

/**
 * The pool file is larger than the filesystem only when a resize was interrupted (a grow before its commit, a shrink
 * after it): the excess is outside the filesystem, and the next writable mount gives it back.
 */
export function excessBytes(sb: Superblock, pool: { size: number }): number {
  return pool.size - sb.geometry.poolSize;
}

/** What the superblock is checked against: the pool as it is open here. */
export interface PoolShape {
  size: number;
  pageSize: number;
  label: string;
  /** A hybrid pool's 1 GiB-page file: where its bytes start in pool offsets. */
  large?: { from: number } | undefined;
}

function checkGeometry(sb: Superblock, pool: PoolShape, fields: { syscall: string; path: string }): void {
  const g = sb.geometry;
  const fail = (what: string) => {
    throw new GuestmemfsError('EUCLEAN', `superblock geometry does not fit this pool: ${what}; the pool was left untouched`, fields);
  };
  if (isResizable(sb)) {
    if (pool.size < g.poolSize) fail(`it describes ${g.poolSize} bytes, the pool file has only ${pool.size}`);
    if (pool.size > g.maxBlockCount * g.blockSize)
      fail(`the pool file has ${pool.size} bytes, more than the ${g.maxBlockCount * g.blockSize} it was formatted for`);
  } else {
    if (g.poolSize !== pool.size) fail(`it describes ${g.poolSize} bytes, the pool has ${pool.size}`);
    if (g.maxBlockCount !== g.blockCount) fail(`it records ${g.maxBlockCount} blocks for a ${g.poolSize}-byte pool`);
  }
  const largeFrom = largeFromBlockOf(sb);
  if (largeFrom === undefined && pool.large) fail('the pool has a 1 GiB-page file, the superblock describes none');
  if (largeFrom !== undefined) {
    if (isResizable(sb)) fail('a hybrid pool cannot be resizable');
    if (!pool.large) fail(`it describes 1 GiB pages from block ${largeFrom} on, but the pool has no 1 GiB-page file`);
    else if (pool.large.from !== largeFrom * g.blockSize)
      fail(`its 1 GiB pages start at block ${largeFrom}, the pool's at byte ${pool.large.from}`);
    if ((largeFrom * g.blockSize) % LARGE_PAGE_SIZE !== 0 || largeFrom <= g.metadataBlocks)
      fail(`block ${largeFrom} cannot start 1 GiB pages`);
  }
  if (g.pageSize !== pool.pageSize) fail(`it describes ${formatSize(g.pageSize)} pages, the pool has ${formatSize(pool.pageSize)}`);
  let expected: Geometry;
  try {
    expected = computeGeometry(g.poolSize, g.pageSize, g.blockSize, g.inodeCount, g.maxBlockCount * g.blockSize);
  } catch (error) {
    return fail((error as Error).message);
  }
  for (const key of Object.keys(expected) as Array<keyof Geometry>) {
    if (expected[key] !== g[key]) fail(`${key} is ${g[key]}, expected ${expected[key]}`);
  }
}

// ------------------------------------------------------------------ hints and intent records

/** A record of 32-bit words in the pool, with one accessor per named word: each read and write is one aligned access. */
export type WordRecord<K extends string> = { [P in K]: number } & { readonly words: Uint32Array };

function wordRecord<K extends string>(layout: Readonly<Record<K, number>>): new (words: Uint32Array) => WordRecord<K> {
  class Record {
    constructor(readonly words: Uint32Array) {}
  }
  for (const [name, word] of Object.entries<number>(layout)) {
    Object.defineProperty(Record.prototype, name, {
      get(this: Record) {
        return this.words[word]!;
      },
      set(this: Record, value: number) {
        this.words[word] = value;
      },
    });
  }
  return Record as unknown as new (words: Uint32Array) => WordRecord<K>;
}

/** Hints: derived free-list heads and counters (rebuilt by the checker after a crash), by word. */
const HINT_WORDS = { freeInodeHead: 0, freeInodes: 1, freePageHead: 2, freePages: 3, freeBlocks: 4, dirtyBlocks: 5 } as const;
export type Hints = WordRecord<keyof typeof HINT_WORDS>;
export const Hints = wordRecord(HINT_WORDS);

/** Intent record: rename's redo log, by word; the new name's bytes follow at INTENT_NAME_OFFSET. */
const INTENT_WORDS = { magic: 0, op: 1, srcIno: 2, dstParent: 3, victimIno: 4, nameLength: 5, crc: 6 } as const;
export type Intent = WordRecord<keyof typeof INTENT_WORDS>;
export const Intent = wordRecord(INTENT_WORDS);
/** Byte offsets inside the intent record: the checked fields run from `op` up to `crc`, the name starts at 32. */
export const INTENT_CHECKED_FROM = INTENT_WORDS.op * 4;
export const INTENT_CHECKED_TO = INTENT_WORDS.crc * 4;
export const INTENT_NAME_OFFSET = 32;
export const INTENT_ACTIVE = 0x544e5449; // "ITNT"
export const INTENT_OP_RENAME = 1;

/** The hints and intent records of a fixed header (whose first byte is the pool's), aliasing it. */
export function headerRecords(header: Uint8Array): { hints: Hints; intent: Intent; intentBytes: Uint8Array } {
  const words = (offset: number) => new Uint32Array(header.buffer, header.byteOffset + offset, HEADER_RECORD_WORDS);
  return {
    hints: new Hints(words(HINTS_OFFSET)),
    intent: new Intent(words(INTENT_OFFSET)),
    intentBytes: header.subarray(INTENT_OFFSET, INTENT_OFFSET + HEADER_RECORD_BYTES),
  };
}

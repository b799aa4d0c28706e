// The handover blob: what the filesystem tells its successor, as an FDT mirroring the guestmemfs RFC's KHO tree.
//
// Every property, its byte order and its meaning (this comment is the reference). FDT cells are big-endian;
// "u64" is two big-endian 32-bit cells; every offset is a byte offset into the pool; "mem" is a list of
// (offset u64, length u64) pairs.
//
//   memory reservation map        one entry: (0, metadata bytes) - the pool's metadata region
//   /guestmemfs
//     compatible                  string "guestmemfs-v1"
//     handover-version            u32: 2 (a reader takes 1 and 2; a writer writes 2, or 1 for a predecessor's release)
//     format-version              u32 major, u32 minor of the pool format the metadata is in (1, 0)
//     generation                  u64: superblock generation the blob was made at; restore requires the superblock's
//     fs_mem                      the pool itself
//       uuid                      string: the pool UUID (also in the superblock; restore requires them equal)
//       backend                   string: hugetlbfs | memfd-hugetlb | shm-4k | memfd-4k
//       path                      string (path backends): where the pool file is
//       inherited-fd              u32 (memfd backends): the fd number kept open across execve
//       fd-env                    string (memfd backends): the environment variable that carries that fd number
//       mem                       (0, pool size)
//       page-size, block-size     u64 each
//       block-count               u32: the blocks the filesystem spans now
//       max-block-count           u32, only for a pool whose capacity is larger: the blocks its metadata is sized for
//                                 (what the bitmaps' length follows from; restore requires the superblock's)
//       numa-node                 u32, only for a pool bound to a NUMA node: the node all its pages are on
//                                 (readers that do not know it may ignore it; restore requires the superblock's)
//     superblock                  where the metadata lives
//       mem                       6 ranges: header, allocated bitmap, dirty bitmap, inode table, extent pages, handover area
//       mem-names                 stringlist naming those 6 ranges in order
//       inode-count, inode-size, extent-page-count, extent-page-size, metadata-blocks   u32 each
//       bad-blocks                u32 list, only once a block is quarantined: the quarantined blocks, ascending
//                                 (restore requires the superblock's list)
//       crc32                     u32: CRC-32 (IEEE) over, in order: intent+hints [8192, 16384), both bitmaps,
//                                 (version 1 only) the 512-byte record of every live inode in `inodes/live` order, and
//                                 every extent page in `mappings_blocks` order. Free inodes and pages are not covered:
//                                 they are rewritten before reuse, and the superblock copies carry their own CRCs.
//     inodes
//       live                      u32 list: every inode in use, root (1) included, ascending
//       live-hash                 u32 A, B, C, D (version 2): the record hash (lib/checksum.ts) of the live inodes. The
//                                 live list is cut into groups of the inodes whose numbers share ino >> 11; each
//                                 group's four lanes start at the seeds XOR the group number and take, for each of its
//                                 inodes in order, words [0, 36) of its record (its fields, bytes [0, 136), and two
//                                 words of padding to a whole quad), then words [64, 64 + 4 * ceil(n / 16)) where
//                                 n = min(name length, 255), the name's bytes; live-hash is the groups' lanes summed,
//                                 lane by lane, mod 2^32. What a record does not use (bytes [144, 256), the name's tail)
//                                 is not covered: restore reads only the bytes it uses, once, in the pass that also
//                                 indexes the names. Groups let a serialise rehash only the groups written since the
//                                 last handover.
//     mappings_blocks
//       mem                       one (offset, 512) range per extent page in use
//     mappings_to_inode
//       num_inodes                u32: number of live inodes
//       inodes                    u32 list: for each mappings_blocks range, the inode whose extents it holds
//
// This module is the format layer: it knows the blob, not the pool. It builds blobs; blob-decode.ts reads them and
// blob-verify.ts checks one against a pool's metadata. What it says about the metadata (where each region
// is, record sizes, the format version) the filesystem gives it as a BlobLayout.
import { LARGE_PAGE_SIZE } from '../pool/pool-checks';
import { crc32, type RecordHash } from '../checksum';
import { FdtWriter } from './fdt';

/** Where the live-metadata checksum reads its bytes from. */
export interface LiveMetadata {
  /** The intent record and hints, [8192, 16384) of the fixed header (the superblock copies carry their own CRCs). */
  checkedHeader: Uint8Array;
  /** The allocated and dirty bitmaps. */
  bitmaps: [Uint8Array, Uint8Array];
  /** The records of `count` consecutive inodes from `first`, in order, in as many pieces as they are stored in. */
  inodeRecords: (first: number, count: number) => Uint8Array[];
  /**
   * The record hash of the inodes listed (version 2's `inodes/live-hash`). `serialising`: the caller makes the blob,
   * and a group of records not written since its hash was last computed need not be read again (the successor's
   * restore reads them all); a verification reads every record.
   */
  recordHash: (liveInodes: ArrayLike<number>, serialising: boolean) => RecordHash;
  /** The same for extent pages. */
  pageRecords: (first: number, count: number) => Uint8Array[];
}

/** The metadata layout a blob describes, as the pool format defines it. */
export interface BlobLayout {
  formatVersion: readonly [major: number, minor: number];
  blockSize: number;
  blockCount: number;
  /** The most blocks the pool may grow to (its bitmaps and extent pages are sized for this many). */
  maxBlockCount: number;
  inodeCount: number;
  inodeSize: number;
  extentPageCount: number;
  extentPageSize: number;
  extentOffset: number;
  metadataBlocks: number;
  metadataBytes: number;
  /** [offset, length] of each region named in REGION_NAMES, in that order. */
  regions: ReadonlyArray<readonly [number, number]>;
}

export const HANDOVER_COMPATIBLE = 'guestmemfs-v1';
/** The handover version written by default; a reader takes every version in HANDOVER_VERSIONS. */
export const HANDOVER_VERSION = 2;
export const HANDOVER_VERSIONS = [1, 2] as const;
export type HandoverVersion = (typeof HANDOVER_VERSIONS)[number];

/** Whether this release reads (and can write) blobs of handover version `value`. */
export function isHandoverVersion(value: unknown): value is HandoverVersion {
  return HANDOVER_VERSIONS.includes(value as HandoverVersion);
}
export const POOL_FD_ENV = 'GUESTMEMFS_POOL_FD';
export const POOL_PATH_ENV = 'GUESTMEMFS_POOL';

export const REGION_NAMES = ['header', 'allocated-bitmap', 'dirty-bitmap', 'inode-table', 'extent-pages', 'handover-area'] as const;

export interface PoolIdentity {
  backend: string;
  path: string | undefined;
  fd: number | undefined;
  size: number;
  pageSize: number;
  /** The NUMA node the pool is bound to, if any. */
  numaNode?: number;
  /** A hybrid pool's file of 1 GiB pages: the pool offsets it holds, and where a successor finds it. */
  large?: LargeIdentity;
}

export interface LargeIdentity {
  offset: number;
  size: number;
  path?: string | undefined;
  fd?: number | undefined;
}

/** Where an exec'd successor finds an inherited 1 GiB-page memfd of a hybrid pool. */
export const POOL_LARGE_FD_ENV = 'GUESTMEMFS_POOL_LARGE_FD';

export interface HandoverInput {
  /** HANDOVER_VERSION unless given: 1 for a successor of a release that reads only version 1. */
  version?: HandoverVersion;
  pool: PoolIdentity;
  layout: BlobLayout;
  uuid: string;
  generation: bigint;
  metadata: LiveMetadata;
  /** Live inodes, ascending, root included. */
  liveInodes: ArrayLike<number>;
  /** Extent pages in use and their owners, in the same order. */
  pages: readonly number[];
  /** Quarantined blocks, ascending. */
  badBlocks: readonly number[];
  pageOwners: readonly number[];
}

/** The decoded blob (also what `inspect` prints). */
export interface HandoverDescription {
  compatible: string;
  handoverVersion: number;
  formatVersion: [number, number];
  generation: string;
  uuid: string;
  fsMem: {
    backend: string;
    path?: string;
    inheritedFd?: number;
    fdEnv?: string;
    size: number;
    pageSize: number;
    blockSize: number;
    blockCount: number;
    maxBlockCount: number;
    numaNode?: number;
    /** A hybrid pool's 1 GiB pages (large-mem, large-page-size, and large-path or inherited-large-fd). */
    large?: LargeIdentity & { pageSize: number };
  };
  regions: Array<{ name: string; offset: number; length: number }>;
  crc32: number;
  /** Version 2's record hash of the live inodes, [A, B, C, D]. */
  liveHash?: [number, number, number, number];
  /** Quarantined blocks (empty when the blob has no bad-blocks property). */
  badBlocks: number[];
  /** A typed array: 100,000 inodes decode in 0.2 ms, where an Array took 3. */
  liveInodes: Uint32Array;
  mappingsBlocks: Array<{ offset: number; length: number; inode: number }>;
  reservations: Array<{ offset: number; length: number }>;
}

/** CRC over the live metadata, as the `superblock/crc32` property of `version` defines it. */
export function liveMetadataCrc(
  metadata: LiveMetadata,
  liveInodes: ArrayLike<number>,
  pages: ArrayLike<number>,
  version: HandoverVersion,
): number {
  let crc = crc32(metadata.checkedHeader);
  crc = crc32(metadata.bitmaps[0], crc);
  crc = crc32(metadata.bitmaps[1], crc);
  if (version === 1) crc = crcOfRecords(metadata.inodeRecords, liveInodes, crc);
  return crcOfRecords(metadata.pageRecords, pages, crc);
}

/**
 * Continues `crc` over the records `numbers` names, in that order: one call for each run of consecutive numbers. The
 * CRC is the same as record by record; the calls are far fewer (100,000 files made one after another are one run),
 * and each call costs about as much as CRC-ing 500 bytes.
 */
function crcOfRecords(records: (first: number, count: number) => Uint8Array[], numbers: ArrayLike<number>, crc: number): number {
  for (let at = 0; at < numbers.length;) {
    let end = at + 1;
    while (end < numbers.length && numbers[end] === numbers[end - 1]! + 1) end++;
    for (const piece of records(numbers[at]!, end - at)) crc = crc32(piece, crc);
    at = end;
  }
  return crc;
}

export function buildHandoverBlob(input: HandoverInput): Uint8Array {
  const g = input.layout;
  const version = input.version ?? HANDOVER_VERSION;
  const w = new FdtWriter();
  w.reserve(0n, BigInt(g.metadataBytes));
  w.beginNode('');
  w.beginNode('guestmemfs');
  w.propString('compatible', HANDOVER_COMPATIBLE);
  w.propU32('handover-version', version);
  w.propU32('format-version', ...g.formatVersion);
  w.propU64('generation', input.generation);

  w.beginNode('fs_mem');
  w.propString('uuid', input.uuid);
  w.propString('backend', input.pool.backend);
  if (input.pool.path !== undefined) w.propString('path', input.pool.path);
  if (input.pool.fd !== undefined) {
    w.propU32('inherited-fd', input.pool.fd);
    w.propString('fd-env', POOL_FD_ENV);
  }
  w.propU64('mem', 0, input.pool.size);
  w.propU64('page-size', input.pool.pageSize);
  w.propU64('block-size', g.blockSize);
  w.propU32('block-count', g.blockCount);
  if (g.maxBlockCount !== g.blockCount) w.propU32('max-block-count', g.maxBlockCount);
  if (input.pool.numaNode !== undefined) w.propU32('numa-node', input.pool.numaNode);
  const large = input.pool.large;
  if (large) {
    w.propU64('large-mem', large.offset, large.size);
    w.propU64('large-page-size', LARGE_PAGE_SIZE);
    if (large.path !== undefined) w.propString('large-path', large.path);
    if (large.fd !== undefined) {
      w.propU32('inherited-large-fd', large.fd);
      w.propString('large-fd-env', POOL_LARGE_FD_ENV);
    }
  }
  w.endNode();

  w.beginNode('superblock');
  w.propU64('mem', ...g.regions.flat());
  w.propStrings('mem-names', REGION_NAMES);
  w.propU32('inode-count', g.inodeCount);
  w.propU32('inode-size', g.inodeSize);
  w.propU32('extent-page-count', g.extentPageCount);
  w.propU32('extent-page-size', g.extentPageSize);
  w.propU32('metadata-blocks', g.metadataBlocks);
  if (input.badBlocks.length > 0) w.propU32List('bad-blocks', input.badBlocks);
  w.propU32('crc32', liveMetadataCrc(input.metadata, input.liveInodes, input.pages, version));
  w.endNode();

  w.beginNode('inodes');
  w.propU32List('live', input.liveInodes);
  if (version >= 2) w.propU32('live-hash', ...input.metadata.recordHash(input.liveInodes, true));
  w.endNode();

  w.beginNode('mappings_blocks');
  const pageMem = new Float64Array(input.pages.length * 2);
  input.pages.forEach((page, index) => {
    pageMem[index * 2] = g.extentOffset + page * g.extentPageSize;
    pageMem[index * 2 + 1] = g.extentPageSize;
  });
  w.propU64List('mem', pageMem);
  w.endNode();

  w.beginNode('mappings_to_inode');
  w.propU32('num_inodes', input.liveInodes.length);
  w.propU32List('inodes', input.pageOwners);
  w.endNode();

  w.endNode();
  w.endNode();
  return w.finish();
}

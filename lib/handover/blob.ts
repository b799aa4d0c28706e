// The handover blob: what the filesystem tells its successor, as an FDT mirroring the guestmemfs RFC's KHO tree.
//
// Every property, its byte order and its meaning (this comment is the reference). FDT cells are big-endian;
// "u64" is two big-endian 32-bit cells; every offset is a byte offset into the pool; "mem" is a list of
// (offset u64, length u64) pairs.
//
//   memory reservation map        one entry: (0, metadata bytes) - the pool's metadata region
//   /guestmemfs
//     compatible                  string "guestmemfs-v1"
//     handover-version            u32: 1
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
//       crc32                     u32: CRC-32 (IEEE) over, in order: intent+hints [8192, 16384), both bitmaps, the
//                                 512-byte record of every live inode in `inodes/live` order, and every extent page in
//                                 `mappings_blocks` order. Free inodes and pages are not covered: they are rewritten
//                                 before reuse, and the superblock copies carry their own CRCs.
//     inodes
//       live                      u32 list: every inode in use, root (1) included, ascending
//     mappings_blocks
//       mem                       one (offset, 512) range per extent page in use
//     mappings_to_inode
//       num_inodes                u32: number of live inodes
//       inodes                    u32 list: for each mappings_blocks range, the inode whose extents it holds
//
// This module is the format layer: it knows the blob, not the pool. What it says about the metadata (where each region
// is, record sizes, the format version) the filesystem gives it as a BlobLayout.
import { LARGE_PAGE_SIZE } from '../pool/pool-checks';
import { crc32 } from '../checksum';
import { GuestmemfsError } from '../errors';
import { child, FdtError, type FdtNode, FdtWriter, parseFdt } from './fdt';

/** Where the live-metadata checksum reads its bytes from. */
export interface LiveMetadata {
  /** The intent record and hints, [8192, 16384) of the fixed header (the superblock copies carry their own CRCs). */
  checkedHeader: Uint8Array;
  /** The allocated and dirty bitmaps. */
  bitmaps: [Uint8Array, Uint8Array];
  /** The records of `count` consecutive inodes from `first`, in order, in as many pieces as they are stored in. */
  inodeRecords: (first: number, count: number) => Uint8Array[];
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
export const HANDOVER_VERSION = 1;
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
  /** Quarantined blocks (empty when the blob has no bad-blocks property). */
  badBlocks: number[];
  liveInodes: number[];
  mappingsBlocks: Array<{ offset: number; length: number; inode: number }>;
  reservations: Array<{ offset: number; length: number }>;
}

/** CRC over the live metadata, as the `superblock/crc32` property defines it. */
export function liveMetadataCrc(metadata: LiveMetadata, liveInodes: ArrayLike<number>, pages: ArrayLike<number>): number {
  let crc = crc32(metadata.checkedHeader);
  crc = crc32(metadata.bitmaps[0], crc);
  crc = crc32(metadata.bitmaps[1], crc);
  crc = crcOfRecords(metadata.inodeRecords, liveInodes, crc);
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
  const w = new FdtWriter();
  w.reserve(0n, BigInt(g.metadataBytes));
  w.beginNode('');
  w.beginNode('guestmemfs');
  w.propString('compatible', HANDOVER_COMPATIBLE);
  w.propU32('handover-version', HANDOVER_VERSION);
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
  w.propU32('crc32', liveMetadataCrc(input.metadata, input.liveInodes, input.pages));
  w.endNode();

  w.beginNode('inodes');
  w.propU32List('live', input.liveInodes);
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

// ------------------------------------------------------------------ decoding

class BlobReject extends Error {
  constructor(
    readonly code: string,
    readonly check: string,
    message: string,
  ) {
    super(message);
  }
}

function prop(node: FdtNode, name: string, where: string): Uint8Array {
  const value = node.props.get(name);
  if (!value) throw new BlobReject('EUCLEAN', 'missing-property', `${where} has no "${name}" property`);
  return value;
}

/** A property's bytes as cells of `width` bytes, refused unless it holds whole cells (and `count` of them, if given). */
function cells(node: FdtNode, name: string, where: string, width: 4 | 8, count?: number): DataView {
  const value = prop(node, name, where);
  if (value.length % width !== 0 || (count !== undefined && value.length !== count * width)) {
    throw new BlobReject(
      'EUCLEAN',
      'property-size',
      `${where}/${name} is ${value.length} bytes, not ${count ?? 'a multiple of'} ${width === 4 ? '32-bit cells' : '64-bit values'}`,
    );
  }
  return new DataView(value.buffer, value.byteOffset, value.byteLength);
}

function u32s(node: FdtNode, name: string, where: string, count?: number): number[] {
  const view = cells(node, name, where, 4, count);
  const out = new Array<number>(view.byteLength / 4);
  for (let index = 0; index < out.length; index++) out[index] = view.getUint32(index * 4);
  return out;
}

/** 64-bit values as numbers: exact below 2^53, NaN above (no offset or length of a pool is that large). */
function u64s(node: FdtNode, name: string, where: string, count?: number): number[] {
  const view = cells(node, name, where, 8, count);
  const out = new Array<number>(view.byteLength / 8);
  for (let index = 0; index < out.length; index++) {
    const high = view.getUint32(index * 8);
    out[index] = high < 2 ** 21 ? high * 2 ** 32 + view.getUint32(index * 8 + 4) : Number.NaN;
  }
  return out;
}

function str(node: FdtNode, name: string, where: string): string {
  const value = prop(node, name, where);
  if (value.length === 0 || value[value.length - 1] !== 0)
    throw new BlobReject('EUCLEAN', 'property-size', `${where}/${name} is not a NUL-terminated string`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(value.subarray(0, value.length - 1));
  } catch {
    throw new BlobReject('EUCLEAN', 'property-size', `${where}/${name} is not valid UTF-8`);
  }
}

function node(parent: FdtNode, name: string): FdtNode {
  const found = child(parent, name);
  if (!found) throw new BlobReject('EUCLEAN', 'missing-node', `blob has no /guestmemfs/${name} node`);
  return found;
}

/** The generation, a 64-bit counter: exact, as a decimal string. */
function generationOf(root: FdtNode): string {
  return cells(root, 'generation', '/guestmemfs', 8, 1).getBigUint64(0).toString();
}

const toNumber = (value: bigint) => (value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : Number.NaN);

/** Decodes a blob without judging it against a pool (for inspect, and as restore's first step). */
export function decodeHandoverBlob(blob: Uint8Array): HandoverDescription {
  const parsed = parseFdt(blob, { maxNodes: 64 });
  const root = child(parsed.root, 'guestmemfs');
  if (!root) throw new BlobReject('EINVAL', 'compatible', 'blob has no /guestmemfs node: it is not a guestmemfs handover');
  const compatible = str(root, 'compatible', '/guestmemfs');
  const fsMem = node(root, 'fs_mem');
  const sb = node(root, 'superblock');
  const inodes = node(root, 'inodes');
  const mappings = node(root, 'mappings_blocks');
  const owners = node(root, 'mappings_to_inode');
  const regionValues = u64s(sb, 'mem', '/guestmemfs/superblock', REGION_NAMES.length * 2);
  const pageMem = u64s(mappings, 'mem', '/guestmemfs/mappings_blocks');
  const pageOwners = u32s(owners, 'inodes', '/guestmemfs/mappings_to_inode');
  if (pageOwners.length * 2 !== pageMem.length) {
    throw new BlobReject(
      'EUCLEAN',
      'mappings',
      `mappings_blocks lists ${pageMem.length / 2} pages but mappings_to_inode names ${pageOwners.length} owners`,
    );
  }
  const poolMem = u64s(fsMem, 'mem', '/guestmemfs/fs_mem', 2);
  const description: HandoverDescription = {
    compatible,
    handoverVersion: u32s(root, 'handover-version', '/guestmemfs', 1)[0]!,
    formatVersion: u32s(root, 'format-version', '/guestmemfs', 2) as [number, number],
    generation: generationOf(root),
    uuid: str(fsMem, 'uuid', '/guestmemfs/fs_mem'),
    fsMem: {
      backend: str(fsMem, 'backend', '/guestmemfs/fs_mem'),
      size: poolMem[1]!,
      pageSize: u64s(fsMem, 'page-size', '/guestmemfs/fs_mem', 1)[0]!,
      blockSize: u64s(fsMem, 'block-size', '/guestmemfs/fs_mem', 1)[0]!,
      blockCount: u32s(fsMem, 'block-count', '/guestmemfs/fs_mem', 1)[0]!,
      maxBlockCount: 0,
    },
    regions: REGION_NAMES.map((name, index) => ({ name, offset: regionValues[index * 2]!, length: regionValues[index * 2 + 1]! })),
    crc32: u32s(sb, 'crc32', '/guestmemfs/superblock', 1)[0]!,
    badBlocks: sb.props.has('bad-blocks') ? u32s(sb, 'bad-blocks', '/guestmemfs/superblock') : [],
    liveInodes: u32s(inodes, 'live', '/guestmemfs/inodes'),
    mappingsBlocks: pageOwners.map((inode, index) => ({ offset: pageMem[index * 2]!, length: pageMem[index * 2 + 1]!, inode })),
    reservations: parsed.reservations.map((entry) => ({ offset: toNumber(entry.address), length: toNumber(entry.size) })),
  };
  if (fsMem.props.has('path')) description.fsMem.path = str(fsMem, 'path', '/guestmemfs/fs_mem');
  if (fsMem.props.has('inherited-fd')) description.fsMem.inheritedFd = u32s(fsMem, 'inherited-fd', '/guestmemfs/fs_mem', 1)[0]!;
  if (fsMem.props.has('fd-env')) description.fsMem.fdEnv = str(fsMem, 'fd-env', '/guestmemfs/fs_mem');
  description.fsMem.maxBlockCount = fsMem.props.has('max-block-count')
    ? u32s(fsMem, 'max-block-count', '/guestmemfs/fs_mem', 1)[0]!
    : description.fsMem.blockCount;
  if (fsMem.props.has('numa-node')) description.fsMem.numaNode = u32s(fsMem, 'numa-node', '/guestmemfs/fs_mem', 1)[0]!;
  if (fsMem.props.has('large-mem')) {
    const [offset, size] = u64s(fsMem, 'large-mem', '/guestmemfs/fs_mem', 2);
    const [pageSize] = u64s(fsMem, 'large-page-size', '/guestmemfs/fs_mem', 1);
    description.fsMem.large = { offset: offset!, size: size!, pageSize: pageSize! };
    if (fsMem.props.has('large-path')) description.fsMem.large.path = str(fsMem, 'large-path', '/guestmemfs/fs_mem');
    if (fsMem.props.has('inherited-large-fd')) description.fsMem.large.fd = u32s(fsMem, 'inherited-large-fd', '/guestmemfs/fs_mem', 1)[0]!;
  }
  return description;
}

export interface RestoreExpectations {
  layout: BlobLayout;
  uuid: string;
  generation: bigint;
  pool: { size: number; pageSize: number; label: string; numaNode?: number; large?: { from: number; size: number } | undefined };
  metadata: LiveMetadata;
  /** Whether an inode number is in use (for checking the blob's live list against the table). */
  isLive: (ino: number) => boolean;
  /** The chain of extent pages an inode holds. */
  chainOf: (ino: number) => number[];
  /** CRC-32 of the whole blob, recorded in the superblock when it was written. */
  blobCrc: number;
  /** The superblock's quarantined blocks. */
  badBlocks: readonly number[];
}

/**
 * Decodes the blob and checks it describes this pool's metadata exactly: compatible string, versions, generation,
 * UUID, geometry, regions, live inodes, mapping blocks, the live-metadata checksum, then the whole-blob checksum.
 * Throws a GuestmemfsError naming the first check that failed.
 */
export function verifyHandoverBlob(blob: Uint8Array, expect: RestoreExpectations): HandoverDescription {
  const fields = { syscall: 'mount', path: expect.pool.label };
  try {
    const d = decodeHandoverBlob(blob);
    const g = expect.layout;
    const reject = (code: string, check: string, message: string): never => {
      throw new BlobReject(code, check, message);
    };
    if (d.compatible !== HANDOVER_COMPATIBLE)
      reject('EINVAL', 'compatible', `compatible is "${d.compatible}", this guestmemfs reads "${HANDOVER_COMPATIBLE}"`);
    if (d.handoverVersion !== HANDOVER_VERSION)
      reject('EINVAL', 'version', `handover version ${d.handoverVersion} is not supported (this guestmemfs reads ${HANDOVER_VERSION})`);
    if (d.formatVersion[0] !== g.formatVersion[0])
      reject(
        'EINVAL',
        'version',
        `metadata format ${d.formatVersion.join('.')} is not supported (this guestmemfs reads ${g.formatVersion[0]}.x)`,
      );
    if (d.uuid !== expect.uuid) reject('EINVAL', 'uuid', `blob belongs to pool ${d.uuid}, this pool is ${expect.uuid}`);
    if (d.generation !== expect.generation.toString())
      reject('EUCLEAN', 'generation', `blob is from generation ${d.generation}, the superblock expects ${expect.generation}`);
    if (d.fsMem.size !== expect.pool.size)
      reject('EINVAL', 'geometry', `blob describes a pool of ${d.fsMem.size} bytes, this pool has ${expect.pool.size}`);
    if (d.fsMem.pageSize !== expect.pool.pageSize)
      reject('EINVAL', 'geometry', `blob describes ${d.fsMem.pageSize}-byte pages, this pool has ${expect.pool.pageSize}`);
    if (d.fsMem.numaNode !== expect.pool.numaNode) {
      const node = (value: number | undefined) => (value === undefined ? 'no NUMA node' : `NUMA node ${value}`);
      reject(
        'EUCLEAN',
        'numa-node',
        `blob describes a pool on ${node(d.fsMem.numaNode)}, the superblock one on ${node(expect.pool.numaNode)}`,
      );
    }
    const describe = (large?: { offset: number; size: number }) =>
      large ? `1 GiB pages at [${large.offset}, +${large.size})` : 'no 1 GiB pages';
    const expectedLarge = expect.pool.large && { offset: expect.pool.large.from, size: expect.pool.large.size };
    if (describe(d.fsMem.large) !== describe(expectedLarge) || (d.fsMem.large && d.fsMem.large.pageSize !== LARGE_PAGE_SIZE))
      reject('EINVAL', 'geometry', `blob describes ${describe(d.fsMem.large)}, this pool has ${describe(expectedLarge)}`);
    if (d.badBlocks.join() !== expect.badBlocks.join())
      reject(
        'EUCLEAN',
        'bad-blocks',
        `blob quarantines blocks [${d.badBlocks.join(', ')}], the superblock [${expect.badBlocks.join(', ')}]`,
      );
    if (d.fsMem.blockSize !== g.blockSize || d.fsMem.blockCount !== g.blockCount) {
      reject(
        'EINVAL',
        'geometry',
        `blob describes ${d.fsMem.blockCount} blocks of ${d.fsMem.blockSize} bytes, the superblock ${g.blockCount} of ${g.blockSize}`,
      );
    }
    if (d.fsMem.maxBlockCount !== g.maxBlockCount) {
      reject('EINVAL', 'geometry', `blob sizes the metadata for ${d.fsMem.maxBlockCount} blocks, the superblock for ${g.maxBlockCount}`);
    }
    g.regions.forEach(([offset, length], index) => {
      const region = d.regions[index]!;
      if (region.offset !== offset || region.length !== length) {
        reject(
          'EUCLEAN',
          'regions',
          `blob places ${region.name} at [${region.offset}, +${region.length}), the superblock at [${offset}, +${length})`,
        );
      }
    });
    if (d.reservations.length !== 1 || d.reservations[0]!.offset !== 0 || d.reservations[0]!.length !== g.metadataBytes) {
      reject(
        'EUCLEAN',
        'reservations',
        `reservation map ${JSON.stringify(d.reservations)} does not reserve the metadata region [0, +${g.metadataBytes})`,
      );
    }
    let previous = 0;
    for (const ino of d.liveInodes) {
      if (ino <= previous || ino >= g.inodeCount)
        reject('EUCLEAN', 'inodes', `live inode list is not ascending inside the table at inode ${ino}`);
      if (!expect.isLive(ino)) reject('EUCLEAN', 'inodes', `blob lists inode ${ino} as live, the inode table has it free`);
      previous = ino;
    }
    if (d.liveInodes[0] !== 1) reject('EUCLEAN', 'inodes', 'live inode list lacks the root directory');
    const pages: number[] = [];
    for (const block of d.mappingsBlocks) {
      const page = (block.offset - g.extentOffset) / g.extentPageSize;
      if (block.length !== g.extentPageSize || !Number.isInteger(page) || page < 1 || page >= g.extentPageCount) {
        reject('EUCLEAN', 'mappings', `mappings block [${block.offset}, +${block.length}) is not an extent page`);
      }
      if (!expect.chainOf(block.inode).includes(page))
        reject('EUCLEAN', 'mappings', `extent page ${page} is not in inode ${block.inode}'s chain`);
      pages.push(page);
    }
    const crc = liveMetadataCrc(expect.metadata, d.liveInodes, pages);
    if (crc !== d.crc32)
      reject(
        'EUCLEAN',
        'checksum',
        `metadata changed after serialise: live-metadata CRC32 is ${crc.toString(16)}, the blob recorded ${d.crc32.toString(16)}`,
      );
    const blobCrc = crc32(blob);
    if (blobCrc !== expect.blobCrc)
      reject('EUCLEAN', 'blob-checksum', `blob CRC32 is ${blobCrc.toString(16)}, the superblock recorded ${expect.blobCrc.toString(16)}`);
    return d;
  } catch (error) {
    if (error instanceof BlobReject)
      throw new GuestmemfsError(error.code, `handover refused (${error.check}): ${error.message}; the pool was left untouched`, fields);
    if (error instanceof FdtError)
      throw new GuestmemfsError('EUCLEAN', `handover refused (fdt-${error.check}): ${error.message}; the pool was left untouched`, fields);
    throw error;
  }
}

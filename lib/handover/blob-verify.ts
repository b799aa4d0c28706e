// Checking that a handover blob describes this pool's metadata exactly, as a restore and the checker must.
import { LARGE_PAGE_SIZE } from '../pool/pool-checks';
import { crc32, type RecordHash } from '../checksum';
import { GuestmemfsError } from '../errors';
import {
  type BlobLayout,
  HANDOVER_COMPATIBLE,
  type HandoverDescription,
  type HandoverVersion,
  HANDOVER_VERSIONS,
  isHandoverVersion,
  liveMetadataCrc,
  type LiveMetadata,
} from './blob';
import { BlobReject, decodeHandoverBlob } from './blob-decode';
import { FdtError } from './fdt';

export interface RestoreExpectations {
  layout: BlobLayout;
  uuid: string;
  generation: bigint;
  pool: { size: number; pageSize: number; label: string; numaNode?: number; large?: { from: number; size: number } | undefined };
  metadata: LiveMetadata;
  /** Whether an inode number is in use (for checking the blob's live list against the table). */
  isLive: (ino: number) => boolean;
  /**
   * The caller reads every listed record itself, in a pass it makes anyway (a restore's index): it checks there that
   * each is in use and, for version 2, calls requireRecordHash with the hash of that pass.
   */
  recordsLater?: boolean;
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
  return refusing({ syscall: 'mount', path: expect.pool.label }, () => {
    const d = decodeHandoverBlob(blob);
    const g = expect.layout;
    const reject = (code: string, check: string, message: string): never => {
      throw new BlobReject(code, check, message);
    };
    if (d.compatible !== HANDOVER_COMPATIBLE)
      reject('EINVAL', 'compatible', `compatible is "${d.compatible}", this guestmemfs reads "${HANDOVER_COMPATIBLE}"`);
    if (!isHandoverVersion(d.handoverVersion)) {
      reject(
        'EINVAL',
        'version',
        `handover version ${d.handoverVersion} is not supported (this guestmemfs reads ${HANDOVER_VERSIONS.join(' and ')})`,
      );
    }
    const version = d.handoverVersion as HandoverVersion;
    if (version >= 2 && !d.liveHash) reject('EUCLEAN', 'missing-property', '/guestmemfs/inodes has no "live-hash" property');
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
    // An indexed loop over locals: a successor runs it once, mostly before V8 has compiled it, where for-of over a
    // typed array costs five times as much.
    const live = d.liveInodes;
    const limit = g.inodeCount;
    for (let index = 0, previous = 0; index < live.length; index++) {
      const ino = live[index]!;
      if (ino <= previous || ino >= limit) reject('EUCLEAN', 'inodes', `live inode list is not ascending inside the table at inode ${ino}`);
      previous = ino;
    }
    if (!expect.recordsLater) {
      for (const ino of live)
        if (!expect.isLive(ino)) reject('EUCLEAN', 'inodes', `blob lists inode ${ino} as live, the inode table has it free`);
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
    const crc = liveMetadataCrc(expect.metadata, d.liveInodes, pages, version);
    if (crc !== d.crc32)
      reject(
        'EUCLEAN',
        'checksum',
        `metadata changed after serialise: live-metadata CRC32 is ${crc.toString(16)}, the blob recorded ${d.crc32.toString(16)}`,
      );
    if (!expect.recordsLater) checkRecordHash(d, expect.metadata.recordHash(d.liveInodes, false));
    const blobCrc = crc32(blob);
    if (blobCrc !== expect.blobCrc)
      reject('EUCLEAN', 'blob-checksum', `blob CRC32 is ${blobCrc.toString(16)}, the superblock recorded ${expect.blobCrc.toString(16)}`);
    return d;
  });
}

/**
 * The check a restore that read the records itself (RestoreExpectations.recordsLater) makes with the record hash of
 * that pass: a version-2 blob's `live-hash` must be it. (A version-1 blob's CRC covered the records already.)
 */
export function requireRecordHash(description: HandoverDescription, actual: RecordHash, fields: { syscall: string; path: string }): void {
  refusing(fields, () => checkRecordHash(description, actual));
}

function checkRecordHash(description: HandoverDescription, actual: RecordHash): void {
  const recorded = description.liveHash;
  if (!recorded || recorded.every((lane, index) => lane === actual[index])) return;
  const hex = (hash: RecordHash) => hash.map((lane) => lane.toString(16).padStart(8, '0')).join('');
  throw new BlobReject(
    'EUCLEAN',
    'checksum',
    `metadata changed after serialise: the live inodes' record hash is ${hex(actual)}, the blob recorded ${hex(recorded)}`,
  );
}

/** Runs a blob check, turning what it refuses into the GuestmemfsError a mount reports. */
function refusing<T>(fields: { syscall: string; path: string }, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof BlobReject)
      throw new GuestmemfsError(error.code, `handover refused (${error.check}): ${error.message}; the pool was left untouched`, fields);
    if (error instanceof FdtError)
      throw new GuestmemfsError('EUCLEAN', `handover refused (fdt-${error.check}): ${error.message}; the pool was left untouched`, fields);
    throw error;
  }
}

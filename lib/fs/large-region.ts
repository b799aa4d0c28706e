// A hybrid pool's second file, of 1 GiB pages: the record in the pool's header that names it, joining it to a pool
// opened by path, and the block policy over it (a file's 1 GiB blocks are whole, GiB-aligned groups of blocks).
//
// The record is the second half of the intent page, which rename's redo record (its first 288 bytes) never reaches:
//
//   intent page + 2048   magic u32 "LRG1", version u32 (1), path length u32 (0: a memfd, inherited by fd), reserved u32
//   intent page + 2064   size u64: bytes of the 1 GiB-page file
//   intent page + 2072   path bytes (UTF-8, at most 1024)
//   intent page + 4092   CRC32 of bytes 2048..4091
//
// The superblock carries INCOMPAT_HYBRID and the first block of the 1 GiB pages: the record only says where they are.
import { crc32 } from '../checksum';
import { GuestmemfsError } from '../errors';
import { LARGE_PAGE_SIZE, type Pool } from '../pool/pool';
import type { BlockAllocator } from './allocator';
import { HEADER_RECORD_BYTES, INTENT_OFFSET } from './layout';
import { appendRun, type BlockRun, totalBlocks } from './runs';

const RECORD_OFFSET = INTENT_OFFSET + 2048;
const RECORD_MAGIC = 0x3147524c; // "LRG1"
const RECORD_VERSION = 1;
const PATH_OFFSET = RECORD_OFFSET + 24;
export const MAX_LARGE_PATH_BYTES = 1024;
const CRC_OFFSET = INTENT_OFFSET + HEADER_RECORD_BYTES - 4;

export interface LargeRecord {
  /** Where the 1 GiB-page file is (undefined: a memfd, handed over by fd). */
  path: string | undefined;
  size: number;
}

function view(header: Uint8Array): DataView {
  return new DataView(header.buffer, header.byteOffset, header.byteLength);
}

/** Writes the record (mkfs of a hybrid pool) into a header whose intent page is otherwise zero or rename's. */
export function writeLargeRecord(header: Uint8Array, record: LargeRecord): void {
  const pathBytes = Buffer.from(record.path ?? '', 'utf8');
  if (pathBytes.length > MAX_LARGE_PATH_BYTES) {
    throw new GuestmemfsError(
      'ENAMETOOLONG',
      `the 1 GiB-page file's path is ${pathBytes.length} bytes, at most ${MAX_LARGE_PATH_BYTES} fit`,
      {
        syscall: 'mkfs',
        path: record.path,
      },
    );
  }
  header.fill(0, RECORD_OFFSET, CRC_OFFSET + 4);
  const v = view(header);
  v.setUint32(RECORD_OFFSET, RECORD_MAGIC, true);
  v.setUint32(RECORD_OFFSET + 4, RECORD_VERSION, true);
  v.setUint32(RECORD_OFFSET + 8, pathBytes.length, true);
  v.setBigUint64(RECORD_OFFSET + 16, BigInt(record.size), true);
  header.set(pathBytes, PATH_OFFSET);
  v.setUint32(CRC_OFFSET, crc32(header.subarray(RECORD_OFFSET, CRC_OFFSET)), true);
}

/** The record, or undefined when the header has none; a damaged or unknown one is refused. */
export function readLargeRecord(header: Uint8Array, label: string): LargeRecord | undefined {
  const v = view(header);
  if (v.getUint32(RECORD_OFFSET, true) !== RECORD_MAGIC) return undefined;
  const fields = { syscall: 'mount', path: label };
  if (v.getUint32(CRC_OFFSET, true) !== crc32(header.subarray(RECORD_OFFSET, CRC_OFFSET)))
    throw new GuestmemfsError('EUCLEAN', "the record of the pool's 1 GiB-page file is damaged (checksum mismatch): run check", fields);
  const version = v.getUint32(RECORD_OFFSET + 4, true);
  if (version !== RECORD_VERSION)
    throw new GuestmemfsError(
      'EINVAL',
      `the 1 GiB-page file's record is version ${version}, this release reads ${RECORD_VERSION}: use a newer release`,
      fields,
    );
  const length = v.getUint32(RECORD_OFFSET + 8, true);
  if (length > MAX_LARGE_PATH_BYTES)
    throw new GuestmemfsError('EUCLEAN', `the 1 GiB-page file's record names a ${length}-byte path`, fields);
  const path = length === 0 ? undefined : Buffer.from(header.subarray(PATH_OFFSET, PATH_OFFSET + length)).toString('utf8');
  return { path, size: Number(v.getBigUint64(RECORD_OFFSET + 16, true)) };
}

/**
 * Joins the 1 GiB-page file the header records to a pool opened by path (Pool.open knows nothing of it), and checks
 * an attached one (inherited by fd) has the recorded size. A pool with no record is left alone.
 */
export function attachRecordedLarge(pool: Pool, header: Uint8Array): void {
  const record = readLargeRecord(header, pool.label);
  if (!record) return;
  if (!pool.large) {
    if (record.path === undefined) {
      throw new GuestmemfsError(
        'EINVAL',
        "this hybrid pool's 1 GiB pages are in a memfd: open the pool with both fds (fd:N+M, or GUESTMEMFS_POOL_LARGE_FD)",
        { syscall: 'mount', path: pool.label },
      );
    }
    pool.attachLarge(record.path);
  }
  if (pool.large!.size !== record.size) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `the 1 GiB-page file ${pool.large!.path ?? `fd ${pool.large!.fd}`} has ${pool.large!.size} bytes, the pool records ${record.size}: ` +
        "it is not this pool's, or was truncated; the pool was left untouched",
      { syscall: 'mount', path: pool.label },
    );
  }
}

// ------------------------------------------------------------------ block policy

/** The blocks of one 1 GiB page, for a pool of `blockSize` blocks. */
export function groupBlocks(blockSize: number): number {
  return LARGE_PAGE_SIZE / blockSize;
}

/**
 * Blocks for a file growing from `have` to `want` blocks: a 1 GiB page for each GiB-aligned GiB of the file that the
 * growth covers whole (a 1 GiB page must sit at a GiB-aligned address of the file's mapping), 2 MiB blocks for the
 * rest, and 2 MiB blocks too for a GiB no 1 GiB page is left for (counted in `fellBack`). In file order; null when
 * the 2 MiB blocks run short.
 */
export function chooseHybrid(
  allocator: BlockAllocator,
  have: number,
  want: number,
  after: number,
): { runs: BlockRun[]; fellBack: number } | null {
  const group = allocator.groupBlocks;
  const firstGroup = Math.ceil(have / group) * group;
  const groupsWanted = Math.max(0, Math.floor(want / group) - firstGroup / group);
  const groups = groupsWanted > 0 ? allocator.chooseGroups(groupsWanted) : [];
  const granted = totalBlocks(groups) / group;
  const small = allocator.choose(want - have - granted * group, after);
  if (!small) return null;
  // File order: 2 MiB blocks up to the first GiB boundary, the 1 GiB pages, then 2 MiB blocks for the rest.
  const head = Math.min(want, firstGroup) - have;
  const runs: BlockRun[] = [];
  const smallQueue = small.map((run) => ({ ...run }));
  const takeSmall = (count: number) => {
    while (count > 0) {
      const next = smallQueue[0]!;
      const taken = Math.min(count, next.length);
      appendRun(runs, next.start, taken);
      next.start += taken;
      next.length -= taken;
      count -= taken;
      if (next.length === 0) smallQueue.shift();
    }
  };
  takeSmall(head);
  for (const run of groups) appendRun(runs, run.start, run.length);
  takeSmall(totalBlocks(smallQueue));
  return { runs, fellBack: groupsWanted - granted };
}

/**
 * Blocks a file of `size` bytes keeps of `runs`: what the size needs, and in a hybrid pool up to the end of a 1 GiB
 * page the cut would fall inside (a page is freed whole, never split).
 */
export function blocksToKeep(runs: readonly BlockRun[], size: number, blockSize: number, largeFrom: number | undefined): number {
  const needed = Math.ceil(size / blockSize);
  const held = totalBlocks(runs);
  const group = groupBlocks(blockSize);
  if (largeFrom === undefined || needed >= held || needed % group === 0) return needed;
  let index = 0;
  for (const run of runs) {
    if (needed < index + run.length) {
      const cutAt = run.start + (needed - index);
      return cutAt >= largeFrom ? Math.min(held, Math.ceil(needed / group) * group) : needed;
    }
    index += run.length;
  }
  return needed;
}

/** What is wrong with how a file holds 1 GiB pages: each must be whole, and at a GiB-aligned place in the file. */
export function largeGroupProblems(ino: number, runs: readonly BlockRun[], blockSize: number, largeFrom: number): string[] {
  const group = groupBlocks(blockSize);
  const problems: string[] = [];
  let index = 0;
  for (const run of runs) {
    const end = run.start + run.length;
    if (end > largeFrom) {
      const start = Math.max(run.start, largeFrom);
      const fileBlock = index + (start - run.start);
      if ((start - largeFrom) % group !== 0 || (end - start) % group !== 0 || fileBlock % group !== 0) {
        problems.push(
          `inode ${ino}: blocks ${start} to ${end - 1} (file block ${fileBlock} on) are 1 GiB pages, ` +
            'but not whole pages at a GiB of the file',
        );
      }
    }
    index += run.length;
  }
  return problems;
}

// Root helper that reserves huge pages and mounts a private hugetlbfs for a pool, and undoes exactly what it changed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import { formatSize } from '../units';
import { availableOnNode, hugePageSizeInfo, nrHugepagesFile, requireFreeHugePages } from './hugepages';
import { requireNode } from './numa';

export interface ReserveOptions {
  pageSize: number;
  /** Huge pages that must be available (free and unreserved) after the call. */
  pages: number;
  /** Mount a private hugetlbfs: true for a fresh directory under the temp dir, or a path to mount on. */
  mount?: boolean | string;
  /** Reserve the pages on this NUMA node (its own nr_hugepages), for a pool bound to it. */
  node?: number;
}

/** What a reservation changed: plain data, so another process image (after execve) can undo it. */
export interface ReservationRecord {
  pageSize: number;
  /** nr_hugepages before the call, restored by release(). */
  previousTotal: number;
  /** nr_hugepages after the call (equal to previousTotal when enough pages were already free). */
  total: number;
  mountpoint: string | undefined;
  /** Whether the mountpoint directory was created (and so is removed on release). */
  createdDir: boolean;
  /** The node whose count was changed, when the reservation was for one node. */
  node?: number;
}

export interface Reservation extends ReservationRecord {
  /** Human-readable list of what was changed, for CLIs that must say so. */
  changes: string[];
  /** The record alone, e.g. to hand to a successor process through its environment. */
  record(): ReservationRecord;
  release(): void;
}

/** Undoes a reservation from its record: unmounts (removing a directory it created) and restores nr_hugepages. */
export function releaseReservation(record: ReservationRecord): void {
  if (record.mountpoint) {
    native.umount(record.mountpoint);
    if (record.createdDir) fs.rmdirSync(record.mountpoint);
  }
  // Pages still held by pool files become surplus and go back to the kernel when those files go.
  if (record.total !== record.previousTotal) writeTotal(record.pageSize, record.previousTotal, record.node);
}

/** How long to keep asking when the kernel supplies fewer pages than asked: pages released moments ago are
 * returned to the buddy allocator by a kernel workqueue, so a reservation right after a large release can come short. */
const RESERVE_RETRY_MS = 3000;
const RESERVE_RETRY_STEP_MS = 100;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function writeTotal(pageSize: number, total: number, node: number | undefined): number {
  const file = nrHugepagesFile(pageSize, node);
  fs.writeFileSync(file, `${total}\n`);
  return Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
}

export function reserveHugePages(options: ReserveOptions): Reservation {
  const { pageSize, pages } = options;
  if (!Number.isSafeInteger(pages) || pages < 0) throw new GuestmemfsError('EINVAL', `pages must be a non-negative integer, got ${pages}`);
  const node = options.node === undefined ? undefined : requireNode(options.node);
  const counts = () => {
    const now = hugePageSizeInfo(pageSize);
    return now && node !== undefined ? availableOnNode(now, node) : now;
  };
  const before = counts();
  if (!before) requireFreeHugePages(pageSize, pages); // throws the "no such page size" error
  const info = before!;
  const changes: string[] = [];
  const needed = pages - info.available;
  let total = info.total;
  if (needed > 0) {
    if (process.getuid?.() !== 0) {
      throw new GuestmemfsError(
        'EACCES',
        `reserving ${needed} more ${formatSize(pageSize)} huge pages needs root: run as root, or have an administrator run ` +
          `echo ${info.total + needed} > ${nrHugepagesFile(pageSize, node)}`,
        { syscall: 'write', path: nrHugepagesFile(pageSize, node) },
      );
    }
    total = writeTotal(pageSize, info.total + needed, node);
    for (let waited = 0; (counts()?.available ?? 0) < pages && waited < RESERVE_RETRY_MS; waited += RESERVE_RETRY_STEP_MS) {
      sleepSync(RESERVE_RETRY_STEP_MS);
      total = writeTotal(pageSize, info.total + needed, node);
    }
    if ((counts()?.available ?? 0) < pages) {
      // The kernel hands out fewer pages when physical memory is too fragmented: put the count back.
      const got = total - info.total;
      writeTotal(pageSize, info.total, node);
      throw new GuestmemfsError(
        'ENOMEM',
        `the kernel could only add ${got} of ${needed} ${formatSize(pageSize)} huge pages (memory too fragmented or too small): ` +
          `reserve them at boot (hugepagesz=${formatSize(pageSize).replace(' ', '').replace('iB', '')} ` +
          `hugepages=${info.total + needed}) or use a smaller pool`,
        { syscall: 'write', path: nrHugepagesFile(pageSize, node) },
      );
    }
    changes.push(`raised ${nrHugepagesFile(pageSize, node)} from ${info.total} to ${total}`);
  }

  let mountpoint: string | undefined;
  let createdDir = false;
  if (options.mount) {
    try {
      if (typeof options.mount === 'string') {
        mountpoint = options.mount;
        if (!fs.existsSync(mountpoint)) {
          fs.mkdirSync(mountpoint, { recursive: true, mode: 0o700 });
          createdDir = true;
        }
      } else {
        mountpoint = fs.mkdtempSync(path.join(os.tmpdir(), `guestmemfs-hugetlbfs-${formatSize(pageSize).replace(' ', '')}-`));
        createdDir = true;
      }
      native.mount('guestmemfs', mountpoint, 'hugetlbfs', `pagesize=${pageSize},mode=0700`);
      changes.push(`mounted hugetlbfs (pagesize ${formatSize(pageSize)}) on ${mountpoint}`);
    } catch (error) {
      if (createdDir && mountpoint) fs.rmdirSync(mountpoint);
      if (total !== info.total) writeTotal(pageSize, info.total, node);
      throw GuestmemfsError.from(error).withRemedy('mounting hugetlbfs needs root (CAP_SYS_ADMIN)');
    }
  }

  let released = false;
  const record: ReservationRecord = { pageSize, previousTotal: info.total, total, mountpoint, createdDir };
  if (node !== undefined) record.node = node;
  return {
    ...record,
    changes,
    record: () => ({ ...record }),
    release() {
      if (released) return;
      released = true;
      releaseReservation(record);
    },
  };
}

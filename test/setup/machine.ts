// Vitest global setup: reserves huge pages and mounts private hugetlbfs once for all test files, and restores the machine after.
import * as fs from 'node:fs';
import type { TestProject } from 'vitest/node' with { 'resolution-mode': 'import' };
import { hugePageSizeInfo, reserveHugePages, type Reservation } from '../../lib/index';
import { GiB, MiB } from '../../lib/units';

/**
 * 2 MiB pages for all test files running in parallel (the handover proof alone takes 1 GiB + 64 MiB at a time, the
 * page-table sharing placement test 1 GiB + 4 MiB).
 */
const TEST_2M_PAGES = 3072;
/** Room for one 1 GiB-page pool and the hybrid pool (2 GiB of 2 MiB pages and one 1 GiB page) beside it. */
const TEST_1G_PAGES = 2;

export interface MachineContext {
  /** Mountpoint of a private 2 MiB hugetlbfs, or null with the reason in skip2M. */
  hugetlbfs2M: string | null;
  skip2M: string;
  hugetlbfs1G: string | null;
  skip1G: string;
  isRoot: boolean;
}

declare module 'vitest' {
  export interface ProvidedContext {
    machine: MachineContext;
  }
}

function tryReserve(pageSize: number, pages: number): { reservation: Reservation | null; reason: string } {
  if (process.getuid?.() !== 0) return { reservation: null, reason: 'not root: cannot reserve huge pages or mount hugetlbfs' };
  if (!hugePageSizeInfo(pageSize)) return { reservation: null, reason: `kernel has no ${pageSize / MiB} MiB huge pages` };
  try {
    return { reservation: reserveHugePages({ pageSize, pages, mount: true }), reason: '' };
  } catch (error) {
    return { reservation: null, reason: (error as Error).message };
  }
}

export default function setup(project: TestProject): () => void {
  const small = tryReserve(2 * MiB, TEST_2M_PAGES);
  const large = tryReserve(1 * GiB, TEST_1G_PAGES);
  const machine: MachineContext = {
    hugetlbfs2M: small.reservation?.mountpoint ?? null,
    skip2M: small.reason,
    hugetlbfs1G: large.reservation?.mountpoint ?? null,
    skip1G: large.reason,
    isRoot: process.getuid?.() === 0,
  };
  for (const [size, reason] of [
    ['2 MiB', small.reason],
    ['1 GiB', large.reason],
  ]) {
    if (reason) process.stdout.write(`[guestmemfs tests] ${size} huge-page tests will skip: ${reason}\n`);
  }
  project.provide('machine', machine);
  return () => {
    for (const reservation of [large.reservation, small.reservation]) {
      if (!reservation) continue;
      // Pools left by a failed test would keep the mount busy: remove them before unmounting.
      if (reservation.mountpoint) {
        for (const entry of fs.readdirSync(reservation.mountpoint))
          fs.rmSync(`${reservation.mountpoint}/${entry}`, { force: true, recursive: true });
      }
      reservation.release();
    }
  };
}

// What the machine offers for pools: huge page sizes and their free counts, hugetlbfs mounts, and the exact remedy when short.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';
import { formatSize, KiB, MiB } from '../units';
import { nodeHugepagesDir } from './numa';

export const HUGETLBFS_MAGIC = 0x958458f6;
export const TMPFS_MAGIC = 0x01021994;

const sysfsRoot = '/sys/kernel/mm/hugepages';

export interface HugePageSizeInfo {
  pageSize: number;
  /** nr_hugepages: the persistent pool size for this page size. */
  total: number;
  free: number;
  /** Pages promised to mappings or fallocated files but not yet faulted in. */
  reserved: number;
  surplus: number;
  /** free - reserved: what a new pool can still claim. */
  available: number;
}

export interface HugetlbfsMount {
  mountpoint: string;
  pageSize: number;
  options: string;
}

function readCounter(file: string): number {
  return Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
}

/** The sysfs file that sets how many huge pages of this size the kernel keeps (on one node, when given). */
export function nrHugepagesFile(pageSize: number, node?: number): string {
  if (node !== undefined) return path.join(nodeHugepagesDir(node, pageSize), 'nr_hugepages');
  return path.join(sysfsRoot, `hugepages-${pageSize / KiB}kB`, 'nr_hugepages');
}

/** The command an operator would type to set the count: /proc/sys/vm/nr_hugepages for the default size. */
function nrHugepagesCommand(pageSize: number, count: number, node?: number): string {
  const file = pageSize === defaultHugePageSize() && node === undefined ? '/proc/sys/vm/nr_hugepages' : nrHugepagesFile(pageSize, node);
  return `echo ${count} > ${file}`;
}

/** One node's huge pages of a size: its share of nr_hugepages and how many of those are free. */
export function nodeHugePages(node: number, pageSize: number): { total: number; free: number } {
  const dir = nodeHugepagesDir(node, pageSize);
  return { total: readCounter(path.join(dir, 'nr_hugepages')), free: readCounter(path.join(dir, 'free_hugepages')) };
}

/**
 * What a pool bound to `node` can still claim: the node's free pages, but never more than the host's unreserved ones
 * (reservations are counted for the host, not per node).
 */
export function availableOnNode(info: HugePageSizeInfo, node: number): { total: number; available: number } {
  const onNode = nodeHugePages(node, info.pageSize);
  return { total: onNode.total, available: Math.min(onNode.free, info.available) };
}

export function hugePageSizes(): HugePageSizeInfo[] {
  if (!fs.existsSync(sysfsRoot)) return [];
  return fs
    .readdirSync(sysfsRoot)
    .map((entry) => /^hugepages-(\d+)kB$/.exec(entry))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => {
      const dir = path.join(sysfsRoot, match[0]);
      const free = readCounter(path.join(dir, 'free_hugepages'));
      const reserved = readCounter(path.join(dir, 'resv_hugepages'));
      return {
        pageSize: Number(match[1]) * KiB,
        total: readCounter(path.join(dir, 'nr_hugepages')),
        free,
        reserved,
        surplus: readCounter(path.join(dir, 'surplus_hugepages')),
        available: Math.max(0, free - reserved),
      };
    })
    .sort((a, b) => a.pageSize - b.pageSize);
}

export function hugePageSizeInfo(pageSize: number): HugePageSizeInfo | undefined {
  return hugePageSizes().find((info) => info.pageSize === pageSize);
}

let cachedDefaultHugePageSize: number | undefined;

/** Hugepagesize from /proc/meminfo: the page size of hugetlbfs mounts without a pagesize= option. */
export function defaultHugePageSize(): number {
  if (cachedDefaultHugePageSize === undefined) {
    const match = /^Hugepagesize:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    cachedDefaultHugePageSize = match ? Number(match[1]) * KiB : 2 * MiB;
  }
  return cachedDefaultHugePageSize;
}

function parsePageSizeOption(value: string): number {
  const match = /^(\d+)([KMG]?)$/i.exec(value);
  if (!match) return defaultHugePageSize();
  const scale = { '': 1, K: KiB, M: KiB * KiB, G: KiB * KiB * KiB }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(match[1]) * scale;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

export function hugetlbfsMounts(mountsText = fs.readFileSync('/proc/mounts', 'utf8')): HugetlbfsMount[] {
  const mounts: HugetlbfsMount[] = [];
  for (const line of mountsText.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4 || fields[2] !== 'hugetlbfs') continue;
    const options = fields[3]!;
    const pageSizeOption = options.split(',').find((option) => option.startsWith('pagesize='));
    mounts.push({
      mountpoint: unescapeMountField(fields[1]!),
      pageSize: pageSizeOption ? parsePageSizeOption(pageSizeOption.slice('pagesize='.length)) : defaultHugePageSize(),
      options,
    });
  }
  return mounts;
}

/**
 * Throws ENOMEM naming the exact command that fixes it when fewer than `pages` huge pages of this size are free.
 * This runs before anything is created, so a short machine changes nothing.
 */
export function requireFreeHugePages(
  pageSize: number,
  pages: number,
  context: { path?: string; syscall?: string; node?: number } = {},
): void {
  const info = hugePageSizeInfo(pageSize);
  if (!info) {
    const offered =
      hugePageSizes()
        .map((size) => formatSize(size.pageSize))
        .join(', ') || 'none';
    throw new GuestmemfsError(
      'EINVAL',
      `this kernel has no ${formatSize(pageSize)} huge pages (it offers: ${offered}); choose another page size or use the 4k fallback`,
      { syscall: context.syscall ?? 'fallocate', path: context.path },
    );
  }
  const { node } = context;
  const { total, available } = node === undefined ? info : availableOnNode(info, node);
  if (available >= pages) return;
  throw new GuestmemfsError(
    'ENOMEM',
    `need ${pages} free ${formatSize(pageSize)} huge pages${node === undefined ? '' : ` on node ${node}`}, ${available} free: ` +
      `${nrHugepagesCommand(pageSize, total + pages - available, node)} as root, or use the 4k fallback`,
    { syscall: context.syscall ?? 'fallocate', path: context.path },
  );
}

export interface MachineSupport {
  isRoot: boolean;
  defaultHugePageSize: number;
  hugePageSizes: HugePageSizeInfo[];
  hugetlbfsMounts: HugetlbfsMount[];
  /** /sys/kernel/mm/transparent_hugepage/shmem_enabled selection: whether the 4 KiB fallback can get THP. */
  shmemTransparentHugePages: string | undefined;
  kvm: boolean;
}

export function machineSupport(): MachineSupport {
  let shmemTransparentHugePages: string | undefined;
  try {
    const text = fs.readFileSync('/sys/kernel/mm/transparent_hugepage/shmem_enabled', 'utf8');
    shmemTransparentHugePages = /\[(\w+)\]/.exec(text)?.[1];
  } catch {
    shmemTransparentHugePages = undefined;
  }
  let kvm: boolean;
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    kvm = true;
  } catch {
    kvm = false;
  }
  return {
    isRoot: process.getuid?.() === 0,
    defaultHugePageSize: defaultHugePageSize(),
    hugePageSizes: hugePageSizes(),
    hugetlbfsMounts: hugetlbfsMounts(),
    shmemTransparentHugePages,
    kvm,
  };
}

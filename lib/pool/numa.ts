// NUMA nodes for per-node pools: which nodes this host has, the check that refuses an absent one, and where a
// mapping's pages really are (move_pages), the proof of a pool's placement.
import * as fs from 'node:fs';
import { GuestmemfsError } from '../errors';
import { native } from '../native';

const NODE_ROOT = '/sys/devices/system/node';

/** Parses a sysfs node list ("0", "0-3,6"). */
export function parseNodeList(text: string): number[] {
  const nodes: number[] = [];
  for (const part of text.trim().split(',')) {
    if (part === '') continue;
    const [first, last] = part.split('-').map((value) => Number.parseInt(value, 10));
    for (let node = first!; node <= (last ?? first!); node++) nodes.push(node);
  }
  return nodes;
}

/** Nodes with memory on this host (a kernel without NUMA has node 0 only). */
export function memoryNodes(): number[] {
  try {
    return parseNodeList(fs.readFileSync(`${NODE_ROOT}/has_memory`, 'utf8'));
  } catch {
    return [0];
  }
}

/** The sysfs directory of a node's huge pages of one size. */
export function nodeHugepagesDir(node: number, pageSize: number): string {
  return `${NODE_ROOT}/node${node}/hugepages/hugepages-${pageSize / 1024}kB`;
}

/**
 * Refuses a node that is not a non-negative integer (TypeError/RangeError, as for any bad argument) or that this
 * host has no memory on (EINVAL, naming the nodes it has). Runs before anything is created.
 */
export function requireNode(node: unknown, context: { path?: string } = {}): number {
  if (typeof node !== 'number') throw new TypeError(`node must be a number, got ${typeof node}`);
  if (!Number.isSafeInteger(node) || node < 0) throw new RangeError(`node must be a non-negative integer, got ${node}`);
  const nodes = memoryNodes();
  if (!nodes.includes(node)) {
    throw new GuestmemfsError(
      'EINVAL',
      `NUMA node ${node} has no memory on this host (nodes with memory: ${nodes.join(', ')}): pick one of those`,
      { syscall: 'mbind', path: context.path },
    );
  }
  return node;
}

/** Where a mapping's pages are: pages per node, and how many are not allocated at all. */
export interface Placement {
  pagesByNode: Record<number, number>;
  missing: number;
}

/** The node of every page of [offset, offset+length) of a mapping (one per `pageSize`), counted. */
export function placementOf(mappingId: number, offset: number, length: number, pageSize: number): Placement {
  const placement: Placement = { pagesByNode: {}, missing: 0 };
  for (const status of native.numaPageNodes(mappingId, offset, length, pageSize)) {
    if (status < 0) placement.missing++;
    else placement.pagesByNode[status] = (placement.pagesByNode[status] ?? 0) + 1;
  }
  return placement;
}

/** Pages of a placement on a node other than `node`, or nowhere. */
export function misplacedPages(placement: Placement, node: number): number {
  return Object.entries(placement.pagesByNode).reduce((sum, [at, pages]) => (Number(at) === node ? sum : sum + pages), placement.missing);
}

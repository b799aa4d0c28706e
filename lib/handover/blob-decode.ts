// Decoding a handover blob into its description (what `inspect` prints), refusing one that is not well formed.
import * as os from 'node:os';
import { hugeArray } from '../pool/anonymous';
import { type HandoverDescription, REGION_NAMES } from './blob';
import { child, type FdtNode, parseFdt } from './fdt';

/** A check a blob failed: its errno code and the check's name, which every refusal message carries. */
export class BlobReject extends Error {
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

/** A list property's cells as a Uint32Array (the live list: 100,000 cells and more). */
function u32List(node: FdtNode, name: string, where: string): Uint32Array {
  const view = cells(node, name, where, 4);
  const out = hugeArray(Uint32Array, view.byteLength / 4);
  // Copied, then byte-swapped by Buffer's native swap32: no JS loop for a successor to run before V8 compiles it.
  const bytes = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  if (os.endianness() === 'LE') bytes.swap32();
  return out;
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
    liveInodes: u32List(inodes, 'live', '/guestmemfs/inodes'),
    mappingsBlocks: pageOwners.map((inode, index) => ({ offset: pageMem[index * 2]!, length: pageMem[index * 2 + 1]!, inode })),
    reservations: parsed.reservations.map((entry) => ({ offset: toNumber(entry.address), length: toNumber(entry.size) })),
  };
  if (inodes.props.has('live-hash'))
    description.liveHash = u32s(inodes, 'live-hash', '/guestmemfs/inodes', 4) as [number, number, number, number];
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

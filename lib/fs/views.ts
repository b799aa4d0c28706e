// The typed views of a pool's metadata region that every user of it works through: mkfs, a mount, the checker.
import { BlockAllocator } from './allocator';
import { ExtentStore } from './extents';
import { InodeTable } from './inodes';
import { FIXED_HEADER_BYTES, type Geometry, headerRecords, type Hints, type Intent } from './layout';
import type { MetadataSource } from './metadata';

export interface MetadataViews {
  geometry: Geometry;
  source: MetadataSource;
  /** The fixed header [0, 16 KiB): superblock copies, intent record, hints. */
  header: Uint8Array;
  hints: Hints;
  intent: Intent;
  /** The intent record's bytes (its name follows the words). */
  intentBytes: Uint8Array;
  inodes: InodeTable;
  allocator: BlockAllocator;
  extents: ExtentStore;
}

/** Builds every view over a metadata source; nothing is read until a view is used. */
export function openViews(
  source: MetadataSource,
  geometry: Geometry,
  badBlocks: readonly number[] = [],
  largeFromBlock?: number,
): MetadataViews {
  const header = source.window(0, FIXED_HEADER_BYTES);
  const { hints, intent, intentBytes } = headerRecords(header);
  const inodes = new InodeTable(source, geometry);
  return {
    geometry,
    source,
    header,
    hints,
    intent,
    intentBytes,
    inodes,
    allocator: new BlockAllocator(source, geometry, hints, badBlocks, largeFromBlock),
    extents: new ExtentStore(source, geometry, hints, inodes),
  };
}

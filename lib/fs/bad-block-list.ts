// The bad-block list's on-pool format: quarantined blocks in the checked bytes of each superblock slot, after its
// fields, so that a quarantine commits with the slot it is written in (the writer fills the older slot).
//
//   slot offset 224   count u32
//   slot offset 228   count block numbers, u32 each, ascending, every one a data block; zeroes after them
//   (the slot's CRC at 508 covers them)
//
// Pools with a list carry RO_COMPAT_BADBLOCKS: a release that does not know it would hand the blocks out again, so
// it may only mount such a pool read-only.
const LIST_OFFSET = 224;
const LIST_END = 508;
export const MAX_BAD_BLOCKS = (LIST_END - LIST_OFFSET - 4) / 4;

/** Writes the list into a slot that the caller seals with the slot's own CRC afterwards. */
export function writeBadBlockList(slot: DataView, blocks: readonly number[]): void {
  if (blocks.length > MAX_BAD_BLOCKS) throw new RangeError(`at most ${MAX_BAD_BLOCKS} bad blocks fit in the superblock`);
  slot.setUint32(LIST_OFFSET, blocks.length, true);
  for (let index = 0; index < MAX_BAD_BLOCKS; index++) slot.setUint32(LIST_OFFSET + 4 + index * 4, blocks[index] ?? 0, true);
}

/** Reads the list, refusing one that is longer than fits, out of order, or names a block outside the data blocks. */
export function readBadBlockList(
  slot: DataView,
  metadataBlocks: number,
  blockCount: number,
): { ok: true; blocks: number[] } | { ok: false; reason: string } {
  const count = slot.getUint32(LIST_OFFSET, true);
  if (count > MAX_BAD_BLOCKS) return { ok: false, reason: `bad-block list holds ${count} entries, at most ${MAX_BAD_BLOCKS} fit` };
  const blocks: number[] = [];
  for (let index = 0; index < count; index++) {
    const block = slot.getUint32(LIST_OFFSET + 4 + index * 4, true);
    if (block < metadataBlocks || block >= blockCount || block <= (blocks.at(-1) ?? -1))
      return { ok: false, reason: `bad-block list entry ${index} (block ${block}) is not an ascending data block` };
    blocks.push(block);
  }
  return { ok: true, blocks };
}

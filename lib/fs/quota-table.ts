// The quota table's on-pool format: block limits per uid and per directory, kept in the free tail of each superblock
// slot, so that a limit changes atomically with the slot (the writer fills the older slot, and its sequence decides).
//
//   slot offset 512   count u32, reserved u32 x3
//   slot offset 528   entries, 16 bytes each: kind u8, reserved u8 x3, id u32, generation u32, limitBlocks u32
//   slot offset 4092  CRC32 of bytes 512..4091
//
// Pools with limits carry RO_COMPAT_QUOTA: a release that does not know the table could write past the limits, so it
// may only mount such a pool read-only.
import { crc32 } from '../checksum';

export type QuotaKind = 'uid' | 'dir';

export interface QuotaLimit {
  kind: QuotaKind;
  /** The uid, or the directory's inode number. */
  id: number;
  /** The directory's inode generation (0 for a uid): a limit never applies to a later inode that reuses the number. */
  generation: number;
  /** Blocks the uid's files, or the files below the directory, may hold together. */
  limitBlocks: number;
}

export const QUOTA_TABLE_OFFSET = 512;
const ENTRIES_OFFSET = QUOTA_TABLE_OFFSET + 16;
const ENTRY_BYTES = 16;
const TABLE_CRC_OFFSET = 4092;
export const MAX_QUOTA_LIMITS = Math.floor((TABLE_CRC_OFFSET - ENTRIES_OFFSET) / ENTRY_BYTES);
const KIND_CODES: Record<QuotaKind, number> = { uid: 1, dir: 2 };

function tableCrc(slot: DataView): number {
  return crc32(new Uint8Array(slot.buffer, slot.byteOffset + QUOTA_TABLE_OFFSET, TABLE_CRC_OFFSET - QUOTA_TABLE_OFFSET));
}

/** Writes the table (and its CRC) into a slot that the caller seals with the slot's own CRC afterwards. */
export function writeQuotaTable(slot: DataView, limits: readonly QuotaLimit[]): void {
  if (limits.length > MAX_QUOTA_LIMITS) throw new RangeError(`at most ${MAX_QUOTA_LIMITS} quota limits fit in the table`);
  new Uint8Array(slot.buffer, slot.byteOffset + QUOTA_TABLE_OFFSET, TABLE_CRC_OFFSET + 4 - QUOTA_TABLE_OFFSET).fill(0);
  slot.setUint32(QUOTA_TABLE_OFFSET, limits.length, true);
  limits.forEach((limit, index) => {
    const at = ENTRIES_OFFSET + index * ENTRY_BYTES;
    slot.setUint8(at, KIND_CODES[limit.kind]);
    slot.setUint32(at + 4, limit.id, true);
    slot.setUint32(at + 8, limit.generation, true);
    slot.setUint32(at + 12, limit.limitBlocks, true);
  });
  slot.setUint32(TABLE_CRC_OFFSET, tableCrc(slot), true);
}

/** The table of a slot, or why it cannot be trusted. */
export function readQuotaTable(slot: DataView): { ok: true; limits: QuotaLimit[] } | { ok: false; reason: string } {
  const stored = slot.getUint32(TABLE_CRC_OFFSET, true);
  const actual = tableCrc(slot);
  if (stored !== actual)
    return { ok: false, reason: `quota table checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})` };
  const count = slot.getUint32(QUOTA_TABLE_OFFSET, true);
  if (count > MAX_QUOTA_LIMITS) return { ok: false, reason: `quota table claims ${count} entries, it holds at most ${MAX_QUOTA_LIMITS}` };
  const limits: QuotaLimit[] = [];
  for (let index = 0; index < count; index++) {
    const at = ENTRIES_OFFSET + index * ENTRY_BYTES;
    const code = slot.getUint8(at);
    const kind = (Object.keys(KIND_CODES) as QuotaKind[]).find((name) => KIND_CODES[name] === code);
    if (!kind) return { ok: false, reason: `quota entry ${index} has unknown kind ${code}` };
    limits.push({
      kind,
      id: slot.getUint32(at + 4, true),
      generation: slot.getUint32(at + 8, true),
      limitBlocks: slot.getUint32(at + 12, true),
    });
  }
  return { ok: true, limits };
}

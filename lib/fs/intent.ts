// The rename intent record: written before a rename's steps and cleared after them, replayed by recovery after a kill.
//
// A rename changes several records (victim, both directories' entry lists, the inode's name and parent). The record
// holds the target (source inode, destination directory, victim, new name) with a CRC; its magic is stored last and is
// the commit point. Recovery finds an active record and rolls the rename forward from it: name and parent are primary
// state, everything else is derived and rebuilt anyway. A record whose CRC fails was never committed and is dropped.
import { crc32 } from '../checksum';
import type { InodeTable } from './inodes';
import { FLAG_ORPHAN, InodeType, NAME_MAX } from './inodes';
import { INTENT_ACTIVE, INTENT_CHECKED_FROM, INTENT_CHECKED_TO, INTENT_NAME_OFFSET, INTENT_OP_RENAME, type Intent } from './layout';

export interface RenameTarget {
  srcIno: number;
  dstParent: number;
  /** The inode the rename replaces, or 0. */
  victimIno: number;
  nameBytes: Uint8Array;
}

/** CRC32 over the intent's fields (op..nameLength) and its name bytes. */
function intentChecksum(intentBytes: Uint8Array, nameLength: number): number {
  const fields = crc32(intentBytes.subarray(INTENT_CHECKED_FROM, INTENT_CHECKED_TO));
  return crc32(intentBytes.subarray(INTENT_NAME_OFFSET, INTENT_NAME_OFFSET + nameLength), fields);
}

/** Records a rename about to happen, fields first and the magic last (the commit point). */
export function beginRename(intent: Intent, intentBytes: Uint8Array, target: RenameTarget): void {
  intent.op = INTENT_OP_RENAME;
  intent.srcIno = target.srcIno;
  intent.dstParent = target.dstParent;
  intent.victimIno = target.victimIno;
  intent.nameLength = target.nameBytes.length;
  intentBytes.set(target.nameBytes, INTENT_NAME_OFFSET);
  intent.crc = intentChecksum(intentBytes, target.nameBytes.length);
  intent.magic = INTENT_ACTIVE;
}

/** The rename is complete: nothing is left to replay. */
export function endRename(intent: Intent): void {
  intent.magic = 0;
}

export function renameInFlight(intent: Intent): boolean {
  return intent.magic === INTENT_ACTIVE;
}

/** Replays (or discards) an active intent record after a kill; returns what it did, or undefined when none was active. */
export function replayRename(intent: Intent, intentBytes: Uint8Array, inodes: InodeTable): string | undefined {
  if (!renameInFlight(intent)) return undefined;
  const nameLength = intent.nameLength;
  const valid =
    intent.op === INTENT_OP_RENAME &&
    nameLength >= 1 &&
    nameLength <= NAME_MAX &&
    intent.crc === intentChecksum(intentBytes, nameLength) &&
    inodes.isValidIno(intent.srcIno) &&
    inodes.isValidIno(intent.dstParent);
  let fix = 'discarded a rename intent record that was never committed';
  if (valid) {
    const { srcIno, dstParent, victimIno } = intent;
    if (victimIno !== 0 && inodes.isValidIno(victimIno) && inodes.type(victimIno) !== InodeType.Free) {
      inodes.setNlink(victimIno, 0);
      inodes.setFlags(victimIno, inodes.flags(victimIno) | FLAG_ORPHAN);
    }
    inodes.setName(srcIno, intentBytes.slice(INTENT_NAME_OFFSET, INTENT_NAME_OFFSET + nameLength));
    inodes.setParent(srcIno, dstParent);
    fix = `finished an interrupted rename of inode ${srcIno} into directory ${dstParent}`;
  }
  endRename(intent);
  return fix;
}

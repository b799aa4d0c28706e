// Block ownership: which inode holds each block, and the damage recovery cannot repair (unknown types, extents outside
// the data blocks, a block two files hold, a name no directory could hold, a directory cycle). Audit, repair, the
// checker and mount all start from this one scan.
import type { ExtentStore } from './extents';
import { FILE_TYPE_NAMES, FLAG_ORPHAN, type InodeTable, InodeType, NAME_MAX } from './inodes';
import { type Geometry, ROOT_INO } from './layout';

export interface OwnershipViews {
  geometry: Geometry;
  inodes: InodeTable;
  extents: ExtentStore;
}

/**
 * Read-only: what recovery cannot fix (unknown inode types, extents outside the data blocks, a block kept by two files,
 * an entry whose directory is not one). Recovery changes nothing unless this is empty.
 */
export function findUnrepairable(views: OwnershipViews): string[] {
  const { problems } = scanOwnership(views);
  return problems.length > 0 ? problems : findUnreachable(views.inodes);
}

/** Every block's owning inode (-1 for none) and what makes the metadata unrepairable. */
export function scanOwnership(views: OwnershipViews): { problems: string[]; owner: Int32Array } {
  const { geometry, inodes, extents } = views;
  const problems: string[] = [];
  const owner = new Int32Array(geometry.blockCount).fill(-1);
  owner.fill(0, 0, geometry.metadataBlocks);
  // The root can never be unlinked: a flag saying so is damage, and acting on it would free the whole tree.
  if (inodes.flags(ROOT_INO) & FLAG_ORPHAN) problems.push('the root directory is marked unlinked');
  for (let ino = 1; ino < inodes.count && problems.length < 20; ino++) {
    const type = inodes.type(ino);
    if (type === InodeType.Free) continue;
    if (type !== InodeType.Directory && type !== InodeType.File) {
      problems.push(`inode ${ino} has unknown type ${Number(type)}`);
      continue;
    }
    const orphan = ino !== ROOT_INO && (inodes.flags(ino) & FLAG_ORPHAN) !== 0;
    if (type === InodeType.File && FILE_TYPE_NAMES[inodes.fileType(ino)] === undefined)
      problems.push(`inode ${ino} has unknown file type ${inodes.fileType(ino)}`);
    if (!orphan && ino !== ROOT_INO) {
      const parent = inodes.parent(ino);
      if (!inodes.isValidIno(parent) || inodes.type(parent) !== InodeType.Directory) {
        problems.push(`inode ${ino} names inode ${parent} as its directory, which is not one`);
      }
      const nameProblem = invalidName(inodes, ino);
      if (nameProblem) problems.push(`inode ${ino} ${nameProblem}`);
    }
    for (const run of extents.read(ino)) {
      if (run.length === 0 || run.start < geometry.metadataBlocks || run.start + run.length > geometry.blockCount) {
        problems.push(`inode ${ino} has extent [${run.start}, +${run.length}) outside the data blocks`);
        continue;
      }
      for (let block = run.start; block < run.start + run.length; block++) {
        if (owner[block] !== -1 && problems.length < 20) problems.push(`block ${block} belongs to inode ${owner[block]} and inode ${ino}`);
        owner[block] = ino;
      }
    }
  }
  return { problems, owner };
}

/** Why an inode's stored name could not have been created, or undefined when it is a valid name. */
function invalidName(inodes: InodeTable, ino: number): string | undefined {
  const bytes = inodes.nameBytes(ino);
  if (bytes.length === 0 || bytes.length > NAME_MAX) return `has a name of ${bytes.length} bytes`;
  if (bytes.includes(0x2f) || bytes.includes(0)) return 'has a name containing "/" or NUL';
  const name = inodes.name(ino);
  if (name === '.' || name === '..') return `is named "${name}"`;
  return undefined;
}

/** Inodes whose parent chain never reaches the root (a directory cycle), as reasons. */
export function findUnreachable(inodes: InodeTable): string[] {
  const problems: string[] = [];
  const reaches = new Uint8Array(inodes.count); // 1 once known to reach the root
  reaches[ROOT_INO] = 1;
  for (let ino = 2; ino < inodes.count && problems.length < 20; ino++) {
    if (inodes.type(ino) === InodeType.Free || inodes.flags(ino) & FLAG_ORPHAN || reaches[ino]) continue;
    const path: number[] = [];
    let cursor = ino;
    while (!reaches[cursor] && path.length <= inodes.count) {
      path.push(cursor);
      cursor = inodes.parent(cursor);
      if (!inodes.isValidIno(cursor) || inodes.type(cursor) !== InodeType.Directory) break;
    }
    if (reaches[cursor]) for (const member of path) reaches[member] = 1;
    else problems.push(`inode ${ino} is unreachable from the root (its directories form a cycle or lead nowhere)`);
  }
  return problems;
}

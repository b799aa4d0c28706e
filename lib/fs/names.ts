// Path resolution over the volatile name index, with search permission checked on every directory on the way, and
// the index's rebuild at mount.
import type { RecordHash } from '../checksum';
import { GuestmemfsError } from '../errors';
import { hugeArray, releaseHugeArray } from '../pool/anonymous';
import type { MountContext } from './context';
import { FLAG_ORPHAN, InodeType } from './inodes';
import { ROOT_INO } from './layout';
import { encodeNewName, splitPath } from './paths';
import { W_OK, X_OK } from './permissions';

/** True when the last non-empty component of path is '.' (which splitPath drops). */
function endsWithDot(path: string): boolean {
  const trimmed = path.replace(/\/+$/, '');
  return trimmed === '.' || trimmed.endsWith('/.');
}

/** The inode at path (following '..'). */
export function resolve(ctx: MountContext, path: string, syscall: string): number {
  const parts = splitPath(path, syscall);
  const inodes = ctx.inodes;
  let ino = ROOT_INO;
  for (let i = 0; i < parts.length; i++) {
    if (inodes.type(ino) !== InodeType.Directory) {
      throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
    }
    ctx.requireAccess(ino, X_OK, syscall, path);
    const part = parts[i]!;
    const next = part === '..' ? inodes.parent(ino) : ctx.names.get(ino, part);
    if (next === undefined) throw new GuestmemfsError('ENOENT', `no such file or directory, ${syscall} '${path}'`, { syscall, path });
    ino = next;
  }
  return ino;
}

/** The directory a new name goes into, and the name: for create, mkdir and a rename's target. */
export function resolveParent(ctx: MountContext, path: string, syscall: string): { parent: number; name: string; nameBytes: Uint8Array } {
  const parts = splitPath(path, syscall);
  if (endsWithDot(path)) {
    // "dir/." names an existing directory (or nothing): it can never be created.
    resolve(ctx, path, syscall);
    throw new GuestmemfsError('EEXIST', `file already exists, ${syscall} '${path}'`, { syscall, path });
  }
  const name = parts.pop();
  if (name === undefined) throw new GuestmemfsError('EEXIST', `the root directory already exists, ${syscall} '${path}'`, { syscall, path });
  if (name === '..') throw new GuestmemfsError('EINVAL', `"..": cannot be the last part of a path to ${syscall}`, { syscall, path });
  const nameBytes = encodeNewName(name, syscall, path);
  const parent = resolve(ctx, `/${parts.join('/')}`, syscall);
  if (ctx.inodes.type(parent) !== InodeType.Directory)
    throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
  return { parent, name, nameBytes };
}

/** An existing entry with its directory: for unlink, rmdir and a rename's source. */
export function resolveExisting(ctx: MountContext, path: string, syscall: string): { parent: number; name: string; ino: number } {
  const parts = splitPath(path, syscall);
  if (endsWithDot(path)) throw new GuestmemfsError('EINVAL', `cannot ${syscall} '.', ${syscall} '${path}'`, { syscall, path });
  const name = parts.pop();
  if (name === undefined) {
    throw new GuestmemfsError(syscall === 'rmdir' || syscall === 'rename' ? 'EBUSY' : 'EISDIR', `cannot ${syscall} the root directory`, {
      syscall,
      path,
    });
  }
  if (name === '..') throw new GuestmemfsError('EINVAL', `cannot ${syscall} '..'`, { syscall, path });
  const parent = resolve(ctx, `/${parts.join('/')}`, syscall);
  if (ctx.inodes.type(parent) !== InodeType.Directory)
    throw new GuestmemfsError('ENOTDIR', `not a directory, ${syscall} '${path}'`, { syscall, path });
  ctx.requireAccess(parent, X_OK, syscall, path);
  const ino = ctx.names.get(parent, name);
  if (ino === undefined) throw new GuestmemfsError('ENOENT', `no such file or directory, ${syscall} '${path}'`, { syscall, path });
  return { parent, name, ino };
}

/** A file this mount may change the contents or size of: not a directory, not busy, writable. */
export function resolveFileForWrite(ctx: MountContext, path: string, syscall: string): number {
  const ino = resolve(ctx, path, syscall);
  ctx.requireFile(ino, syscall, path);
  ctx.requireNotBusy(ino, syscall, path);
  ctx.requireAccess(ino, W_OK, syscall, path);
  return ino;
}

/**
 * Builds the name index from every inode in the table, or from a handover's list of live inodes. Returns the orphans
 * found (unlinked files whose mapping process is gone), for the caller to free or keep, and the record hash of the
 * inodes read (what a version-2 handover blob records for its list).
 */
export function buildIndex(
  ctx: MountContext,
  live?: ArrayLike<number>,
  refuseFree?: { syscall: string; path: string },
): { orphans: number[]; recordHash: RecordHash } {
  const orphans: number[] = [];
  const candidates = live ?? Uint32Array.from({ length: ctx.inodes.count - 1 }, (_, index) => index + 1);
  // Two passes: the records' pass only appends (parent, name hash, inode) triples, read back in order to fill the
  // index. Inserting during the records' pass made each insert a cache miss, its lines evicted by the stream of
  // records: 100,000 inserts took 12 ms that way here, 2 to 6 ms this way.
  const entries = hugeArray(Int32Array, 3 * candidates.length);
  let count = 0;
  // Hashed in place: not one name is decoded, however many files there are.
  const recordHash = ctx.inodes.scanInUse(
    candidates,
    (ino, parent, flags, nameHash) => {
      if (ino === ROOT_INO) return;
      if (flags & FLAG_ORPHAN) {
        orphans.push(ino);
        return;
      }
      entries[3 * count] = parent;
      entries[3 * count + 1] = nameHash;
      entries[3 * count + 2] = ino;
      count++;
    },
    refuseFree &&
      ((ino) => {
        releaseHugeArray(entries);
        throw new GuestmemfsError(
          'EUCLEAN',
          `handover refused (inodes): blob lists inode ${ino} as live, the inode table has it free; the pool was left untouched`,
          refuseFree,
        );
      }),
  );
  const names = ctx.names;
  names.reserve(names.size + count);
  for (let at = 0; at < 3 * count; at += 3) names.setHashed(entries[at]!, entries[at + 1]!, entries[at + 2]!);
  releaseHugeArray(entries);
  return { orphans, recordHash };
}

/** The path of a named inode, rebuilt from its parent links. */
export function pathOf(ctx: MountContext, ino: number): string {
  const inodes = ctx.inodes;
  const parts: string[] = [];
  for (let at = ino, hops = 0; at !== ROOT_INO && at !== 0 && hops < inodes.count; at = inodes.parent(at), hops++)
    parts.unshift(inodes.name(at));
  return `/${parts.join('/')}`;
}

// Namespace operations: create, mkdir, readdir, unlink, rmdir and rename, and the inode life cycle behind them.
//
// Crash ordering. Each operation writes the primary state (an inode's type, parent, name, flags) so that one store
// commits it, and keeps the derived state (free lists, entry lists, counters) in step in whichever order turns a kill
// into a leak rather than a double use. The comments marked "commit point" are where an operation becomes true for
// the checker, which rebuilds the derived state from the primary state.
import { GuestmemfsError } from '../errors';
import { nowNs } from '../units';
import { checkMode, type MountContext } from './context';
import { FILE_TYPE_NAMES, FileType, FLAG_CONTIGUOUS, FLAG_ORPHAN, InodeType } from './inodes';
import { beginRename, endRename } from './intent';
import { RO_COMPAT_CONTIGUOUS, ROOT_INO } from './layout';
import { resolve, resolveExisting, resolveParent } from './names';
import { splitPath } from './paths';
import * as quota from './quota';
import { R_OK, W_OK, X_OK } from './permissions';
import type { CreateOptions, DirEntry, MkdirOptions } from './types';

/** Creates an empty file of the given type; returns its inode. */
export function create(ctx: MountContext, path: string, options: CreateOptions): number {
  ctx.requireWritable('open');
  const type = options.type ?? 'plain';
  const fileType = FILE_TYPE_NAMES.indexOf(type);
  if (fileType < 0)
    throw new GuestmemfsError('EINVAL', `file type "${type}" is not one of ${FILE_TYPE_NAMES.join(', ')}`, { syscall: 'open', path });
  const mode = checkMode(options.mode ?? (type === 'plain' ? 0o644 : 0o600), 'open', path);
  if (options.contiguous !== undefined && typeof options.contiguous !== 'boolean') {
    throw new GuestmemfsError('EINVAL', `contiguous must be true or false, got ${typeof options.contiguous}`, { syscall: 'open', path });
  }
  return createInode(ctx, path, 'open', InodeType.File, fileType, mode, options.contiguous ? FLAG_CONTIGUOUS : 0);
}

/** Creates a directory (with its parents and accepting one that exists, when recursive); returns its inode. */
export function mkdir(ctx: MountContext, path: string, options: MkdirOptions): number {
  ctx.requireWritable('mkdir');
  const mode = checkMode(options.mode ?? 0o755, 'mkdir', path);
  if (!options.recursive) return createInode(ctx, path, 'mkdir', InodeType.Directory, FileType.Plain, mode);
  let prefix = '';
  let ino = ROOT_INO;
  for (const part of splitPath(path, 'mkdir')) {
    prefix += `/${part}`;
    const existing = part === '..' ? ctx.inodes.parent(ino) : ctx.names.get(ino, part);
    if (existing === undefined) {
      ino = createInode(ctx, prefix, 'mkdir', InodeType.Directory, FileType.Plain, mode);
      continue;
    }
    if (ctx.inodes.type(existing) !== InodeType.Directory) {
      throw new GuestmemfsError('ENOTDIR', `not a directory, mkdir '${prefix}'`, { syscall: 'mkdir', path: prefix });
    }
    ctx.requireAccess(existing, X_OK, 'mkdir', prefix);
    ino = existing;
  }
  return ino;
}

/** A directory's entries, in the order of its entry list (newest first). */
export function readdirEntries(ctx: MountContext, path: string): DirEntry[] {
  ctx.requireMounted('scandir');
  const dir = resolve(ctx, path, 'scandir');
  if (ctx.inodes.type(dir) !== InodeType.Directory)
    throw new GuestmemfsError('ENOTDIR', `not a directory, scandir '${path}'`, { syscall: 'scandir', path });
  ctx.requireAccess(dir, R_OK, 'scandir', path);
  const entries: DirEntry[] = [];
  const inodes = ctx.inodes;
  for (let child = inodes.firstChild(dir), hops = 0; child !== 0 && hops < inodes.count; child = inodes.next(child), hops++) {
    entries.push({ name: inodes.name(child), ino: child, type: inodes.type(child) === InodeType.Directory ? 'directory' : 'file' });
  }
  return entries;
}

/** Removes a file's name; its blocks are freed now, or when its last mapping in this process goes. */
export function unlink(ctx: MountContext, path: string): void {
  ctx.requireWritable('unlink');
  const { parent, name, ino } = resolveExisting(ctx, path, 'unlink');
  if (ctx.inodes.type(ino) === InodeType.Directory) {
    throw new GuestmemfsError('EISDIR', `is a directory, unlink '${path}': use rmdir`, { syscall: 'unlink', path });
  }
  ctx.requireNotBusy(ino, 'unlink', path);
  ctx.requireAccess(parent, W_OK | X_OK, 'unlink', path);
  ctx.requireMayRemove(parent, ino, 'unlink', path);
  quota.detached(ctx, ino);
  detach(ctx, parent, name, ino);
  releaseIfUnpinned(ctx, ino);
}

export function rmdir(ctx: MountContext, path: string): void {
  ctx.requireWritable('rmdir');
  const { parent, name, ino } = resolveExisting(ctx, path, 'rmdir');
  const inodes = ctx.inodes;
  if (ino === ROOT_INO) throw new GuestmemfsError('EBUSY', 'the root directory cannot be removed', { syscall: 'rmdir', path });
  if (inodes.type(ino) !== InodeType.Directory)
    throw new GuestmemfsError('ENOTDIR', `not a directory, rmdir '${path}'`, { syscall: 'rmdir', path });
  if (inodes.firstChild(ino) !== 0) {
    throw new GuestmemfsError('ENOTEMPTY', `directory not empty, rmdir '${path}': remove its entries first`, { syscall: 'rmdir', path });
  }
  ctx.requireAccess(parent, W_OK | X_OK, 'rmdir', path);
  ctx.requireMayRemove(parent, ino, 'rmdir', path);
  detach(ctx, parent, name, ino);
  inodes.setNlink(parent, inodes.nlink(parent) - 1);
  releaseInode(ctx, ino);
}

/**
 * Moves `from` to `to` with POSIX rules: an existing file `to` is replaced by a file, an existing empty directory by
 * a directory; a directory cannot move into itself. The intent record makes it atomic across a kill.
 */
export function rename(ctx: MountContext, from: string, to: string): void {
  ctx.requireWritable('rename');
  const source = resolveExisting(ctx, from, 'rename');
  const target = resolveParent(ctx, to, 'rename');
  const inodes = ctx.inodes;
  const isDir = inodes.type(source.ino) === InodeType.Directory;
  if (source.ino === ROOT_INO)
    throw new GuestmemfsError('EBUSY', 'the root directory cannot be renamed', { syscall: 'rename', path: from });
  const victim = ctx.names.get(target.parent, target.name);
  if (victim === source.ino) return;
  if (isDir) {
    for (let dir = target.parent; ; dir = inodes.parent(dir)) {
      if (dir === source.ino)
        throw new GuestmemfsError('EINVAL', `cannot move directory '${from}' into itself ('${to}')`, { syscall: 'rename', path: to });
      if (dir === ROOT_INO) break;
    }
  }
  if (victim !== undefined) {
    const victimIsDir = inodes.type(victim) === InodeType.Directory;
    if (isDir && !victimIsDir)
      throw new GuestmemfsError('ENOTDIR', `not a directory, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
    if (!isDir && victimIsDir)
      throw new GuestmemfsError('EISDIR', `is a directory, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
    if (victimIsDir && inodes.firstChild(victim) !== 0) {
      throw new GuestmemfsError('ENOTEMPTY', `directory not empty, rename '${from}' -> '${to}'`, { syscall: 'rename', path: to });
    }
    ctx.requireNotBusy(victim, 'rename', to);
  }
  ctx.requireNotBusy(source.ino, 'rename', from);
  ctx.requireAccess(source.parent, W_OK | X_OK, 'rename', from);
  ctx.requireAccess(target.parent, W_OK | X_OK, 'rename', to);
  ctx.requireMayRemove(source.parent, source.ino, 'rename', from);
  if (victim !== undefined) ctx.requireMayRemove(target.parent, victim, 'rename', to);
  const quotaMove = quota.planMove(ctx, source.ino, source.parent, target.parent, 'rename', to);

  // 1. The intent record (commit point): from here a kill is rolled forward.
  const { intent, intentBytes } = ctx.views;
  beginRename(intent, intentBytes, { srcIno: source.ino, dstParent: target.parent, victimIno: victim ?? 0, nameBytes: target.nameBytes });
  // 2. The steps, each idempotent so that recovery can replay them from the record.
  const now = nowNs();
  if (victim !== undefined) {
    quota.detached(ctx, victim);
    detach(ctx, target.parent, target.name, victim);
    if (inodes.type(victim) === InodeType.Directory) inodes.setNlink(target.parent, inodes.nlink(target.parent) - 1);
  }
  unlinkChild(ctx, source.parent, source.ino);
  ctx.names.delete(source.parent, source.name, source.ino);
  inodes.setName(source.ino, target.nameBytes);
  inodes.setParent(source.ino, target.parent);
  linkChild(ctx, target.parent, source.ino);
  ctx.names.set(target.parent, target.name, source.ino);
  if (isDir && source.parent !== target.parent) {
    inodes.setNlink(source.parent, inodes.nlink(source.parent) - 1);
    inodes.setNlink(target.parent, inodes.nlink(target.parent) + 1);
  }
  for (const dir of new Set([source.parent, target.parent])) {
    inodes.setTime(dir, 'mtime', now);
    inodes.setTime(dir, 'ctime', now);
  }
  inodes.setTime(source.ino, 'ctime', now);
  quota.moved(ctx, quotaMove);
  // 3. Done: clear the record. The replaced file's blocks go now unless it is mapped.
  endRename(intent);
  if (victim !== undefined) releaseIfUnpinned(ctx, victim);
}

/** Allocates and initialises an inode, then links it: the type store is the commit point. */
function createInode(
  ctx: MountContext,
  path: string,
  syscall: string,
  type: InodeType,
  fileType: FileType,
  mode: number,
  flags = 0,
): number {
  const { parent, name, nameBytes } = resolveParent(ctx, path, syscall);
  if (ctx.names.has(parent, name)) throw new GuestmemfsError('EEXIST', `file already exists, ${syscall} '${path}'`, { syscall, path });
  ctx.requireAccess(parent, W_OK | X_OK, syscall, path);
  const { inodes, hints } = ctx.views;
  const ino = hints.freeInodeHead;
  if (ino === 0) {
    throw new GuestmemfsError(
      'ENOSPC',
      `no free inodes: all ${inodes.count - 1} are in use, ${syscall} '${path}'; delete files or mkfs with more inodes (--inodes)`,
      { syscall, path },
    );
  }
  if (!inodes.isValidIno(ino) || inodes.type(ino) !== InodeType.Free) {
    throw new GuestmemfsError(
      'EUCLEAN',
      `the free inode list is damaged (it names inode ${ino}, which is in use): unmount and run the checker with repair`,
      { syscall, path },
    );
  }
  // The feature bit before the first flag that needs it: a release that cannot keep files contiguous must not write.
  if (flags & FLAG_CONTIGUOUS && !(ctx.superblock.roCompat & RO_COMPAT_CONTIGUOUS)) {
    ctx.writeSuperblock({ roCompat: ctx.superblock.roCompat | RO_COMPAT_CONTIGUOUS });
  }
  // Pop from the free list first: a kill after this leaks a free inode, which the checker puts back.
  hints.freeInodeHead = inodes.nextFree(ino);
  hints.freeInodes -= 1;
  const generation = inodes.generation(ino) + 1;
  inodes.clear(ino);
  const now = nowNs();
  inodes.setGeneration(ino, generation);
  inodes.setFileType(ino, fileType);
  inodes.setMode(ino, mode);
  inodes.setUid(ino, ctx.credentials.uid);
  inodes.setGid(ino, ctx.credentials.gid);
  inodes.setNlink(ino, type === InodeType.Directory ? 2 : 1);
  if (flags) inodes.setFlags(ino, flags);
  for (const field of ['atime', 'mtime', 'ctime', 'btime'] as const) inodes.setTime(ino, field, now);
  inodes.setName(ino, nameBytes);
  inodes.setParent(ino, parent);
  inodes.setType(ino, type); // commit point: the name now exists
  linkChild(ctx, parent, ino);
  ctx.names.set(parent, name, ino);
  if (type === InodeType.Directory) inodes.setNlink(parent, inodes.nlink(parent) + 1);
  inodes.setTime(parent, 'mtime', now);
  inodes.setTime(parent, 'ctime', now);
  return ino;
}

/** Takes a name out of the namespace: the orphan flag is the commit point; the entry list and index follow. */
function detach(ctx: MountContext, parent: number, name: string, ino: number): void {
  const inodes = ctx.inodes;
  inodes.setNlink(ino, 0);
  inodes.setFlags(ino, inodes.flags(ino) | FLAG_ORPHAN); // commit point: the name is gone
  ctx.orphans.add(ino);
  unlinkChild(ctx, parent, ino);
  ctx.names.delete(parent, name, ino);
  const now = nowNs();
  inodes.setTime(parent, 'mtime', now);
  inodes.setTime(parent, 'ctime', now);
  inodes.setTime(ino, 'ctime', now);
}

/**
 * Frees an unlinked file unless some process still maps it: a mapping in this process, or a pin anyone holds over its
 * blocks. Otherwise it stays an orphan, named nowhere, until reclaimOrphans() finds it unpinned.
 */
export function releaseIfUnpinned(ctx: MountContext, ino: number): boolean {
  if (ctx.inUse(ino, ctx.fileRanges(ino))) {
    ctx.orphans.add(ino);
    return false;
  }
  // The last pin is gone: the file's consumers are told the whole file goes, and it waits for any in another process.
  ctx.notifiers.revoke(ino, ctx.inodes.size(ino));
  if (ctx.notifiers.unsettled(ino).length > 0) {
    ctx.orphans.add(ino);
    return false;
  }
  releaseInode(ctx, ino);
  return true;
}

/** Frees every orphan whose last pin has gone; returns how many. Cheap: one F_OFD_GETLK per extent of each orphan. */
export function reclaimOrphans(ctx: MountContext): number {
  if (ctx.readOnly || ctx.frozenAt !== undefined || !ctx.mounted) return 0;
  let freed = 0;
  for (const ino of [...ctx.orphans]) if (releaseIfUnpinned(ctx, ino)) freed++;
  return freed;
}

/** Frees an orphan's blocks and its inode: blocks turn dirty before the file lets go of them, the type store commits. */
export function releaseInode(ctx: MountContext, ino: number): void {
  const { inodes, extents, allocator, hints } = ctx.views;
  const runs = extents.read(ino);
  allocator.markDirty(runs, true);
  extents.truncate(ino, 0);
  allocator.markFree(runs);
  quota.released(ctx, ino);
  inodes.setBlockCount(ino, 0);
  inodes.setSize(ino, 0);
  inodes.setNextFree(ino, hints.freeInodeHead);
  inodes.setType(ino, InodeType.Free); // commit point: the inode is free
  ctx.notifiers.released(ino);
  hints.freeInodeHead = ino;
  hints.freeInodes += 1;
  ctx.mapped.delete(ino);
  ctx.orphans.delete(ino);
}

function linkChild(ctx: MountContext, parent: number, ino: number): void {
  const inodes = ctx.inodes;
  const first = inodes.firstChild(parent);
  inodes.setNext(ino, first);
  inodes.setPrev(ino, 0);
  if (first !== 0) inodes.setPrev(first, ino);
  inodes.setFirstChild(parent, ino);
}

function unlinkChild(ctx: MountContext, parent: number, ino: number): void {
  const inodes = ctx.inodes;
  const prev = inodes.prev(ino);
  const next = inodes.next(ino);
  if (prev !== 0) inodes.setNext(prev, next);
  else inodes.setFirstChild(parent, next);
  if (next !== 0) inodes.setPrev(next, prev);
  inodes.setNext(ino, 0);
  inodes.setPrev(ino, 0);
}

// Inode attributes: what stat and statfs report, and the changes chmod, chown and utimes make.
import { GuestmemfsError } from '../errors';
import { nowNs } from '../units';
import { checkMode, type MountContext } from './context';
import { FILE_TYPE_NAMES, FLAG_CONTIGUOUS, InodeType } from './inodes';
import { resolve } from './names';
import { totalBlocks } from './runs';
import type { Stat, StatFs } from './types';

export function statInode(ctx: MountContext, ino: number): Stat {
  const inodes = ctx.inodes;
  const isDir = inodes.type(ino) === InodeType.Directory;
  return {
    ino,
    generation: inodes.generation(ino),
    type: isDir ? 'directory' : 'file',
    fileType: isDir ? undefined : FILE_TYPE_NAMES[inodes.fileType(ino)],
    size: inodes.size(ino),
    blocks: inodes.blockCount(ino),
    blockSize: ctx.geometry.blockSize,
    extents: inodes.extentCount(ino),
    contiguous: (inodes.flags(ino) & FLAG_CONTIGUOUS) !== 0,
    mode: inodes.mode(ino),
    uid: inodes.uid(ino),
    gid: inodes.gid(ino),
    nlink: inodes.nlink(ino),
    atimeNs: inodes.time(ino, 'atime'),
    mtimeNs: inodes.time(ino, 'mtime'),
    ctimeNs: inodes.time(ino, 'ctime'),
    birthtimeNs: inodes.time(ino, 'btime'),
  };
}

export function statfs(ctx: MountContext): StatFs {
  ctx.requireMounted('statfs');
  const { allocator, hints } = ctx.views;
  return {
    blockSize: ctx.geometry.blockSize,
    pageSize: ctx.geometry.pageSize,
    totalBlocks: ctx.geometry.blockCount,
    dataBlocks: allocator.dataBlocks,
    freeBlocks: allocator.freeBlocks,
    dirtyFreeBlocks: totalBlocks(allocator.dirtyFreeRuns()),
    totalInodes: ctx.geometry.inodeCount - 1,
    freeInodes: hints.freeInodes,
  };
}

export function chmod(ctx: MountContext, path: string, mode: number): void {
  ctx.requireWritable('chmod');
  const ino = resolve(ctx, path, 'chmod');
  ctx.requireOwner(ino, 'chmod', path);
  ctx.inodes.setMode(ino, checkMode(mode, 'chmod', path));
  ctx.inodes.setTime(ino, 'ctime', nowNs());
}

/** Changes owner and/or group (-1 or undefined keeps one); only root may, as on Linux without CAP_CHOWN. */
export function chown(ctx: MountContext, path: string, uid: number | undefined, gid: number | undefined): void {
  ctx.requireWritable('chown');
  const ino = resolve(ctx, path, 'chown');
  for (const [what, id] of [
    ['uid', uid],
    ['gid', gid],
  ] as const) {
    if (id !== undefined && id !== -1 && (!Number.isInteger(id) || id < 0 || id > 0xfffffffe)) {
      throw new GuestmemfsError('EINVAL', `${what} ${id} is not a valid id`, { syscall: 'chown', path });
    }
  }
  if (ctx.credentials.uid !== 0) {
    throw new GuestmemfsError('EPERM', `operation not permitted, chown '${path}': only root (uid 0) may change ownership`, {
      syscall: 'chown',
      path,
    });
  }
  if (uid !== undefined && uid !== -1) ctx.inodes.setUid(ino, uid);
  if (gid !== undefined && gid !== -1) ctx.inodes.setGid(ino, gid);
  ctx.inodes.setTime(ino, 'ctime', nowNs());
}

/** Sets access and modification times, in nanoseconds since the epoch. */
export function utimes(ctx: MountContext, path: string, atimeNs: bigint, mtimeNs: bigint): void {
  ctx.requireWritable('utime');
  const ino = resolve(ctx, path, 'utime');
  for (const value of [atimeNs, mtimeNs]) {
    if (typeof value !== 'bigint' || value < 0n || value >= 1n << 64n) {
      throw new GuestmemfsError('EINVAL', 'times must be non-negative bigint nanoseconds', { syscall: 'utime', path });
    }
  }
  ctx.requireOwner(ino, 'utime', path);
  ctx.inodes.setTime(ino, 'atime', atimeNs);
  ctx.inodes.setTime(ino, 'mtime', mtimeNs);
  ctx.inodes.setTime(ino, 'ctime', nowNs());
}

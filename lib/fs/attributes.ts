// Inode attributes: what stat and statfs report, and the changes chmod, chown and utimes make.
import { GuestmemfsError } from '../errors';
import { nowNs } from '../units';
import { quarantinedIn } from './badblocks';
import { checkMode, type MountContext } from './context';
import { FILE_TYPE_NAMES, FLAG_CONTIGUOUS, InodeType } from './inodes';
import { resolve } from './names';
import * as quota from './quota';
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
    quarantinedBlocks: isDir ? 0 : quarantinedIn(ctx.views, ctx.superblock, ino),
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
    ...allocator.fragmentation(),
    quarantinedBlocks: ctx.superblock.badBlocks.length,
    maxBlocks: ctx.geometry.maxBlockCount,
    largePages: allocator.largeGroups(),
    largeFallbacks: ctx.largeFallbacks,
  };
}

export function chmod(ctx: MountContext, path: string, mode: number): void {
  ctx.requireWritable('chmod');
  const ino = resolve(ctx, path, 'chmod');
  ctx.requireOwner(ino, 'chmod', path);
  ctx.inodes.setMode(ino, checkMode(mode, 'chmod', path));
  ctx.inodes.setTime(ino, 'ctime', nowNs());
}

/**
 * Changes owner and/or group (-1 or undefined keeps one), with Linux's rules: root may give a file to anyone; its
 * owner may only change its group, to one the owner belongs to, and that clears the set-id bits of a file. The new
 * owner's quota must hold the file's blocks.
 */
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
  const inodes = ctx.inodes;
  const cred = ctx.credentials;
  const newUid = uid === undefined || uid === -1 ? inodes.uid(ino) : uid;
  const newGid = gid === undefined || gid === -1 ? inodes.gid(ino) : gid;
  if (cred.uid !== 0) {
    const refuse = (why: string): never => {
      throw new GuestmemfsError('EPERM', `operation not permitted, chown '${path}': ${why}`, { syscall: 'chown', path });
    };
    if (newUid !== inodes.uid(ino)) refuse('only root (uid 0) may give a file to another owner');
    if (cred.uid !== inodes.uid(ino)) refuse(`only the owner (uid ${inodes.uid(ino)}) or root may change its group`);
    if (newGid !== inodes.gid(ino) && newGid !== cred.gid && !cred.groups?.includes(newGid)) {
      refuse(`uid ${cred.uid} is not a member of group ${newGid}`);
    }
  }
  quota.requireRoom(
    ctx,
    ino,
    newUid === inodes.uid(ino) || inodes.type(ino) !== InodeType.File ? 0 : inodes.blockCount(ino),
    'chown',
    path,
    {
      uid: newUid,
      dirs: [],
    },
  );
  quota.chowned(ctx, ino, inodes.uid(ino), newUid);
  inodes.setUid(ino, newUid);
  inodes.setGid(ino, newGid);
  if (cred.uid !== 0 && inodes.type(ino) === InodeType.File) inodes.setMode(ino, inodes.mode(ino) & ~0o6000);
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

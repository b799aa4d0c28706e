// Block quotas: setting the limits (kept in the superblock's quota table), the usage they are held to, and the EDQUOT
// check every allocation passes: truncate, an extending write, a chown to another uid, a rename into a limited tree.
//
// Usage is never stored: it is derived from the inodes (a uid's files, orphans included, and the named files below a
// directory), once per mount when limits exist, then kept up to date by the operations that change block counts,
// owners or the tree. A kill therefore cannot leave usage and blocks disagreeing.
import { GuestmemfsError } from '../errors';
import { formatSize } from '../units';
import type { MountContext } from './context';
import { InodeType } from './inodes';
import { RO_COMPAT_QUOTA, ROOT_INO } from './layout';
import { pathOf, resolve } from './names';
import { MAX_QUOTA_LIMITS, type QuotaKind, type QuotaLimit } from './quota-table';

export type { QuotaKind, QuotaLimit } from './quota-table';

/** Whom a limit binds: a uid, or a directory (every named file below it, at any depth). */
export type QuotaTarget = { uid: number } | { dir: string };

export interface QuotaReport {
  kind: QuotaKind;
  /** The uid, or the directory's inode number. */
  id: number;
  /** The directory's path, for a directory limit. */
  path?: string;
  limitBlocks: number;
  usedBlocks: number;
  limitBytes: number;
  usedBytes: number;
}

/** Usage per uid, and per limited directory: what the limits are held to. */
interface Usage {
  byUid: Map<number, number>;
  byDir: Map<number, number>;
}

const usages = new WeakMap<MountContext, Usage>();

function limitsOf(ctx: MountContext): readonly QuotaLimit[] {
  return ctx.superblock.quotas;
}

/** A directory limit whose directory is still the one it was set on (same inode generation). */
function liveDirLimit(ctx: MountContext, limit: QuotaLimit): boolean {
  const inodes = ctx.inodes;
  return inodes.isValidIno(limit.id) && inodes.type(limit.id) === InodeType.Directory && inodes.generation(limit.id) === limit.generation;
}

/** The directories from ino's parent up to the root: ino's blocks count against each of them. */
function* ancestors(ctx: MountContext, ino: number): IterableIterator<number> {
  const inodes = ctx.inodes;
  for (let dir = inodes.parent(ino), hops = 0; hops < inodes.count; dir = inodes.parent(dir), hops++) {
    yield dir;
    if (dir === ROOT_INO || dir === 0) return;
  }
}

/** Blocks held by the named files at or below ino. */
function subtreeBlocks(ctx: MountContext, ino: number): number {
  const inodes = ctx.inodes;
  if (inodes.type(ino) !== InodeType.Directory) return inodes.blockCount(ino);
  let blocks = 0;
  for (let child = inodes.firstChild(ino), hops = 0; child !== 0 && hops < inodes.count; child = inodes.next(child), hops++) {
    blocks += subtreeBlocks(ctx, child);
  }
  return blocks;
}

/** Usage derived from the inodes: undefined while the pool has no limits (and then nothing is counted at all). */
function usage(ctx: MountContext): Usage | undefined {
  if (limitsOf(ctx).length === 0) return undefined;
  let known = usages.get(ctx);
  if (known) return known;
  known = { byUid: new Map(), byDir: new Map() };
  const inodes = ctx.inodes;
  for (const limit of limitsOf(ctx)) if (limit.kind === 'dir' && liveDirLimit(ctx, limit)) known.byDir.set(limit.id, 0);
  for (let ino = 1; ino < inodes.count; ino++) {
    if (inodes.type(ino) !== InodeType.File) continue;
    const blocks = inodes.blockCount(ino);
    known.byUid.set(inodes.uid(ino), (known.byUid.get(inodes.uid(ino)) ?? 0) + blocks);
    if (ctx.orphans.has(ino)) continue;
    for (const dir of ancestors(ctx, ino)) if (known.byDir.has(dir)) known.byDir.set(dir, known.byDir.get(dir)! + blocks);
  }
  usages.set(ctx, known);
  return known;
}

function remedy(target: string): string {
  return `free space there, or raise the limit (guestmemfs quota POOL ${target} SIZE)`;
}

function refuse(
  ctx: MountContext,
  who: string,
  target: string,
  used: number,
  limit: number,
  more: number,
  syscall: string,
  path: string,
): never {
  const size = (blocks: number) => formatSize(blocks * ctx.geometry.blockSize);
  throw new GuestmemfsError(
    'EDQUOT',
    `disk quota exceeded, ${syscall} '${path}': ${who} holds ${used} of its ${limit}-block limit (${size(used)} of ${size(limit)}) ` +
      `and this needs ${more} more; ${remedy(target)}`,
    { syscall, path },
  );
}

/**
 * Refuses (EDQUOT) `more` blocks for ino's owner `uid` (default: the file's) and, unless `dirs` says otherwise, for
 * the limited directories above the file. Changes nothing.
 */
export function requireRoom(
  ctx: MountContext,
  ino: number,
  more: number,
  syscall: string,
  path: string,
  options: { uid?: number; dirs?: Iterable<number> } = {},
): void {
  const known = usage(ctx);
  if (!known || more <= 0) return;
  const uid = options.uid ?? ctx.inodes.uid(ino);
  for (const limit of limitsOf(ctx)) {
    if (limit.kind !== 'uid' || limit.id !== uid) continue;
    const used = known.byUid.get(uid) ?? 0;
    if (used + more > limit.limitBlocks) refuse(ctx, `uid ${uid}`, `--uid ${uid}`, used, limit.limitBlocks, more, syscall, path);
  }
  for (const dir of options.dirs ?? ancestors(ctx, ino)) {
    const used = known.byDir.get(dir);
    if (used === undefined) continue;
    const limit = limitsOf(ctx).find((candidate) => candidate.kind === 'dir' && candidate.id === dir)!;
    refuseIfOver(ctx, dir, used, limit.limitBlocks, more, syscall, path);
  }
}

function refuseIfOver(ctx: MountContext, dir: number, used: number, limit: number, more: number, syscall: string, path: string): void {
  if (used + more > limit) refuse(ctx, `directory ${pathOf(ctx, dir)}`, `--dir ${pathOf(ctx, dir)}`, used, limit, more, syscall, path);
}

/** Counts `delta` blocks for a named file (its owner and the limited directories above it). */
export function charge(ctx: MountContext, ino: number, delta: number): void {
  const known = usages.get(ctx);
  if (!known || delta === 0) return;
  const uid = ctx.inodes.uid(ino);
  known.byUid.set(uid, (known.byUid.get(uid) ?? 0) + delta);
  if (ctx.orphans.has(ino)) return;
  for (const dir of ancestors(ctx, ino)) if (known.byDir.has(dir)) known.byDir.set(dir, known.byDir.get(dir)! + delta);
}

/** A file leaves the tree (unlink, or replaced by a rename): the directories above it stop counting its blocks. */
export function detached(ctx: MountContext, ino: number): void {
  const known = usages.get(ctx);
  if (!known) return;
  const blocks = ctx.inodes.blockCount(ino);
  for (const dir of ancestors(ctx, ino)) if (known.byDir.has(dir)) known.byDir.set(dir, known.byDir.get(dir)! - blocks);
}

/** A freed inode's blocks stop counting for its owner (the directories let go when it was detached). */
export function released(ctx: MountContext, ino: number): void {
  const known = usages.get(ctx);
  if (!known) return;
  const uid = ctx.inodes.uid(ino);
  known.byUid.set(uid, (known.byUid.get(uid) ?? 0) - ctx.inodes.blockCount(ino));
  known.byDir.delete(ino);
}

/**
 * The limited directories that a move of `ino` from under `from` to under `to` adds its blocks to, checked against
 * their limits first (EDQUOT); call `moved` with the result once the rename has happened.
 */
export function planMove(
  ctx: MountContext,
  ino: number,
  from: number,
  to: number,
  syscall: string,
  path: string,
): { gain: number[]; lose: number[]; blocks: number } | undefined {
  const known = usage(ctx);
  if (!known || from === to) return undefined;
  const blocks = subtreeBlocks(ctx, ino);
  const above = (dir: number) => new Set([dir, ...ancestors(ctx, dir)]);
  const source = above(from);
  const target = above(to);
  const gain = [...target].filter((dir) => !source.has(dir) && known.byDir.has(dir));
  const lose = [...source].filter((dir) => !target.has(dir) && known.byDir.has(dir));
  for (const dir of gain) {
    const limit = limitsOf(ctx).find((candidate) => candidate.kind === 'dir' && candidate.id === dir)!;
    refuseIfOver(ctx, dir, known.byDir.get(dir)!, limit.limitBlocks, blocks, syscall, path);
  }
  return { gain, lose, blocks };
}

export function moved(ctx: MountContext, plan: { gain: number[]; lose: number[]; blocks: number } | undefined): void {
  const known = usages.get(ctx);
  if (!known || !plan) return;
  for (const dir of plan.gain) known.byDir.set(dir, known.byDir.get(dir)! + plan.blocks);
  for (const dir of plan.lose) known.byDir.set(dir, known.byDir.get(dir)! - plan.blocks);
}

/** A chown moves a file's blocks from one uid's account to another's. */
export function chowned(ctx: MountContext, ino: number, from: number, to: number): void {
  const known = usages.get(ctx);
  if (!known || from === to || ctx.inodes.type(ino) !== InodeType.File) return;
  const blocks = ctx.inodes.blockCount(ino);
  known.byUid.set(from, (known.byUid.get(from) ?? 0) - blocks);
  known.byUid.set(to, (known.byUid.get(to) ?? 0) + blocks);
}

/**
 * Sets (or with null removes) a block limit. The limit is rounded down to whole blocks; one below current usage is
 * allowed, and refuses further growth. The first limit marks the pool RO_COMPAT_QUOTA in the same superblock write.
 */
export function setQuota(ctx: MountContext, target: QuotaTarget, limitBytes: number | null): void {
  ctx.requireWritable('quotactl');
  const label = 'uid' in target ? `uid ${target.uid}` : target.dir;
  let kind: QuotaKind;
  let id: number;
  let generation = 0;
  if ('uid' in target) {
    if (!Number.isInteger(target.uid) || target.uid < 0 || target.uid > 0xfffffffe) {
      throw new GuestmemfsError('EINVAL', `uid ${target.uid} is not a valid id`, { syscall: 'quotactl', path: label });
    }
    kind = 'uid';
    id = target.uid;
  } else {
    kind = 'dir';
    id = resolve(ctx, target.dir, 'quotactl');
    if (ctx.inodes.type(id) !== InodeType.Directory) {
      throw new GuestmemfsError('ENOTDIR', `not a directory, quotactl '${target.dir}': directory limits apply to directories`, {
        syscall: 'quotactl',
        path: target.dir,
      });
    }
    generation = ctx.inodes.generation(id);
  }
  ctx.requireRoot('quotactl', label, 'set quota limits');
  if (limitBytes !== null && (!Number.isSafeInteger(limitBytes) || limitBytes < 0)) {
    throw new GuestmemfsError('EINVAL', `limit ${limitBytes} must be a non-negative number of bytes, or null to remove it`, {
      syscall: 'quotactl',
      path: label,
    });
  }
  if (ctx.busy.size > 0) {
    throw new GuestmemfsError('EBUSY', `an asynchronous truncate is in flight, quotactl '${label}': await it first`, {
      syscall: 'quotactl',
      path: label,
    });
  }
  // Limits on removed directories (or reused inode numbers) are dropped whenever the table is rewritten.
  const kept = limitsOf(ctx).filter(
    (limit) => !(limit.kind === kind && limit.id === id) && (limit.kind === 'uid' || liveDirLimit(ctx, limit)),
  );
  if (limitBytes !== null)
    kept.push({ kind, id, generation, limitBlocks: Math.min(0xffffffff, Math.floor(limitBytes / ctx.geometry.blockSize)) });
  if (kept.length > MAX_QUOTA_LIMITS) {
    throw new GuestmemfsError('ENOSPC', `the quota table holds ${MAX_QUOTA_LIMITS} limits, quotactl '${label}': remove one first`, {
      syscall: 'quotactl',
      path: label,
    });
  }
  // The bit goes with the last limit: with no limits left, a release that knows nothing of them may write again.
  const roCompat = kept.length > 0 ? ctx.superblock.roCompat | RO_COMPAT_QUOTA : ctx.superblock.roCompat & ~RO_COMPAT_QUOTA;
  ctx.writeSuperblock({ quotas: kept, roCompat });
  usages.delete(ctx); // recounted on next use, against the new set of limits
}

/** Every limit with its usage. */
export function quotaReport(ctx: MountContext): QuotaReport[] {
  const known = usage(ctx);
  if (!known) return [];
  const blockSize = ctx.geometry.blockSize;
  return limitsOf(ctx)
    .filter((limit) => limit.kind === 'uid' || liveDirLimit(ctx, limit))
    .map((limit) => {
      const usedBlocks = (limit.kind === 'uid' ? known.byUid.get(limit.id) : known.byDir.get(limit.id)) ?? 0;
      return {
        kind: limit.kind,
        id: limit.id,
        ...(limit.kind === 'dir' ? { path: pathOf(ctx, limit.id) } : {}),
        limitBlocks: limit.limitBlocks,
        usedBlocks,
        limitBytes: limit.limitBlocks * blockSize,
        usedBytes: usedBlocks * blockSize,
      };
    });
}

/** Usage recounted from the inodes, for the tests to hold the running counts to. */
export function recountedUsage(ctx: MountContext): Usage | undefined {
  const running = usages.get(ctx);
  usages.delete(ctx);
  const fresh = usage(ctx);
  if (running) usages.set(ctx, running);
  return fresh;
}

// What a consumer of a file's memory can do through the filesystem: register a notifier, look up a page's physical
// frame and order (get_pfn), map the file as its consumer, and punch (discard) a range, which invalidates it.
import { GuestmemfsError } from '../errors';
import type { Mapping } from '../pool/mapping';
import { describeHolders } from '../pool/pins';
import { formatSize, nowNs } from '../units';
import type { MountContext } from './context';
import { resolve, resolveFileForWrite } from './names';
import {
  MEMFILE_F_UNRECLAIMABLE,
  MEMFILE_F_USER_INACCESSIBLE,
  type NotifierConsumer,
  type Registration,
  requireNotifierFlags,
  invalidateAndSettle,
  requireSettled,
} from './notifier';
import { R_OK, W_OK } from './permissions';
import type { FileMapOptions } from './types';
import { forEachRange, map, zeroFileRange } from './data';

/** A physical frame as get_pfn reports it: the frame number and the page's order (log2 of its 4 KiB frames). */
export interface PageFrame {
  pfn: bigint;
  order: number;
}

/** A registered consumer of one file's memory, in this process. */
export class MemfileNotifier {
  readonly #ctx: MountContext;
  readonly #registration: Registration;
  readonly path: string;

  /** @internal Use Filesystem.registerNotifier(). */
  constructor(ctx: MountContext, registration: Registration, path: string) {
    this.#ctx = ctx;
    this.#registration = registration;
    this.path = path;
  }

  get id(): number {
    return this.#registration.id;
  }

  get flags(): number {
    return this.#registration.flags;
  }

  /** False once unregistered, or once the file's blocks were released (its consumers were told and let go). */
  get registered(): boolean {
    return this.#ctx.notifiers.byId(this.#registration.id) === this.#registration;
  }

  /** The frame behind byte `offset` of the file and its order, as the kernel's get_pfn gives it. */
  getPfn(offset: number): PageFrame {
    this.#requireRegistered('get_pfn');
    return pageFrame(this.#ctx, this.#registration.ino, offset, this.path);
  }

  /** Maps the file as its consumer: allowed even when the file is user-inaccessible; mlocked when unreclaimable. */
  map(options: FileMapOptions = {}): Mapping {
    this.#requireRegistered('mmap');
    const lock = options.lock ?? (this.flags & MEMFILE_F_UNRECLAIMABLE) !== 0;
    return map(this.#ctx, this.path, { ...options, lock }, true);
  }

  unregister(): void {
    if (this.registered) this.#ctx.notifiers.unregister(this.#registration);
  }

  /**
   * @internal For a remote consumer's proxy (the mount service): the consumer acknowledged invalidations up to `seq`.
   * Returns whether it was told the whole file went: the file's release then waits for nothing more of it.
   */
  acknowledge(seq: number): boolean {
    this.#ctx.notifiers.acknowledge(this.#registration, seq);
    return this.#registration.revoked;
  }

  /** @internal The sequence number the consumer's proxy sends with the invalidation it is now telling. */
  get lastSeq(): number {
    return this.#registration.lastSeq;
  }

  #requireRegistered(syscall: string): void {
    if (!this.registered) {
      throw new GuestmemfsError('EINVAL', `notifier ${this.id} on '${this.path}' is no longer registered; register again`, {
        syscall,
        path: this.path,
      });
    }
  }
}

/**
 * Registers a consumer of the file at `path`. The caller needs read and write access to it, as the kernel's consumer
 * needs an fd open for both. A user-inaccessible registration is refused while anything maps the file.
 */
export function registerNotifier(ctx: MountContext, path: string, consumer: NotifierConsumer, flags: number): Registration {
  ctx.requireMounted('memfile_register_notifier');
  requireNotifierFlags(flags, path);
  if (typeof consumer?.invalidate !== 'function') {
    throw new TypeError('a notifier consumer needs an invalidate(start, end) function');
  }
  const ino = resolve(ctx, path, 'memfile_register_notifier');
  ctx.requireFile(ino, 'memfile_register_notifier', path);
  ctx.requireAccess(ino, R_OK | W_OK, 'memfile_register_notifier', path);
  if (flags & MEMFILE_F_USER_INACCESSIBLE) {
    const ranges = ctx.fileRanges(ino);
    if (ctx.inUse(ino, ranges)) {
      throw new GuestmemfsError(
        'EBUSY',
        `'${path}' is mapped (${describeHolders(ctx.pinHolders(ranges))}), memfile_register_notifier '${path}': ` +
          'a user-inaccessible file must not be mapped by anyone else; unmap it first',
        { syscall: 'memfile_register_notifier', path },
      );
    }
  }
  return ctx.notifiers.register(ino, flags, consumer);
}

/** The frame behind byte `offset` of file `ino`, read from this process's page map of the pool. */
export function pageFrame(ctx: MountContext, ino: number, offset: number, path: string): PageFrame {
  const size = ctx.inodes.size(ino);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) {
    throw new GuestmemfsError('EINVAL', `offset ${offset} is outside '${path}' (${size} bytes), get_pfn '${path}'`, {
      syscall: 'get_pfn',
      path,
    });
  }
  let poolOffset = -1;
  forEachRange(ctx, ino, offset, offset + 1, (at) => (poolOffset = at));
  const pageSize = ctx.pool.pageSize;
  const page = poolOffset - (poolOffset % pageSize);
  const data = ctx.dataMapping();
  let [frame] = data.physicalFrames(page, pageSize);
  if (frame === null) {
    // Not yet faulted into this process's view of the pool: a read brings the file's page in, allocating nothing new.
    void data.bytes(page, 1)[0];
    [frame] = data.physicalFrames(page, pageSize);
  }
  if (frame === null || frame === undefined) {
    throw new GuestmemfsError('EFAULT', `the page at ${offset} of '${path}' is not present in memory, get_pfn '${path}'`, {
      syscall: 'get_pfn',
      path,
    });
  }
  return { pfn: frame, order: Math.log2(pageSize / 4096) };
}

/** Checks a punch's range; returns the file and the byte range it covers, clamped to the file's blocks. */
function planPunch(ctx: MountContext, path: string, offset: number, length: number): { ino: number; start: number; end: number } {
  ctx.requireWritable('fallocate');
  const ino = resolveFileForWrite(ctx, path, 'fallocate');
  const blockSize = ctx.geometry.blockSize;
  for (const [name, value] of [
    ['offset', offset],
    ['length', length],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0 || value % blockSize !== 0) {
      throw new GuestmemfsError(
        'EINVAL',
        `${name} ${value} must be a non-negative multiple of the ${formatSize(blockSize)} block size, fallocate '${path}'`,
        { syscall: 'fallocate', path },
      );
    }
  }
  const end = Math.min(offset + length, ctx.inodes.blockCount(ino) * blockSize);
  return { ino, start: offset, end };
}

function requireUnpinned(ctx: MountContext, ino: number, start: number, end: number, path: string): void {
  const ranges = fileRangesWithin(ctx, ino, start, end);
  if (ranges.length > 0 && ctx.inUse(ino, ranges)) {
    throw new GuestmemfsError(
      'EBUSY',
      `file is mapped, fallocate '${path}': [${start}, ${end}) is ${describeHolders(ctx.pinHolders(ranges))}; ` +
        'unmap it there before punching (it would be zeroed under the mapping)',
      { syscall: 'fallocate', path },
    );
  }
}

/** The pool byte ranges behind [start, end) of a file. */
function fileRangesWithin(ctx: MountContext, ino: number, start: number, end: number): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  forEachRange(ctx, ino, start, end, (offset, _fileOffset, length) => out.push({ offset, length }));
  return out;
}

function zeroRanges(ctx: MountContext, ino: number, start: number, end: number): void {
  zeroFileRange(ctx, ino, start, end);
  const now = nowNs();
  ctx.inodes.setTime(ino, 'mtime', now);
  ctx.inodes.setTime(ino, 'ctime', now);
}

/**
 * fallocate(PUNCH_HOLE|KEEP_SIZE): discards [offset, offset + length) of a file, which then reads as zeros. The blocks
 * stay the file's (the pool is reserved once; a page given back to the kernel might not come back), but what they held
 * is gone, so the file's consumers are told first. Refused with EBUSY while any process maps the range.
 */
export function punch(ctx: MountContext, path: string, offset: number, length: number): void {
  const { ino, start, end } = planPunch(ctx, path, offset, length);
  if (end <= start) return;
  requireUnpinned(ctx, ino, start, end, path);
  ctx.notifiers.invalidate(ino, start, end);
  requireSettled(ctx, ino, 'fallocate', path);
  zeroRanges(ctx, ino, start, end);
}

/** punch(), waiting for consumers in other processes to acknowledge the invalidation first. */
export async function punchAsync(ctx: MountContext, path: string, offset: number, length: number): Promise<void> {
  const { ino, start, end } = planPunch(ctx, path, offset, length);
  if (end <= start) return;
  requireUnpinned(ctx, ino, start, end, path);
  await invalidateAndSettle(ctx, ino, start, end, 'fallocate', path);
  requireUnpinned(ctx, ino, start, end, path);
  zeroRanges(ctx, ino, start, end);
}

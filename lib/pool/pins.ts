// Pins: open-file-description read locks over byte ranges of the pool file, held by every process that maps them.
//
// The kernel keeps them, not guestmemfs: a pin lives as long as some fd referring to its open file description does,
// so it ends when its holder dies (SIGKILL included), survives execve when that fd is kept, and is untouched by a
// restart of whichever process owns the metadata. Before freeing, zeroing or reusing blocks the owner asks the kernel
// (F_OFD_GETLK) whether any description holds a lock over them. Locks on the description the owner asks through never
// conflict with its own question, so every pin, the owner's own mappings' included, is taken on a description of its
// own (a reopen of /proc/self/fd/N).
import * as fs from 'node:fs';
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import type { Extent } from './mapping';
import type { Pool } from './pool';
import { lockRanges } from './remap';

/** A live pin over a range of the pool: who holds it (the pids whose fds refer to its open file description). */
export interface PinHolder {
  offset: number;
  /** Bytes; Infinity when the lock runs to the end of the file. */
  length: number;
  /** Processes with an fd on the pinning description; empty when /proc does not show them to this user. */
  pids: number[];
}

/** A pin this process holds: one open file description with a read lock over each range. */
export class Pin {
  readonly ranges: readonly Extent[];
  #fd: number;

  private constructor(fd: number, ranges: readonly Extent[]) {
    this.#fd = fd;
    this.ranges = ranges;
  }

  /**
   * Pins ranges of the pool on a description of their own: `description`, an fd of the pool on a description nothing
   * else uses, which the pin takes over (what the mount service hands a client whose credentials cannot reopen the
   * pool), or else one opened here.
   */
  static take(pool: Pool, ranges: readonly Extent[], description?: number): Pin {
    const fd = description ?? native.fdReopen(pool.fd);
    try {
      const refused = lockRanges(
        fd,
        ranges.flatMap((range) => [range.offset, range.length]),
      );
      if (refused >= 0) {
        const range = ranges[refused]!;
        throw new GuestmemfsError('EBUSY', `[${range.offset}, +${range.length}) of the pool is write-locked by another process`, {
          syscall: 'fcntl',
          path: pool.label,
        });
      }
    } catch (error) {
      native.fdClose(fd);
      throw error;
    }
    return new Pin(fd, ranges);
  }

  /** The descriptor that holds the pin (for a mapping to own, or a program to inherit); -1 once released or handed off. */
  get fd(): number {
    return this.#fd;
  }

  /** Gives up the descriptor to a new owner (a mapping, which closes it when unmapped): this object no longer closes it. */
  handOff(): number {
    const fd = this.#fd;
    if (fd < 0) throw new GuestmemfsError('EINVAL', 'the pin was already released or handed off', { syscall: 'fcntl' });
    this.#fd = -1;
    return fd;
  }

  release(): void {
    if (this.#fd < 0) return;
    native.fdClose(this.#fd);
    this.#fd = -1;
  }
}

/** True when some description other than the pool's own holds a pin over any of the ranges (one F_OFD_GETLK each). */
export function isPinned(pool: Pool, ranges: readonly Extent[]): boolean {
  return ranges.some((range) => native.rangeConflict(pool.fd, range.offset, range.length) !== null);
}

/** Whether a pinned range overlaps any of ranges. */
export function overlaps(pin: { offset: number; length: number }, ranges: readonly Extent[]): boolean {
  return ranges.some((range) => range.offset < pin.offset + pin.length && pin.offset < range.offset + range.length);
}

/** Linux's dev_t as /proc prints it (major:minor in hex, then the inode) for the pool file. */
function lockKey(pool: Pool): string {
  const stat = fs.fstatSync(pool.fd);
  const dev = BigInt(stat.dev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${stat.ino}`;
}

/**
 * Every pin over the pool, with the processes holding it. OFD locks have no owner pid of their own (/proc/locks says
 * -1), so the holders are found by their fds: /proc/PID/fdinfo/FD lists the locks of the description FD refers to.
 * A pin that overlaps none of `within` (when given) is left out.
 */
export function pinHolders(pool: Pool, within?: readonly Extent[]): PinHolder[] {
  const key = lockKey(pool);
  const found = new Map<string, PinHolder>();
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return [];
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue; // gone, or not ours to look at
    }
    for (const fd of fds) {
      let info: string;
      try {
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      } catch {
        continue;
      }
      if (!info.includes('OFDLCK')) continue;
      for (const line of info.split('\n')) {
        // lock:	1: OFDLCK ADVISORY  READ -1 00:01:319 4194304 6291455
        const match = /^lock:\s+\d+:\s+OFDLCK\s+\S+\s+READ\s+-?\d+\s+(\S+)\s+(\d+)\s+(\d+|EOF)$/.exec(line);
        if (!match || match[1] !== key) continue;
        const offset = Number(match[2]);
        const length = match[3] === 'EOF' ? Infinity : Number(match[3]) - offset + 1;
        if (within && !overlaps({ offset, length }, within)) continue;
        const id = `${offset}:${length}`;
        const holder = found.get(id) ?? { offset, length, pids: [] };
        if (!holder.pids.includes(Number(pid))) holder.pids.push(Number(pid));
        found.set(id, holder);
      }
    }
  }
  return [...found.values()].sort((a, b) => a.offset - b.offset);
}

/** "pid 123 and pid 456 hold pins on [..]", for error messages that name who must let go. */
export function describeHolders(holders: readonly PinHolder[]): string {
  const pids = [...new Set(holders.flatMap((holder) => holder.pids))].sort((a, b) => a - b);
  if (pids.length === 0) return 'a process this user cannot see holds a pin on it';
  return `pinned by ${pids.map((pid) => `pid ${pid}`).join(', ')}`;
}

// Units: human byte sizes (parse "2G"/"512M"/"4K" like the CLI tools operators know, print "2 MiB"), elapsed
// milliseconds between monotonic clock stamps, and wall-clock nanoseconds for inode times.
import { GuestmemfsError } from './errors';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const suffixes: Record<string, number> = {
  '': 1,
  B: 1,
  K: KiB,
  KB: KiB,
  KIB: KiB,
  M: MiB,
  MB: MiB,
  MIB: MiB,
  G: GiB,
  GB: GiB,
  GIB: GiB,
  T: TiB,
  TB: TiB,
  TIB: TiB,
};

/** Parses "8G", "500M", "2MiB", "4096" (binary multiples, as truncate(1) does for K/M/G/T). */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw new GuestmemfsError('EINVAL', `size ${text} is not a non-negative integer`);
    return text;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const multiplier = match ? suffixes[match[2]!.toUpperCase()] : undefined;
  if (!match || multiplier === undefined) {
    throw new GuestmemfsError('EINVAL', `cannot parse size "${text}": use a number with an optional K, M, G or T suffix, e.g. 8G`);
  }
  const bytes = Number(match[1]) * multiplier;
  if (!Number.isSafeInteger(bytes)) throw new GuestmemfsError('EINVAL', `size "${text}" is not a whole number of bytes`);
  return bytes;
}

/** "2 MiB", "1 GiB", "1.5 GiB", "4 KiB", "512 B". */
export function formatSize(bytes: number): string {
  const units: Array<[number, string]> = [
    [TiB, 'TiB'],
    [GiB, 'GiB'],
    [MiB, 'MiB'],
    [KiB, 'KiB'],
  ];
  for (const [unit, name] of units) {
    if (bytes >= unit) {
      const value = bytes / unit;
      return `${Number.isInteger(value) ? value : value.toFixed(1)} ${name}`;
    }
  }
  return `${bytes} B`;
}

/** Milliseconds from one process.hrtime.bigint() stamp (CLOCK_MONOTONIC ns) to another, by default to now. */
export function elapsedMs(from: bigint, to: bigint = process.hrtime.bigint()): number {
  return Number(to - from) / 1e6;
}

/** Nanoseconds since the epoch, for inode times (performance's clock: one read, no Date object). */
export function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

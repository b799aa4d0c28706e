// Entry points only the benchmarks use (the native access probe, punching holes and refilling them, the live-mapping
// count): internal, kept out of the public API in index.ts.
import { GuestmemfsError } from './errors';
import { native } from './native';
import type { Mapping } from './pool/mapping';
import type { Pool } from './pool/pool';

export interface ProbeOptions {
  ops: number;
  seed?: number;
  /** Each address from the value read before: latency instead of throughput. */
  dependent?: boolean;
  offset?: number;
  length?: number;
}

/**
 * Times `ops` random 8-byte reads of a mapping's memory in native code, the loop the C baseline of bench:access runs
 * over a raw mmap: independent reads give throughput, `dependent` ones latency. Returns nanoseconds per read.
 */
export function probeRandomReads(mapping: Mapping, options: ProbeOptions): number {
  const fields = { syscall: 'mapProbe' };
  if (!mapping.mapped) throw new GuestmemfsError('EINVAL', 'the mapping was unmapped: map it again, mapProbe', fields);
  const { ops, seed = 1, dependent = false, offset = 0, length = mapping.length - offset } = options;
  for (const [name, value] of Object.entries({ ops, seed, offset, length })) {
    if (!Number.isSafeInteger(value) || value < 0) throw new GuestmemfsError('EINVAL', `${name} must be a non-negative integer`, fields);
  }
  if (offset % 8 !== 0 || length < 8 || offset + length > mapping.length) {
    throw new GuestmemfsError(
      'EINVAL',
      `probe range [${offset}, +${length}) must be 8-byte aligned, at least 8 bytes and inside the ${mapping.length}-byte mapping`,
      fields,
    );
  }
  return ops === 0 ? 0 : native.mapProbe(mapping.id, offset, length, ops, seed, dependent).ns / ops;
}

/** Gives a range of the pool file's pages back to the kernel (bench:zero's alternative to memset)... */
export function punchHole(pool: Pool, offset: number, length: number): void {
  native.filePunchHole(pool.fd, offset, length);
}

/** ...and takes fresh, zeroed pages for it again. */
export function allocateRange(pool: Pool, offset: number, length: number): void {
  native.fileAllocate(pool.fd, offset, length);
}

/** Mappings the addon holds in this process. */
export function liveMappings(): number {
  return native.liveMappings();
}

/**
 * The floor of a pool resize, for bench:resize: the same two syscalls on a bare file, nothing else. Growing is
 * ftruncate then fallocate of the new range (the kernel allocating and zeroing the pages); shrinking is ftruncate.
 */
export function resizeBareFile(fd: number, from: number, to: number): void {
  native.fileResize(fd, to);
  if (to > from) native.fileAllocate(fd, from, to - from);
}

/** A bare file for resizeBareFile: created (mode 0600, never an existing one) at `path`; close it with closeBareFile. */
export function createBareFile(path: string): number {
  return native.fileOpen(path, true, true, 0o600);
}

export function closeBareFile(fd: number): void {
  native.fdClose(fd);
}

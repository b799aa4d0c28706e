// The checksums of on-pool structures and of the handover blob: CRC-32 (IEEE), and the record hash of handover v2.
import * as zlib from 'node:zlib';

/** CRC-32 of bytes, continuing from `previous` (the CRC of the bytes before them) when given. */
export function crc32(bytes: Uint8Array, previous?: number): number {
  return (previous === undefined ? zlib.crc32(bytes) : zlib.crc32(bytes, previous)) >>> 0;
}

/**
 * The record hash (handover version 2): four 32-bit lanes fed 32-bit little-endian words in turn, word k of the
 * sequence to lane k mod 4, each step `lane = (lane XOR word) * multiplier mod 2^32`. Each step is a bijection of the
 * lane for a given word, so a change to any one word always changes the result, and a pair of changes cancels out
 * with odds of 2^-32 per lane. Four lanes: 128 bits of check, at no cost over two (both are bound by memory). It costs
 * about as much as reading the words: zlib's CRC-32 would cost a call per record, and reading whole records three
 * times the bytes (restore reads them from cold memory). The lanes run per group of 2048 inode numbers, from the
 * seeds XOR the group number, and the groups' lanes are summed (lib/handover/blob.ts has the exact words).
 */
export const RECORD_HASH = {
  seeds: [0x811c9dc5, 0x050c5d1f, 0x1b873593, 0xcc9e2d51],
  /** Odd, so that each step is a bijection: the four xxHash32 primes, which spread a word over the high bits. */
  multipliers: [0x9e3779b1 | 0, 0x85ebca77 | 0, 0xc2b2ae3d | 0, 0x27d4eb2f],
} as const;

/** A record hash's four lanes, as unsigned 32-bit numbers. */
export type RecordHash = readonly [number, number, number, number];

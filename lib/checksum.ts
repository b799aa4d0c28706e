// CRC-32 (IEEE), the checksum of every on-pool structure and of the handover blob, continued across buffers.
import * as zlib from 'node:zlib';

/** CRC-32 of bytes, continuing from `previous` (the CRC of the bytes before them) when given. */
export function crc32(bytes: Uint8Array, previous?: number): number {
  return (previous === undefined ? zlib.crc32(bytes) : zlib.crc32(bytes, previous)) >>> 0;
}

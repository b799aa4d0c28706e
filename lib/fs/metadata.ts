// Windows onto the metadata region: each structure asks for the bytes it needs, when it first needs them.
//
// One ArrayBuffer over the whole region would be simplest, but V8 answers every large external buffer with a full
// garbage collection, and a restore touches a few pages of a region that reaches ~90 MiB for a TiB pool.
import { native } from '../native';

export interface MetadataSource {
  /** Bytes [offset, offset + length) of the metadata region, aliasing the pool (writes go to the pool). */
  window(offset: number, length: number): Uint8Array;
}

/** Windows onto a mapping of the pool's metadata region: one small external ArrayBuffer each. */
export class MappedMetadata implements MetadataSource {
  constructor(private readonly mappingId: number) {}

  window(offset: number, length: number): Uint8Array {
    return new Uint8Array(native.mappingBuffer(this.mappingId, offset, length));
  }
}

/** Windows onto one ArrayBuffer holding the whole region (mkfs, and tests without a pool). */
export class BufferMetadata implements MetadataSource {
  constructor(private readonly buffer: ArrayBuffer) {}

  window(offset: number, length: number): Uint8Array {
    return new Uint8Array(this.buffer, offset, length);
  }
}

/** Views of a fixed-size record array, created a chunk at a time on first access. */
export class ChunkedRecords {
  readonly #u16: Uint16Array[] = [];
  readonly #u32: Uint32Array[] = [];
  readonly #u64: BigUint64Array[] = [];
  readonly #u8: Uint8Array[] = [];

  constructor(
    private readonly source: MetadataSource,
    private readonly baseOffset: number,
    private readonly recordSize: number,
    private readonly recordCount: number,
    /** log2 of records per chunk. */
    readonly shift: number,
  ) {}

  /** Loads chunk c and returns its index. */
  load(c: number): number {
    const perChunk = 1 << this.shift;
    const records = Math.min(perChunk, this.recordCount - c * perChunk);
    const bytes = this.source.window(this.baseOffset + c * perChunk * this.recordSize, records * this.recordSize);
    this.#u8[c] = bytes;
    this.#u16[c] = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
    this.#u32[c] = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    this.#u64[c] = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
    return c;
  }

  u16(record: number): Uint16Array {
    const c = record >>> this.shift;
    return this.#u16[c] ?? this.#u16[this.load(c)]!;
  }
  u32(record: number): Uint32Array {
    const c = record >>> this.shift;
    return this.#u32[c] ?? this.#u32[this.load(c)]!;
  }
  u64(record: number): BigUint64Array {
    const c = record >>> this.shift;
    return this.#u64[c] ?? this.#u64[this.load(c)]!;
  }
  u8(record: number): Uint8Array {
    const c = record >>> this.shift;
    return this.#u8[c] ?? this.#u8[this.load(c)]!;
  }

  /** The record's index inside its chunk. */
  local(record: number): number {
    return record & ((1 << this.shift) - 1);
  }

  /** The bytes of `count` consecutive records from `first`, one view for each chunk they span. */
  run(first: number, count: number): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    const perChunk = 1 << this.shift;
    for (let record = first; record < first + count;) {
      const taken = Math.min(first + count - record, perChunk - this.local(record));
      const start = this.local(record) * this.recordSize;
      pieces.push(this.u8(record).subarray(start, start + taken * this.recordSize));
      record += taken;
    }
    return pieces;
  }
}

// Flattened Device Tree (DTB version 17) writer and a strict reader: the container format KHO hands to the next kernel.
//
// A blob is: a 40-byte big-endian header, the memory reservation map ((u64 address, u64 size) pairs ending in 0,0),
// the structure block (BEGIN_NODE name / PROP len nameoff value / END_NODE / END tokens, 4-byte aligned), and the
// strings block (NUL-terminated property names). The reader checks every offset and length against the blob before it
// reads, so a torn or corrupted blob ends in an FdtError, never an out-of-range read or a hang.
export const FDT_MAGIC = 0xd00dfeed;
export const FDT_VERSION = 17;
const FDT_LAST_COMP_VERSION = 16;
const HEADER_SIZE = 40;
const TOKEN = { BEGIN_NODE: 1, END_NODE: 2, PROP: 3, NOP: 4, END: 9 } as const;

export class FdtError extends Error {
  constructor(
    readonly check: string,
    message: string,
  ) {
    super(message);
    this.name = 'FdtError';
  }
}

export interface FdtNode {
  name: string;
  /** Each property's value: a view into the parsed blob (copy it to keep it past a change to the blob). */
  props: Map<string, Uint8Array>;
  children: FdtNode[];
}

export interface FdtReservation {
  address: bigint;
  size: bigint;
}

export interface ParsedFdt {
  version: number;
  reservations: FdtReservation[];
  root: FdtNode;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string; names and property names are ASCII, for which TextEncoder's per-call cost dominates. */
function utf8(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return encoder.encode(text);
    out[i] = code;
  }
  return out;
}

/** Bytes appended at a cursor, growing by doubling: a blob of 100,000 inodes is one buffer, not 400,000 pushes. */
class ByteSink {
  #bytes = new Uint8Array(4096);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  /** Room for `count` more bytes; returns where they go. */
  reserve(count: number): number {
    const at = this.#length;
    if (at + count > this.#bytes.length) {
      let size = this.#bytes.length * 2;
      while (size < at + count) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#bytes.subarray(0, at));
      this.#bytes = grown;
    }
    this.#length = at + count;
    return at;
  }

  get bytes(): Uint8Array {
    return this.#bytes;
  }

  contents(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }
}

/** Builds a DTB with nodes and properties in the order they are added. */
export class FdtWriter {
  readonly #struct = new ByteSink();
  readonly #strings = new ByteSink();
  readonly #stringOffsets = new Map<string, number>();
  readonly #reservations: FdtReservation[] = [];
  #depth = 0;

  reserve(address: bigint, size: bigint): this {
    this.#reservations.push({ address, size });
    return this;
  }

  beginNode(name: string): this {
    this.#u32(TOKEN.BEGIN_NODE);
    this.#append(utf8(name), true);
    this.#depth++;
    return this;
  }

  endNode(): this {
    if (this.#depth === 0) throw new Error('FdtWriter: endNode without beginNode');
    this.#u32(TOKEN.END_NODE);
    this.#depth--;
    return this;
  }

  prop(name: string, value: Uint8Array): this {
    this.#propHeader(name, value.length);
    this.#append(value, false);
    return this;
  }

  /** The PROP token, the value's length and the name's offset in the strings block (added there once). */
  #propHeader(name: string, valueLength: number): void {
    let nameOffset = this.#stringOffsets.get(name);
    if (nameOffset === undefined) {
      const bytes = utf8(name);
      nameOffset = this.#strings.reserve(bytes.length + 1);
      this.#strings.bytes.set(bytes, nameOffset);
      this.#strings.bytes[nameOffset + bytes.length] = 0;
      this.#stringOffsets.set(name, nameOffset);
    }
    this.#u32(TOKEN.PROP);
    this.#u32(valueLength);
    this.#u32(nameOffset);
  }

  propString(name: string, value: string): this {
    const bytes = utf8(value);
    const withNul = new Uint8Array(bytes.length + 1);
    withNul.set(bytes);
    return this.prop(name, withNul);
  }

  /** A list of strings, each NUL-terminated (the DT "stringlist" type). */
  propStrings(name: string, values: readonly string[]): this {
    return this.prop(name, utf8(values.map((value) => `${value}\0`).join('')));
  }

  propU32(name: string, ...values: number[]): this {
    return this.prop(name, cellsU32(values));
  }

  propU64(name: string, ...values: Array<bigint | number>): this {
    return this.prop(name, cellsU64(values));
  }

  /**
   * A list of any length (a spread argument list overflows the stack past about 100,000 values), written into the
   * structure block in place: a 100,000-inode list is not built as a buffer of its own first.
   */
  propU32List(name: string, values: ArrayLike<number>): this {
    this.#propHeader(name, values.length * 4);
    const at = this.#struct.reserve(values.length * 4);
    writeCellsU32(new DataView(this.#struct.bytes.buffer, at, values.length * 4), values);
    return this;
  }

  propU64List(name: string, values: ArrayLike<bigint | number>): this {
    return this.prop(name, cellsU64(values));
  }

  finish(): Uint8Array {
    if (this.#depth !== 0) throw new Error('FdtWriter: unclosed nodes');
    this.#u32(TOKEN.END);
    const rsvSize = (this.#reservations.length + 1) * 16;
    const offRsv = HEADER_SIZE;
    const offStruct = offRsv + rsvSize;
    const offStrings = offStruct + this.#struct.length;
    const total = offStrings + this.#strings.length;
    const blob = new Uint8Array(total);
    const view = new DataView(blob.buffer);
    view.setUint32(0, FDT_MAGIC);
    view.setUint32(4, total);
    view.setUint32(8, offStruct);
    view.setUint32(12, offStrings);
    view.setUint32(16, offRsv);
    view.setUint32(20, FDT_VERSION);
    view.setUint32(24, FDT_LAST_COMP_VERSION);
    view.setUint32(28, 0); // boot_cpuid_phys
    view.setUint32(32, this.#strings.length);
    view.setUint32(36, this.#struct.length);
    this.#reservations.forEach((entry, index) => {
      view.setBigUint64(offRsv + index * 16, entry.address);
      view.setBigUint64(offRsv + index * 16 + 8, entry.size);
    });
    blob.set(this.#struct.contents(), offStruct);
    blob.set(this.#strings.contents(), offStrings);
    return blob;
  }

  #u32(value: number): void {
    const at = this.#struct.reserve(4);
    const bytes = this.#struct.bytes;
    bytes[at] = (value >>> 24) & 0xff;
    bytes[at + 1] = (value >>> 16) & 0xff;
    bytes[at + 2] = (value >>> 8) & 0xff;
    bytes[at + 3] = value & 0xff;
  }

  /** The bytes, a NUL if asked, then zeroes up to the next 4-byte boundary (a fresh reservation is already zero). */
  #append(value: Uint8Array, nulTerminate: boolean): void {
    const length = value.length + (nulTerminate ? 1 : 0);
    const at = this.#struct.reserve((length + 3) & ~3);
    this.#struct.bytes.set(value, at);
  }
}

export function cellsU32(values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  writeCellsU32(new DataView(out.buffer), values);
  return out;
}

/** Big-endian 32-bit cells of `values`, written from the start of `view`. */
function writeCellsU32(view: DataView, values: ArrayLike<number>): void {
  for (let index = 0; index < values.length; index++) view.setUint32(index * 4, values[index]!);
}

export function cellsU64(values: ArrayLike<bigint | number>): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  for (let index = 0; index < values.length; index++) {
    const value = values[index]!;
    if (typeof value === 'bigint') {
      view.setBigUint64(index * 8, value);
    } else {
      if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${value} is not a u64 cell value`);
      // Offsets and lengths are below 2^53: two cells, without a BigInt per value.
      view.setUint32(index * 8, Math.floor(value / 2 ** 32));
      view.setUint32(index * 8 + 4, value >>> 0);
    }
  }
  return out;
}

/** Parses and checks a DTB: header fields, every offset and size inside the blob, token stream well formed. */
export function parseFdt(blob: Uint8Array, limits: { maxNodes?: number } = {}): ParsedFdt {
  if (blob.length < HEADER_SIZE)
    throw new FdtError('truncated', `blob is ${blob.length} bytes, shorter than the ${HEADER_SIZE}-byte FDT header`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const magic = view.getUint32(0);
  if (magic !== FDT_MAGIC)
    throw new FdtError('magic', `not a flattened device tree: magic 0x${magic.toString(16)}, expected 0x${FDT_MAGIC.toString(16)}`);
  const total = view.getUint32(4);
  if (total > blob.length) throw new FdtError('truncated', `blob truncated: the header says ${total} bytes, ${blob.length} are there`);
  if (total < HEADER_SIZE) throw new FdtError('header', `header total size ${total} is smaller than the header`);
  const offStruct = view.getUint32(8);
  const offStrings = view.getUint32(12);
  const offRsv = view.getUint32(16);
  const version = view.getUint32(20);
  const lastComp = view.getUint32(24);
  const sizeStrings = view.getUint32(32);
  const sizeStruct = view.getUint32(36);
  if (version < FDT_LAST_COMP_VERSION || lastComp > FDT_VERSION) {
    throw new FdtError('version', `FDT version ${version} (compatible back to ${lastComp}) cannot be read as version ${FDT_VERSION}`);
  }
  const inside = (offset: number, size: number) => offset >= HEADER_SIZE && size >= 0 && offset + size <= total;
  if (!inside(offStruct, sizeStruct) || offStruct % 4 !== 0)
    throw new FdtError('header', `structure block [${offStruct}, +${sizeStruct}) lies outside the blob`);
  if (!inside(offStrings, sizeStrings))
    throw new FdtError('header', `strings block [${offStrings}, +${sizeStrings}) lies outside the blob`);
  if (!inside(offRsv, 16) || offRsv % 8 !== 0) throw new FdtError('header', `reservation map at ${offRsv} lies outside the blob`);

  const reservations: FdtReservation[] = [];
  for (let offset = offRsv; ; offset += 16) {
    if (offset + 16 > offStruct && offset + 16 > total) throw new FdtError('reservations', 'reservation map has no terminating entry');
    if (offset + 16 > total) throw new FdtError('reservations', 'reservation map runs past the end of the blob');
    const address = view.getBigUint64(offset);
    const size = view.getBigUint64(offset + 8);
    if (address === 0n && size === 0n) break;
    reservations.push({ address, size });
    if (reservations.length > 4096) throw new FdtError('reservations', 'reservation map has more than 4096 entries');
  }

  const end = offStruct + sizeStruct;
  let cursor = offStruct;
  const maxNodes = limits.maxNodes ?? 1_000_000;
  let nodes = 0;
  const readU32 = () => {
    if (cursor + 4 > end) throw new FdtError('structure', `structure block ends inside a token at offset ${cursor}`);
    const value = view.getUint32(cursor);
    cursor += 4;
    return value;
  };
  const readName = () => {
    const start = cursor;
    while (cursor < end && blob[cursor] !== 0) cursor++;
    if (cursor >= end) throw new FdtError('structure', `node name at offset ${start} is not terminated`);
    const name = decodeStrict(blob.subarray(start, cursor), 'structure', `node name at offset ${start}`);
    cursor = align4(cursor + 1);
    return name;
  };
  const stringAt = (nameOffset: number) => {
    if (nameOffset >= sizeStrings)
      throw new FdtError('strings', `property name offset ${nameOffset} is outside the ${sizeStrings}-byte strings block`);
    let stop = offStrings + nameOffset;
    while (stop < offStrings + sizeStrings && blob[stop] !== 0) stop++;
    if (stop >= offStrings + sizeStrings) throw new FdtError('strings', `property name at strings offset ${nameOffset} is not terminated`);
    return decodeStrict(blob.subarray(offStrings + nameOffset, stop), 'strings', `property name at strings offset ${nameOffset}`);
  };

  const stack: FdtNode[] = [];
  let root: FdtNode | undefined;
  for (;;) {
    const token = readU32();
    if (token === TOKEN.NOP) continue;
    if (token === TOKEN.BEGIN_NODE) {
      if (root && stack.length === 0) throw new FdtError('structure', 'a second root node follows the first');
      if (++nodes > maxNodes) throw new FdtError('structure', `more than ${maxNodes} nodes`);
      const node: FdtNode = { name: readName(), props: new Map(), children: [] };
      if (stack.length === 0) root = node;
      else stack.at(-1)!.children.push(node);
      stack.push(node);
    } else if (token === TOKEN.PROP) {
      if (stack.length === 0) throw new FdtError('structure', `property outside any node at offset ${cursor - 4}`);
      const length = readU32();
      const nameOffset = readU32();
      if (cursor + length > end)
        throw new FdtError('structure', `property value of ${length} bytes at offset ${cursor} runs past the structure block`);
      const name = stringAt(nameOffset);
      // A view, not a copy: a 100,000-inode live list is 400 KB, and a copy is as many fresh pages to fault in.
      stack.at(-1)!.props.set(name, blob.subarray(cursor, cursor + length));
      cursor = align4(cursor + length);
    } else if (token === TOKEN.END_NODE) {
      if (stack.length === 0) throw new FdtError('structure', `END_NODE without a node at offset ${cursor - 4}`);
      stack.pop();
    } else if (token === TOKEN.END) {
      if (stack.length !== 0 || !root) throw new FdtError('structure', 'END token before every node was closed');
      break;
    } else {
      throw new FdtError('structure', `unknown token 0x${token.toString(16)} at offset ${cursor - 4}`);
    }
  }
  return { version, reservations, root: root };
}

function align4(value: number): number {
  return (value + 3) & ~3;
}

function decodeStrict(bytes: Uint8Array, check: string, what: string): string {
  let ascii = '';
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! >= 0x80) break;
    ascii += String.fromCharCode(bytes[i]!);
    if (i === bytes.length - 1) return ascii;
  }
  if (bytes.length === 0) return '';
  try {
    return decoder.decode(bytes);
  } catch {
    throw new FdtError(check, `${what} is not valid UTF-8`);
  }
}

export function child(node: FdtNode, name: string): FdtNode | undefined {
  return node.children.find((candidate) => candidate.name === name);
}

// The volatile name index: directory -> name -> inode, keyed by a hash of each name's UTF-8 bytes so that a mount
// (above all a restore from a handover) builds it from the inode table without decoding a single name.
//
// A hash is not a name: every hit is confirmed against the inode's own name bytes, and names whose hashes collide
// share a bucket.
import { hugeArray, releaseHugeArray } from '../pool/anonymous';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a, 32 bits, over bytes [start, end) of `bytes`. */
function fnv1a(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let hash = FNV_OFFSET;
  for (let at = start; at < end; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
  return hash >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/**
 * The index's hash of a name as an inode stores it, bytes [start, end): FNV-1a over them. A name that is not ASCII is
 * hashed as the string it reads as (readdir's view of it, and what a lookup asks for): the same bytes when it is valid
 * UTF-8, and for one that is not (only damage makes one), the replacement characters it decodes to.
 */
export function hashStoredName(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let hash = FNV_OFFSET;
  let seen = 0;
  // No branch in the loop: V8 runs it several times faster than one that leaves at the first byte above 0x7f.
  for (let at = start; at < end; at++) {
    const byte = bytes[at]!;
    seen |= byte;
    hash = Math.imul(hash ^ byte, FNV_PRIME);
  }
  return seen > 0x7f ? hashName(decoder.decode(bytes.subarray(start, end))) : hash >>> 0;
}

/** The UTF-8 bytes of a name: none for ASCII, which hashes and compares as it is (every name a VMM makes). */
function nonAsciiBytes(name: string): Uint8Array | undefined {
  for (let at = 0; at < name.length; at++) if (name.charCodeAt(at) > 0x7f) return encoder.encode(name);
  return undefined;
}

function hashName(name: string): number {
  const bytes = nonAsciiBytes(name);
  if (bytes) return fnv1a(bytes);
  let hash = FNV_OFFSET;
  for (let at = 0; at < name.length; at++) hash = Math.imul(hash ^ name.charCodeAt(at), FNV_PRIME);
  return hash >>> 0;
}

/** Whether stored name bytes read as `name`, as readdir would show them. */
function sameName(stored: Uint8Array, name: string): boolean {
  for (let at = 0; at < stored.length; at++) if (stored[at]! > 0x7f) return decoder.decode(stored) === name;
  if (stored.length !== name.length) return false;
  for (let at = 0; at < name.length; at++) if (stored[at] !== name.charCodeAt(at)) return false;
  return true;
}

/** The slot a (directory, name hash) pair starts probing at, before masking. */
function keyOf(dir: number, hash: number): number {
  // murmur3's finaliser: FNV-1a's low bits, which pick the slot, cluster for names that differ only at their end.
  let key = hash ^ Math.imul(dir, 0x9e3779b1);
  key = Math.imul(key ^ (key >>> 16), 0x85ebca6b);
  key = Math.imul(key ^ (key >>> 13), 0xc2b2ae35);
  return (key ^ (key >>> 16)) | 0;
}

const INITIAL_SLOTS = 1024;

/**
 * An open-addressing table (linear probing, backward-shift deletion) of inode numbers in typed arrays: a mount inserts
 * 100,000 entries in about a millisecond, where a Map of strings took tens. A slot holds an inode and the key it was
 * inserted under; a hit is an inode whose key, parent and name bytes all match.
 */
export class NameIndex {
  /** Slot i is [2i] the inode (0: empty) and [2i + 1] its key, side by side: a probe reads one cache line. */
  #slots = hugeArray(Int32Array, 2 * INITIAL_SLOTS);
  #used = 0;
  /** The inode table a hit is confirmed against: each inode's parent and name bytes as they are now. */
  readonly #inodes: { nameBytes(ino: number): Uint8Array; parent(ino: number): number };

  constructor(inodes: { nameBytes(ino: number): Uint8Array; parent(ino: number): number }) {
    this.#inodes = inodes;
  }

  get size(): number {
    return this.#used;
  }

  get(dir: number, name: string): number | undefined {
    const key = keyOf(dir, hashName(name));
    const slots = this.#slots;
    const mask = slots.length / 2 - 1;
    for (let slot = key & mask; ; slot = (slot + 1) & mask) {
      const ino = slots[2 * slot]!;
      if (ino === 0) return undefined;
      if (slots[2 * slot + 1] === key && this.#inodes.parent(ino) === dir && sameName(this.#inodes.nameBytes(ino), name)) return ino;
    }
  }

  has(dir: number, name: string): boolean {
    return this.get(dir, name) !== undefined;
  }

  /** Adds an entry; the caller has made sure the directory holds no other entry of that name. */
  set(dir: number, name: string, ino: number): void {
    this.setHashed(dir, hashName(name), ino);
  }

  /** Adds an entry by its name's hash (hashStoredName of the inode's name bytes), as a mount does for every inode. */
  setHashed(dir: number, hash: number, ino: number): void {
    if ((this.#used + 1) * 4 > this.#slots.length) this.#resize(this.#slots.length);
    this.#insert(keyOf(dir, hash), ino);
    this.#used++;
  }

  /** Room for `entries` in all without growing on the way (a mount knows how many inodes it is about to index). */
  reserve(entries: number): void {
    let slots = this.#slots.length / 2;
    while (entries * 2 > slots) slots *= 2;
    if (slots > this.#slots.length / 2) this.#resize(slots);
  }

  /** Removes inode `ino`'s entry `name` in `dir` (the name it is indexed under, whatever its record says by now). */
  delete(dir: number, name: string, ino: number): void {
    const slots = this.#slots;
    const mask = slots.length / 2 - 1;
    let slot = keyOf(dir, hashName(name)) & mask;
    while (slots[2 * slot] !== ino) {
      if (slots[2 * slot] === 0) return;
      slot = (slot + 1) & mask;
    }
    // Backward shift: pull later entries of the run into the hole when their probe started at or before it.
    for (let next = (slot + 1) & mask; slots[2 * next] !== 0; next = (next + 1) & mask) {
      const home = slots[2 * next + 1]! & mask;
      if (((next - home) & mask) >= ((next - slot) & mask)) {
        slots[2 * slot] = slots[2 * next]!;
        slots[2 * slot + 1] = slots[2 * next + 1]!;
        slot = next;
      }
    }
    slots[2 * slot] = 0;
    this.#used--;
  }

  /**
   * Every named inode and the `others` given, ascending, for inode numbers below `limit`: a handover's live list. A
   * mark per inode and one pass in order, where sorting 100,000 numbers took ten times as long.
   */
  sortedWith(others: Iterable<number>, limit: number): Uint32Array {
    const marked = new Uint8Array(limit);
    const slots = this.#slots;
    let count = 0;
    for (let at = 0; at < slots.length; at += 2) {
      const ino = slots[at]!;
      count += ino !== 0 && marked[ino] === 0 ? 1 : 0;
      marked[ino] = 1;
    }
    for (const ino of others) {
      count += marked[ino] === 0 ? 1 : 0;
      marked[ino] = 1;
    }
    // Read up to the last marked inode only: a few files in a large table cost a few steps, not the whole table.
    const out = new Uint32Array(count);
    for (let ino = 1, at = 0; at < count && ino < limit; ino++) if (marked[ino] === 1) out[at++] = ino;
    return out;
  }

  #insert(key: number, ino: number): void {
    const slots = this.#slots;
    const mask = slots.length / 2 - 1;
    let slot = key & mask;
    while (slots[2 * slot] !== 0) slot = (slot + 1) & mask;
    slots[2 * slot] = ino;
    slots[2 * slot + 1] = key;
  }

  /** Rehashes into `count` slots (a power of two). */
  #resize(count: number): void {
    const old = this.#slots;
    this.#slots = hugeArray(Int32Array, 2 * count);
    for (let at = 0; at < old.length; at += 2) if (old[at] !== 0) this.#insert(old[at + 1]!, old[at]!);
    releaseHugeArray(old);
  }

  /** Gives the table's memory back (the mount is over) and leaves the index empty. */
  release(): void {
    const old = this.#slots;
    this.#used = 0;
    if (old.length === 2 * INITIAL_SLOTS) {
      old.fill(0);
      return;
    }
    this.#slots = hugeArray(Int32Array, 2 * INITIAL_SLOTS);
    releaseHugeArray(old);
  }
}

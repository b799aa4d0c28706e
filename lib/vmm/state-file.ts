// The VMM state file's layout, version 3: a handover area of words at its start, one slot per vCPU after it, then
// the JSON of the rest of the VMM's state. A sender's vCPU threads save themselves into their slots and the last one
// publishes them (native/gmfs_kvm.cpp); a successor's vCPU threads load from them, each in parallel with the others,
// so a transfer-mode blackout waits for no JavaScript. The JSON is published apart, after the vCPUs, and read by the
// successor once its guest runs.
//
//   0  u32 vcpusMagic "GVCS"   4 u32 vcpuCount   8 u32 slotBytes   12 u32 saved   16 u32 restored   20 u32 failed
//   24 u64 publishedNs (CLOCK_MONOTONIC, set before vcpusMagic)   32 u32 jsonMagic "VMM3"   36 u32 jsonLength
//   40 u32 committed   4096: vcpuCount slots of slotBytes   then: jsonLength bytes of JSON
import { GuestmemfsError } from '../errors';
import { native } from '../native';
import type { Mapping } from '../pool/mapping';

const VCPUS_MAGIC = 0x53435647; // "GVCS"
const JSON_MAGIC = 0x334d4d56; // "VMM3"
/** A slot's first word once it holds a vCPU's state (the native SavedState's magic, "GVCP"). */
const SLOT_MAGIC = 0x47564350;
const SLOTS_OFFSET = 4096;
const WORD = { vcpusMagic: 0, vcpuCount: 1, slotBytes: 2, saved: 3, restored: 4, failed: 5, jsonMagic: 8, jsonLength: 9, committed: 10 };
const PUBLISHED_NS_OFFSET = 24;
const JSON_MAGIC_OFFSET = 32;

/** What the state file is read through: a Mapping, or a bare native mapping (the exec-mode launcher's early resume). */
export type StateBytes = Pick<Mapping, 'id' | 'length' | 'bytes'>;

export class StateFile<M extends StateBytes = Mapping> {
  readonly mapping: M;
  readonly path: string;
  readonly #words: Int32Array;
  readonly #view: DataView;

  constructor(mapping: M, path: string) {
    this.mapping = mapping;
    this.path = path;
    const header = mapping.bytes(0, 64);
    this.#words = new Int32Array(header.buffer, header.byteOffset, 16);
    this.#view = new DataView(header.buffer, header.byteOffset, 64);
  }

  /** Bytes the file needs for `vcpus` slots and a JSON part of `jsonBytes`. */
  static bytesFor(vcpus: number, jsonBytes: number): number {
    return SLOTS_OFFSET + vcpus * native.kvmStateBytes() + jsonBytes;
  }

  /**
   * Empties the area for the next handover and says how many slots it has: a state left from an earlier update must
   * not pass for the coming one. The magics go first, so that nobody reads a half-cleared area as published.
   */
  clear(vcpus: number): void {
    Atomics.store(this.#words, WORD.vcpusMagic, 0);
    Atomics.store(this.#words, WORD.jsonMagic, 0);
    for (const word of [WORD.saved, WORD.restored, WORD.failed, WORD.jsonLength, WORD.committed]) Atomics.store(this.#words, word, 0);
    for (let index = 0; index < vcpus; index++) this.#slotMagic(index)[0] = 0;
    Atomics.store(this.#words, WORD.vcpuCount, vcpus);
    Atomics.store(this.#words, WORD.slotBytes, native.kvmStateBytes());
  }

  get vcpuCount(): number {
    return Atomics.load(this.#words, WORD.vcpuCount);
  }

  /** The vCPUs' states are all in their slots. */
  get vcpusPublished(): boolean {
    return Atomics.load(this.#words, WORD.vcpusMagic) === VCPUS_MAGIC;
  }

  get jsonPublished(): boolean {
    return Atomics.load(this.#words, WORD.jsonMagic) === JSON_MAGIC;
  }

  /** When the vCPUs were published (CLOCK_MONOTONIC ns). */
  get publishedNs(): bigint {
    return this.#view.getBigUint64(PUBLISHED_NS_OFFSET, true);
  }

  /** Whether slot `index` holds a vCPU's state (a vCPU thread that failed to save leaves it empty). */
  slotFilled(index: number): boolean {
    return this.#slotMagic(index)[0] === SLOT_MAGIC;
  }

  slot(index: number): Uint8Array {
    const bytes = native.kvmStateBytes();
    return this.mapping.bytes(SLOTS_OFFSET + index * bytes, bytes);
  }

  /** Publishes the slots from this thread (for what no vCPU thread published: exec mode, a fallback). */
  publishVcpus(): bigint {
    const at = process.hrtime.bigint();
    Atomics.store(this.#words, WORD.saved, this.vcpuCount);
    this.#view.setBigUint64(PUBLISHED_NS_OFFSET, at, true);
    Atomics.store(this.#words, WORD.vcpusMagic, VCPUS_MAGIC);
    native.futexWake(this.mapping.id, 0);
    return at;
  }

  /** Writes and publishes the JSON part; ENOSPC if the file is too small for it (the caller grows it first). */
  publishJson(json: Uint8Array): void {
    const offset = SLOTS_OFFSET + this.vcpuCount * native.kvmStateBytes();
    if (offset + json.length > this.mapping.length) {
      throw new GuestmemfsError(
        'ENOSPC',
        `${this.path}: the VMM state needs ${offset + json.length} bytes, the file has ${this.mapping.length}`,
        {
          path: this.path,
        },
      );
    }
    this.mapping.bytes(offset, json.length).set(json);
    Atomics.store(this.#words, WORD.jsonLength, json.length);
    Atomics.store(this.#words, WORD.jsonMagic, JSON_MAGIC);
    native.futexWake(this.mapping.id, JSON_MAGIC_OFFSET);
  }

  /** The JSON part, once published; EINVAL when the file holds none. */
  json(): Uint8Array {
    if (!this.jsonPublished) throw new GuestmemfsError('EINVAL', `${this.path} holds no saved VMM state`, { path: this.path });
    const offset = SLOTS_OFFSET + this.vcpuCount * native.kvmStateBytes();
    const length = Atomics.load(this.#words, WORD.jsonLength);
    if (offset + length > this.mapping.length)
      throw new GuestmemfsError('EUCLEAN', `${this.path}: saved VMM state is truncated`, { path: this.path });
    return this.mapping.bytes(offset, length);
  }

  /**
   * Waits until `what` is published: busy-waiting with a CPU to spare (it notices within a microsecond), or asleep on
   * the word as a futex, which the publisher wakes (`sleep`: when the guest's vCPUs need every CPU). Asks `abandoned`
   * every few thousand turns or milliseconds; ECANCELED when it says the publisher is gone, ETIMEDOUT after timeoutMs.
   */
  waitFor(what: 'vcpus' | 'json', options: { timeoutMs?: number; abandoned?: () => boolean; sleep?: boolean } = {}): void {
    const word = what === 'vcpus' ? WORD.vcpusMagic : WORD.jsonMagic;
    const magic = what === 'vcpus' ? VCPUS_MAGIC : JSON_MAGIC;
    const deadline = process.hrtime.bigint() + BigInt(options.timeoutMs ?? 10_000) * 1_000_000n;
    for (let turn = 1; Atomics.load(this.#words, word) !== magic; turn++) {
      if (options.sleep) native.futexWait(this.mapping.id, word * 4, Atomics.load(this.#words, word) >>> 0, 5);
      else if ((turn & 0xfff) !== 0) continue;
      if (Atomics.load(this.#words, word) === magic) return;
      if (options.abandoned?.()) {
        throw new GuestmemfsError('ECANCELED', `${this.path}: the VMM that was to save the guest's state is gone; nothing to resume here`, {
          path: this.path,
        });
      }
      if (process.hrtime.bigint() > deadline) {
        throw new GuestmemfsError(
          'ETIMEDOUT',
          `${this.path}: no saved state arrived within ${options.timeoutMs ?? 10_000} ms; the running VMM did not pause its guest`,
          { path: this.path },
        );
      }
    }
  }

  #slotMagic(index: number): Uint32Array {
    const slot = this.mapping.bytes(SLOTS_OFFSET + index * native.kvmStateBytes(), 4);
    return new Uint32Array(slot.buffer, slot.byteOffset, 1);
  }
}

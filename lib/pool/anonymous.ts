// Typed arrays on transparent huge pages of their own, for the large tables a mount builds (the name index, a
// handover's live list): freshly allocated memory costs a page fault per 4 KiB on first touch, one per 2 MiB here.
import { native } from '../native';

/** An array from this size up gets transparent huge pages of its own; below it, the JS heap's memory. */
export const HUGE_ARRAY_BYTES = 256 * 1024;
const HUGE_PAGE_BYTES = 2 * 1024 * 1024;

/** The mapping behind each huge array's buffer, for releaseHugeArray. */
const mappingOf = new WeakMap<ArrayBuffer, number>();

// A buffer nothing refers to any more gives its memory back: the registry holds the buffer weakly, the mapping id not.
const unmapWhenCollected = new FinalizationRegistry<number>((id) => {
  try {
    native.unmap(id, true);
  } catch {
    // Already unmapped by environment teardown.
  }
});

type Kind = Int32ArrayConstructor | Uint32ArrayConstructor;

/**
 * A zeroed typed array of `length` elements. From HUGE_ARRAY_BYTES up its memory is an anonymous mapping of whole
 * 2 MiB pages advised MADV_HUGEPAGE: a fresh 2 MiB heap array costs 512 page faults on first touch (7 ms in a VM that
 * shadows page tables), a transparent huge page one. The memory goes when the array is collected, or at once with
 * releaseHugeArray.
 */
export function hugeArray<K extends Kind>(kind: K, length: number): InstanceType<K> {
  const bytes = length * kind.BYTES_PER_ELEMENT;
  if (bytes < HUGE_ARRAY_BYTES) return new kind(length) as InstanceType<K>;
  const id = native.mapAnonymous(Math.ceil(bytes / HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES, true);
  const buffer = native.mappingBuffer(id, 0, bytes);
  mappingOf.set(buffer, id);
  unmapWhenCollected.register(buffer, id, buffer);
  return new kind(buffer) as InstanceType<K>;
}

/** Gives a huge array's memory back now (nothing for a heap array): the array is detached, and reads as empty. */
export function releaseHugeArray(array: Int32Array | Uint32Array): void {
  const buffer = array.buffer as ArrayBuffer;
  const id = mappingOf.get(buffer);
  if (id === undefined) return;
  mappingOf.delete(buffer);
  unmapWhenCollected.unregister(buffer);
  native.unmap(id);
}

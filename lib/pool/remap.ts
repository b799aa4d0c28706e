// Mapping pool memory again in a new process image from the recipe the old image left: pinned first, then mapped as the
// old mapping was. It needs nothing but the addon, so that an exec-mode VMM can map guest RAM before it loads the rest.
import { GuestmemfsError } from '../errors';
import { native, type NativeMapResult } from '../native';
import type { Extent } from './mapping';

/** How a mapping was made: enough for another process image to make the same one (Mapping.recipe()). */
export interface MappingRecipe {
  /** [offset, length] pairs of the pool file, in mapping order. */
  extents: number[];
  /** native.mapFlags combined, as the mapping was made with. */
  flags: number;
  /** The pool's page size: what the extents and the address are aligned to. */
  alignment: number;
  /** Page-table sharing placement (see MapOptions.sharePageTables): 0 for the kernel's own placement. */
  congruence: number;
  /** A hybrid pool's: the pool offset its 1 GiB-page file starts at (mapFromRecipe needs that file's fd too). */
  largeFrom?: number | undefined;
}

/** [offset, length] pairs as the Extent objects a Mapping lists. */
export function extentsOfPairs(pairs: ArrayLike<number>): Extent[] {
  return Array.from({ length: pairs.length / 2 }, (_, index) => ({ offset: pairs[index * 2]!, length: pairs[index * 2 + 1]! }));
}

/** The bytes [offset, length] pairs cover. */
export function pairsLength(pairs: ArrayLike<number>): number {
  let total = 0;
  for (let pair = 1; pair < pairs.length; pair += 2) total += pairs[pair]!;
  return total;
}

/**
 * Read-locks each [offset, length] pair of `flat` on `fd`, a description of the pool nothing else uses: what every pin
 * is (see pins.ts). Returns the index of the first pair another description write-locks, or -1 when all are pinned.
 */
export function lockRanges(fd: number, flat: ArrayLike<number>): number {
  for (let pair = 0; pair < flat.length; pair += 2) {
    // Only a writer could refuse a reader, and guestmemfs never write-locks the pool.
    if (!native.rangeLock(fd, flat[pair]!, flat[pair + 1]!, false, false)) return pair / 2;
  }
  return -1;
}

/** Pins and maps a recipe's extents of the pool open on `poolFd`; the mapping owns the pin, as Pool.map's do. */
export function mapFromRecipe(poolFd: number, recipe: MappingRecipe, largeFd?: number): NativeMapResult {
  if (recipe.largeFrom !== undefined && largeFd === undefined) {
    throw new GuestmemfsError('EINVAL', "the recipe maps a hybrid pool's 1 GiB pages: pass that file's fd too", { syscall: 'mmap' });
  }
  const pin = native.fdReopen(poolFd);
  const result = new Float64Array(native.mapResult.slots);
  try {
    const refused = lockRanges(pin, recipe.extents);
    if (refused >= 0) {
      throw new GuestmemfsError('EBUSY', `extent ${refused} of the mapping is write-locked by another process; map it afresh`, {
        syscall: 'fcntl',
      });
    }
    const pairs = new Float64Array(recipe.extents);
    native.mapExtents(
      poolFd,
      pairs,
      recipe.flags,
      recipe.alignment,
      recipe.congruence,
      result,
      recipe.largeFrom === undefined ? undefined : largeFd,
      recipe.largeFrom,
    );
  } catch (error) {
    native.fdClose(pin);
    throw error;
  }
  native.mappingAttachPin(result[native.mapResult.id]!, pin);
  return readMapResult(result);
}

/** What native.mapExtents() wrote into `result`, by name. */
export function readMapResult(result: Float64Array): NativeMapResult {
  const slot = native.mapResult;
  return {
    id: result[slot.id]!,
    address: BigInt(result[slot.address]!),
    length: result[slot.length]!,
    mmapCalls: result[slot.mmapCalls]!,
    hugepageAdvice: result[slot.hugepageAdvice] === 1,
  };
}

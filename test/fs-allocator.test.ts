// The block allocator and the extent store on their own, over an in-memory metadata buffer, against simple models.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ExtentStore } from '../lib/fs/extents';
import { computeGeometry, EXTENTS_PER_PAGE, INLINE_EXTENTS } from '../lib/fs/layout';
import { BufferMetadata } from '../lib/fs/metadata';
import { type BlockRun, totalBlocks } from '../lib/fs/runs';
import { openViews } from '../lib/fs/views';

const BLOCK = 4096;

function views(blocks: number) {
  const geometry = computeGeometry(blocks * BLOCK, 4096, BLOCK, 64);
  const { allocator, extents, inodes } = openViews(new BufferMetadata(new ArrayBuffer(geometry.metadataBytes)), geometry);
  allocator.format();
  extents.format();
  return { geometry, allocator, extents, inodes };
}

const total = totalBlocks;

/** The maximal runs of free blocks in a boolean-array model (true: used). */
function modelFreeRuns(used: readonly boolean[]): BlockRun[] {
  const runs: BlockRun[] = [];
  used.forEach((isUsed, block) => {
    if (isUsed) return;
    const last = runs.at(-1);
    if (last && last.start + last.length === block) last.length++;
    else runs.push({ start: block, length: 1 });
  });
  return runs;
}

describe('block allocator against a boolean-array model', () => {
  it('hands out only free blocks, exactly as many as asked, the best-fitting run whenever one exists, and keeps its counters', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 40, max: 300 }),
        fc.array(fc.record({ take: fc.boolean(), size: fc.integer({ min: 1, max: 40 }), pick: fc.nat() }), { maxLength: 60, size: 'max' }),
        (blocks, steps) => {
          const { geometry, allocator } = views(blocks);
          const used = new Array<boolean>(blocks).fill(false).map((_, block) => block < geometry.metadataBlocks);
          const held: BlockRun[][] = [];
          for (const step of steps) {
            if (step.take || held.length === 0) {
              const free = used.filter((value) => !value).length;
              const runs = allocator.choose(step.size, -1);
              if (step.size > free) {
                expect(runs).toBeNull();
                continue;
              }
              expect(runs).not.toBeNull();
              expect(total(runs!)).toBe(step.size);
              const freeRuns = modelFreeRuns(used);
              const longestFree = Math.max(0, ...freeRuns.map((run) => run.length));
              expect(allocator.fragmentation()).toEqual({ freeRuns: freeRuns.length, largestFreeRun: longestFree });
              if (longestFree >= step.size) {
                // Best fit: the first of the smallest free runs that hold it all.
                const fits = freeRuns.filter((run) => run.length >= step.size);
                const best = fits.find((run) => run.length === Math.min(...fits.map((fit) => fit.length)))!;
                expect(runs).toEqual([{ start: best.start, length: step.size }]);
                expect(allocator.chooseContiguous(step.size, -1)).toEqual(runs);
              } else {
                expect(allocator.chooseContiguous(step.size, -1)).toBeNull();
              }
              for (const run of runs!) {
                for (let block = run.start; block < run.start + run.length; block++) {
                  expect(used[block]).toBe(false);
                  used[block] = true;
                }
              }
              allocator.markAllocated(runs!);
              held.push(runs!);
            } else {
              const [runs] = held.splice(step.pick % held.length, 1);
              for (const run of runs!) for (let block = run.start; block < run.start + run.length; block++) used[block] = false;
              allocator.markDirty(runs!, true);
              allocator.markFree(runs!);
            }
            for (let block = 0; block < blocks; block++) expect(allocator.isAllocated(block)).toBe(used[block]);
            expect(allocator.freeBlocks).toBe(used.filter((value) => !value).length);
            expect(allocator.count().allocated).toBe(used.filter(Boolean).length);
            expect(allocator.dirtyBlocks).toBe(allocator.count().dirty);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('grows in place after a given block when it can, and reports dirty blocks within runs', () => {
    const { geometry, allocator } = views(100);
    const first = geometry.metadataBlocks;
    allocator.markAllocated([{ start: first, length: 5 }]);
    expect(allocator.choose(3, first + 5)).toEqual([{ start: first + 5, length: 3 }]);
    allocator.markAllocated([{ start: first + 6, length: 1 }]);
    expect(allocator.choose(3, first + 5)).toEqual([{ start: first + 7, length: 3 }]);
    allocator.markDirty(
      [
        { start: first + 8, length: 2 },
        { start: first + 20, length: 1 },
      ],
      true,
    );
    expect(allocator.dirtyWithin([{ start: first + 7, length: 20 }])).toEqual([
      { start: first + 8, length: 2 },
      { start: first + 20, length: 1 },
    ]);
    expect(allocator.dirtyBlocks).toBe(3);
    allocator.markDirty([{ start: first + 8, length: 1 }], false);
    expect(allocator.dirtyBlocks).toBe(2);
    expect(allocator.dirtyFreeRuns()).toEqual([
      { start: first + 9, length: 1 },
      { start: first + 20, length: 1 },
    ]);
  });
});

describe('extent store', () => {
  it('keeps any number of extents in order (inline, then chained pages), merges contiguous ones, and truncates exactly', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 300, size: 'max' }),
        fc.nat(),
        (lengths, keepPick) => {
          const { extents, inodes } = views(2048);
          const ino = 2;
          // Non-adjacent runs (a gap of one block between each), then one adjacent run that must merge.
          const runs: BlockRun[] = [];
          let next = 100;
          for (const length of lengths) {
            runs.push({ start: next, length });
            next += length + 1;
          }
          extents.append(ino, runs);
          expect(extents.read(ino)).toEqual(runs);
          expect(inodes.extentCount(ino)).toBe(runs.length);
          expect(extents.chain(ino)).toHaveLength(ExtentStore.pagesFor(runs.length));
          const last = runs.at(-1)!;
          extents.append(ino, [{ start: last.start + last.length, length: 2 }]);
          expect(extents.read(ino).at(-1)).toEqual({ start: last.start, length: last.length + 2 });
          const blocks = total(extents.read(ino));
          const keep = keepPick % (blocks + 1);
          const before = extents.read(ino);
          const cut = extents.truncate(ino, keep);
          expect(total(extents.read(ino))).toBe(keep);
          expect(total(cut)).toBe(blocks - keep);
          // What is kept plus what was cut is exactly what there was.
          const flatten = (list: BlockRun[]) => list.flatMap((run) => Array.from({ length: run.length }, (_, i) => run.start + i));
          expect([...flatten(extents.read(ino)), ...flatten(cut)]).toEqual(flatten(before));
          expect(extents.chain(ino)).toHaveLength(ExtentStore.pagesFor(inodes.extentCount(ino)));
        },
      ),
      { numRuns: 150 },
    );
  });

  it('sizes pages so a file can hold an extent per block', () => {
    expect(ExtentStore.pagesFor(INLINE_EXTENTS)).toBe(0);
    expect(ExtentStore.pagesFor(INLINE_EXTENTS + 1)).toBe(1);
    expect(ExtentStore.pagesFor(INLINE_EXTENTS + EXTENTS_PER_PAGE + 1)).toBe(2);
  });
});

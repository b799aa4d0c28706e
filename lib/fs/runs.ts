// Runs of blocks: how extents, allocations and bitmap scans describe block sets, the few ways they are combined, and
// the pool byte range a run stands for.

export interface BlockRun {
  start: number;
  length: number;
}

/** Blocks in a list of runs. */
export function totalBlocks(runs: readonly BlockRun[]): number {
  let total = 0;
  for (const run of runs) total += run.length;
  return total;
}

/** Adds `length` blocks from `start` to the end of runs, growing the last run when they are adjacent (ascending scans). */
export function appendRun(runs: BlockRun[], start: number, length = 1): void {
  const last = runs.at(-1);
  if (last && last.start + last.length === start) last.length += length;
  else runs.push({ start, length });
}

/** The runs past the first `keep` blocks of a file whose extents are `runs`. */
export function cutAfter(runs: readonly BlockRun[], keep: number): BlockRun[] {
  const cut: BlockRun[] = [];
  let seen = 0;
  for (const run of runs) {
    if (seen >= keep) cut.push(run);
    else if (seen + run.length > keep) cut.push({ start: run.start + (keep - seen), length: run.length - (keep - seen) });
    seen += run.length;
  }
  return cut;
}

/** The bytes of the pool a run of blocks occupies. */
export function blockRange(geometry: { blockSize: number }, run: BlockRun): { offset: number; length: number } {
  return { offset: run.start * geometry.blockSize, length: run.length * geometry.blockSize };
}

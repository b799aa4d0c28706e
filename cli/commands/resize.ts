// guestmemfs resize: grow a pool into more memory, or give the free blocks at its end back, while it is in use.
import type { Command } from 'commander';
import { formatSize, parseSize } from '../../lib/units';
import { command, type Common, print, progressBar, usageError } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'resize',
    'grow the pool (new pages reserved now, up to its mkfs --max-size) or shrink it to free blocks at its end (root)',
    'sudo guestmemfs resize /dev/hugepages/pool +4G',
  )
    .argument('<pool>')
    .argument('<size>', 'the new size (8G), or a change to it (+4G, -2G); a multiple of the block size')
    .action((spec: string, sizeSpec: string, options: Common) =>
      withFilesystem(spec, async (gfs) => {
        const { blockSize, totalBlocks } = await gfs.statfs();
        const current = totalBlocks * blockSize;
        const size = newSize(sizeSpec, current);
        const onProgress = progressBar(options, 'allocating pages');
        const result = await ('resizeAsync' in gfs ? gfs.resizeAsync(size, { onProgress }) : gfs.resize(size));
        if (onProgress) process.stderr.write('\n');
        print(options, { pool: spec, ...result }, () =>
          options.quiet
            ? ''
            : result.blocks === 0
              ? `${spec}: already ${formatSize(result.to)}`
              : `${spec}: ${formatSize(result.from)} -> ${formatSize(result.to)} ` +
                `(${result.blocks > 0 ? `${result.blocks} blocks added` : `${-result.blocks} blocks given back`}, ` +
                `${result.ms.toFixed(1)} ms)`,
        );
      }),
    );
}

function newSize(spec: string, current: number): number {
  const sign = spec[0] === '+' ? 1 : spec[0] === '-' ? -1 : 0;
  let bytes: number;
  try {
    bytes = parseSize(sign === 0 ? spec : spec.slice(1));
  } catch {
    throw usageError(`"${spec}" is not a size (8G) or a change to one (+4G, -2G)`);
  }
  return sign === 0 ? bytes : current + sign * bytes;
}

// guestmemfs truncate: set file sizes (allocating or freeing blocks).
import type { Command } from 'commander';
import { parseSize } from '../../lib/units';
import { command, type Common } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'truncate',
    'set file sizes (allocating or freeing blocks)',
    'guestmemfs truncate -s 500M /dev/hugepages/pool /vms/vm0/ram',
  )
    .argument('<pool>')
    .argument('<paths...>')
    .requiredOption('-s, --size <size>', 'new size (K/M/G/T suffixes)')
    .action((spec: string, paths: string[], options: Common & { size: string }) => {
      const bytes = parseSize(options.size);
      return withFilesystem(spec, async (gfs) => {
        for (const target of paths) await gfs.truncate(target, bytes);
      });
    });
}

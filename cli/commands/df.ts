// guestmemfs df: free and used blocks and inodes.
import type { Command } from 'commander';
import { command, type Common, print, size } from '../common';
import { withView } from '../pools';

export function register(program: Command): void {
  command(program, 'df', 'free and used blocks and inodes', 'guestmemfs df -h /dev/hugepages/pool')
    .argument('<pool>')
    .option('-h, --human-readable', 'sizes like 2G')
    .action((spec: string, options: Common & { humanReadable?: boolean }) => {
      withView(spec, (gfs) => {
        const s = gfs.statfs();
        const total = s.dataBlocks * s.blockSize;
        const used = (s.dataBlocks - s.freeBlocks) * s.blockSize;
        print(options, s, () =>
          [
            ['Pool', 'Size', 'Used', 'Avail', 'Use%', 'Inodes', 'IFree'],
            [
              spec,
              size(total, options.humanReadable),
              size(used, options.humanReadable),
              size(total - used, options.humanReadable),
              `${Math.round((100 * used) / Math.max(1, total))}%`,
              String(s.totalInodes),
              String(s.freeInodes),
            ],
          ]
            .map(
              ([name, ...columns]) =>
                `${name!.padEnd(spec.length)} ${columns.map((column, index) => column.padStart([11, 11, 11, 5, 7, 6][index]!)).join(' ')}`,
            )
            .join('\n'),
        );
      });
    });
}

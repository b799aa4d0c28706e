// guestmemfs df: free and used blocks and inodes.
import type { Command } from 'commander';
import { command, type Common, fragmentationLine, print, quotaLines, size } from '../common';
import { withReader } from '../pools';

export function register(program: Command): void {
  command(program, 'df', 'free and used blocks and inodes', 'guestmemfs df -h /dev/hugepages/pool')
    .argument('<pool>')
    .option('-h, --human-readable', 'sizes like 2G')
    .action((spec: string, options: Common & { humanReadable?: boolean }) =>
      withReader(spec, async (gfs) => {
        const s = await gfs.statfs();
        const quotas = await gfs.quotas();
        const total = s.dataBlocks * s.blockSize;
        const used = (s.dataBlocks - s.freeBlocks) * s.blockSize;
        print(options, { ...s, quotas }, () =>
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
            .concat(`Free space: ${fragmentationLine(s, options.humanReadable)}`)
            .concat(
              s.maxBlocks > s.totalBlocks
                ? [`Growth:     up to ${size(s.maxBlocks * s.blockSize, options.humanReadable)} (guestmemfs resize)`]
                : [],
            )
            .concat(
              s.largePages.total > 0
                ? [
                    `1 GiB pages: ${s.largePages.free} of ${s.largePages.total} free` +
                      (s.largeFallbacks > 0 ? `; ${s.largeFallbacks} GiB fell back to 2 MiB pages since mount` : ''),
                  ]
                : [],
            )
            .concat(quotas.length > 0 ? quotaLines(quotas) : [])
            .join('\n'),
        );
      }),
    );
}

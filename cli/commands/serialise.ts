// guestmemfs serialise: serialise the filesystem for handover (KHO activate): it is frozen until abort or restore.
import type { Command } from 'commander';
import { command, type Common, print } from '../common';
import { withMount } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'serialise',
    'serialise the filesystem for handover (KHO activate): it is frozen until abort or restore',
    'guestmemfs serialise /dev/hugepages/pool --out handover.dtb',
  )
    .argument('<pool>')
    .option('--out <file>', 'also write the blob to a file')
    .action((spec: string, options: Common & { out?: string }) => {
      withMount(
        spec,
        (gfs) => {
          const result = gfs.serialise({ out: options.out });
          print(
            options,
            {
              generation: result.generation,
              bytes: result.blob.length,
              files: result.files,
              mappingBlocks: result.mappingBlocks,
              out: result.out ?? null,
            },
            () =>
              options.quiet
                ? ''
                : `${spec}: serialised at generation ${result.generation} (${result.blob.length}-byte blob, ${result.files} ` +
                  `inodes${result.out ? `, written to ${result.out}` : ''})`,
          );
        },
        { allowSerialised: true },
      );
    });
}

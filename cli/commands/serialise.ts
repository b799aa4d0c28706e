// guestmemfs serialise: serialise the filesystem for handover (KHO activate): it is frozen until abort or restore.
import type { Command } from 'commander';
import { command, type Common, print, usageError } from '../common';
import { servedOr, withMount } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'serialise',
    'serialise the filesystem for handover (KHO activate): it is frozen until abort or restore',
    'guestmemfs serialise /dev/hugepages/pool --out handover.dtb',
  )
    .argument('<pool>')
    .option('--out <file>', 'also write the blob to a file')
    .action((spec: string, options: Common & { out?: string }) =>
      // A served pool is serialised by its service (root only): its clients then see the freeze as EBUSY.
      servedOr(
        spec,
        async (client) => {
          if (options.out) throw usageError('--out is for a pool this command mounts; a served pool keeps its blob in the pool');
          report(spec, options, await client.serialise());
        },
        () =>
          withMount(
            spec,
            (gfs) => {
              const result = gfs.serialise({ out: options.out });
              report(spec, options, {
                generation: result.generation,
                bytes: result.blob.length,
                files: result.files,
                mappingBlocks: result.mappingBlocks,
                out: result.out,
              });
            },
            { allowSerialised: true },
          ),
      ),
    );
}

function report(
  spec: string,
  options: Common,
  result: { generation: bigint; bytes: number; files: number; mappingBlocks: number; out?: string },
): void {
  print(options, { ...result, out: result.out ?? null }, () =>
    options.quiet
      ? ''
      : `${spec}: serialised at generation ${result.generation} (${result.bytes}-byte blob, ${result.files} ` +
        `inodes${result.out ? `, written to ${result.out}` : ''})`,
  );
}

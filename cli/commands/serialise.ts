// guestmemfs serialise: serialise the filesystem for handover (KHO activate): it is frozen until abort or restore.
import type { Command } from 'commander';
import { HANDOVER_VERSIONS, type HandoverVersion, isHandoverVersion } from '../../lib/handover/blob';
import { command, type Common, print, usageError } from '../common';
import { servedOr, withMount } from '../pools';

function handoverVersion(text: string | undefined): HandoverVersion | undefined {
  if (text === undefined) return undefined;
  const version = Number(text);
  if (!isHandoverVersion(version)) throw usageError(`--handover-version must be one of ${HANDOVER_VERSIONS.join(', ')}, got ${text}`);
  return version;
}

export function register(program: Command): void {
  command(
    program,
    'serialise',
    'serialise the filesystem for handover (KHO activate): it is frozen until abort or restore',
    'guestmemfs serialise /dev/hugepages/pool --out handover.dtb',
  )
    .argument('<pool>')
    .option('--out <file>', 'also write the blob to a file')
    .option('--handover-version <n>', 'the blob version: 2 (default), or 1 for a successor of a release that reads only 1')
    .action((spec: string, options: Common & { out?: string; handoverVersion?: string }) => {
      const version = handoverVersion(options.handoverVersion);
      const asked = version === undefined ? {} : { handoverVersion: version };
      // A served pool is serialised by its service (root only): its clients then see the freeze as EBUSY.
      return servedOr(
        spec,
        async (client) => {
          if (options.out) throw usageError('--out is for a pool this command mounts; a served pool keeps its blob in the pool');
          report(spec, options, await client.serialise(asked));
        },
        () =>
          withMount(
            spec,
            (gfs) => {
              const result = gfs.serialise({ out: options.out, ...asked });
              report(spec, options, {
                generation: result.generation,
                bytes: result.blob.length,
                files: result.files,
                mappingBlocks: result.mappingBlocks,
                handoverVersion: result.handoverVersion,
                out: result.out,
              });
            },
            { allowSerialised: true },
          ),
      );
    });
}

function report(
  spec: string,
  options: Common,
  result: { generation: bigint; bytes: number; files: number; mappingBlocks: number; handoverVersion: number; out?: string },
): void {
  print(options, { ...result, out: result.out ?? null }, () =>
    options.quiet
      ? ''
      : `${spec}: serialised at generation ${result.generation} (handover version ${result.handoverVersion}, ${result.bytes}-byte ` +
        `blob, ${result.files} inodes${result.out ? `, written to ${result.out}` : ''})`,
  );
}

// guestmemfs abort: abort a handover (KHO abort): the filesystem can change again.
import type { Command } from 'commander';
import { command, type Common, note } from '../common';
import { servedOr, withMount } from '../pools';

export function register(program: Command): void {
  command(program, 'abort', 'abort a handover (KHO abort): the filesystem can change again', 'guestmemfs abort /dev/hugepages/pool')
    .argument('<pool>')
    .action((spec: string, options: Common) =>
      servedOr(
        spec,
        async (client) => {
          const generation = await client.abort();
          note(options, `${spec}: handover of generation ${generation} aborted`);
        },
        () =>
          // The pool is taken as it was handed over, still frozen, so that the abort is the one change made to it.
          withMount(
            spec,
            (gfs) => {
              if (!gfs.serialised) return note(options, `${spec}: was not serialised`);
              const generation = gfs.superblock.generation;
              gfs.abort();
              note(options, `${spec}: handover of generation ${generation} aborted`);
            },
            { allowSerialised: true, mount: { keepSerialised: true } },
          ),
      ),
    );
}

// guestmemfs touch: create empty files of a type (guest RAM, VMM state, plain).
import { type Command, Option } from 'commander';
import { command, type Common } from '../common';
import { withMount } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'touch',
    'create empty files of a type (guest RAM, VMM state, plain)',
    'guestmemfs touch --type guest /dev/hugepages/pool /vms/vm0/ram',
  )
    .argument('<pool>')
    .argument('<paths...>')
    .addOption(new Option('--type <type>', 'file type').choices(['guest', 'state', 'plain']).default('plain'))
    .action((spec: string, paths: string[], options: Common & { type: 'guest' | 'state' | 'plain' }) => {
      withMount(spec, (gfs) => {
        for (const target of paths) if (!gfs.exists(target)) gfs.create(target, { type: options.type });
      });
    });
}

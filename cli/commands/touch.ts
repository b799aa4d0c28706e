// guestmemfs touch: create empty files of a type (guest RAM, VMM state, plain).
import { type Command, Option } from 'commander';
import { command, type Common } from '../common';
import { withFilesystem } from '../pools';

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
    .option('--contiguous', 'keep the file in one extent (for a VMM that maps it by offset, such as QEMU)')
    .action((spec: string, paths: string[], options: Common & { type: 'guest' | 'state' | 'plain'; contiguous?: boolean }) =>
      withFilesystem(spec, async (gfs) => {
        for (const target of paths)
          if (!(await gfs.exists(target))) await gfs.create(target, { type: options.type, contiguous: options.contiguous === true });
      }),
    );
}

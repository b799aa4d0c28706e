// guestmemfs mkdir: create directories.
import type { Command } from 'commander';
import { command, type Common } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(program, 'mkdir', 'create directories', 'guestmemfs mkdir -p /dev/hugepages/pool /vms/vm0')
    .argument('<pool>')
    .argument('<paths...>')
    .option('-p, --parents', 'create parents, accept existing directories')
    .action((spec: string, paths: string[], options: Common & { parents?: boolean }) =>
      withFilesystem(spec, async (gfs) => {
        for (const target of paths) await gfs.mkdir(target, { recursive: options.parents });
      }),
    );
}

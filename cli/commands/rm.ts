// guestmemfs rm: remove files (-r: directories too).
import type { Command } from 'commander';
import * as path from 'node:path';
import { GuestmemfsError } from '../../lib/errors';
import { command, type Common } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(program, 'rm', 'remove files (-r: directories too)', 'guestmemfs rm -r /dev/hugepages/pool /vms/old')
    .argument('<pool>')
    .argument('<paths...>')
    .option('-r, --recursive', 'remove directories and their contents')
    .action((spec: string, paths: string[], options: Common & { recursive?: boolean }) =>
      withFilesystem(spec, async (gfs) => {
        const remove = async (target: string): Promise<void> => {
          if ((await gfs.stat(target)).type === 'directory') {
            if (!options.recursive)
              throw new GuestmemfsError('EISDIR', `is a directory, rm '${target}': use -r`, { syscall: 'unlink', path: target });
            for (const name of await gfs.readdir(target)) await remove(path.posix.join(target, name));
            await gfs.rmdir(target);
          } else await gfs.unlink(target);
        };
        for (const target of paths) await remove(target);
      }),
    );
}

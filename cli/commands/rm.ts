// guestmemfs rm: remove files (-r: directories too).
import type { Command } from 'commander';
import * as path from 'node:path';
import { GuestmemfsError } from '../../lib/errors';
import { command, type Common } from '../common';
import { withMount } from '../pools';

export function register(program: Command): void {
  command(program, 'rm', 'remove files (-r: directories too)', 'guestmemfs rm -r /dev/hugepages/pool /vms/old')
    .argument('<pool>')
    .argument('<paths...>')
    .option('-r, --recursive', 'remove directories and their contents')
    .action((spec: string, paths: string[], options: Common & { recursive?: boolean }) => {
      withMount(spec, (gfs) => {
        const remove = (target: string): void => {
          if (gfs.stat(target).type === 'directory') {
            if (!options.recursive)
              throw new GuestmemfsError('EISDIR', `is a directory, rm '${target}': use -r`, { syscall: 'unlink', path: target });
            for (const name of gfs.readdir(target)) remove(path.posix.join(target, name));
            gfs.rmdir(target);
          } else gfs.unlink(target);
        };
        for (const target of paths) remove(target);
      });
    });
}

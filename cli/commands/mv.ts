// guestmemfs mv: rename or move a file or directory.
import type { Command } from 'commander';
import { command } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(program, 'mv', 'rename or move a file or directory', 'guestmemfs mv /dev/hugepages/pool /vms/a /vms/b')
    .argument('<pool>')
    .argument('<from>')
    .argument('<to>')
    .action((spec: string, from: string, to: string) => withFilesystem(spec, (gfs) => gfs.rename(from, to)));
}

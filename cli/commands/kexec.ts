// guestmemfs kexec: serialise and exec a command with the pool handed over (GUESTMEMFS_POOL / GUESTMEMFS_POOL_FD).
import type { Command } from 'commander';
import { command } from '../common';
import { withMount } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'kexec',
    'serialise and exec a command with the pool handed over (GUESTMEMFS_POOL / GUESTMEMFS_POOL_FD)',
    'guestmemfs kexec /dev/hugepages/pool -- node vmm.js',
  )
    .argument('<pool>')
    .argument('<command...>')
    .action((spec: string, argv: string[]) => {
      withMount(spec, (gfs) => gfs.kexec(argv), { allowSerialised: true });
    });
}

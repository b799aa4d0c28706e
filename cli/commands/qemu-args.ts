// guestmemfs qemu-args: print QEMU's memory-backend-file and machine arguments for guest RAM in a contiguous file.
import type { Command } from 'commander';
import { describeFiles, qemuArgs } from '../../lib/fs/external';
import { command, type Common, print } from '../common';
import { withPool } from '../pools';

export function register(program: Command): void {
  command(
    program,
    'qemu-args',
    "print QEMU's -object memory-backend-file and -machine memory-backend= arguments for a contiguous guest file",
    'guestmemfs qemu-args /dev/hugepages/pool /vm0-ram',
  )
    .argument('<pool>')
    .argument('<path>')
    .action((spec: string, target: string, options: Common) => {
      // Only looked up: the process that runs QEMU pins the file (guestmemfs pin).
      const args = withPool(spec, (pool) => qemuArgs(pool.path ?? spec, describeFiles(pool, [target])[0]!, 0, pool.large));
      print(options, { args }, () => args.join(' '));
    });
}

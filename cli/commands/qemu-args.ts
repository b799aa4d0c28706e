// guestmemfs qemu-args: print QEMU's memory-backend-file and machine arguments for guest RAM in a contiguous file.
import type { Command } from 'commander';
import { pinFiles, qemuArgs } from '../../lib/fs/external';
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
      const args = withPool(spec, (pool) => {
        // Looked up as a pinner does, then let go: the process that runs QEMU pins it (guestmemfs pin).
        const { pin, files } = pinFiles(pool, [target]);
        pin.release();
        return qemuArgs(pool.path ?? spec, files[0]!);
      });
      print(options, { args }, () => args.join(' '));
    });
}

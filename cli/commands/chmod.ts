// guestmemfs chmod: change permission bits (octal).
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { command } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(program, 'chmod', 'change permission bits (octal)', 'guestmemfs chmod /dev/hugepages/pool 600 /vms/vm0/ram')
    .argument('<pool>')
    .argument('<mode>')
    .argument('<paths...>')
    .action((spec: string, mode: string, paths: string[]) => {
      if (!/^[0-7]{1,4}$/.test(mode)) throw new GuestmemfsError('EINVAL', `mode "${mode}" must be octal, e.g. 640`);
      return withFilesystem(spec, async (gfs) => {
        for (const target of paths) await gfs.chmod(target, Number.parseInt(mode, 8));
      });
    });
}

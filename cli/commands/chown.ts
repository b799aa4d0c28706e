// guestmemfs chown: change owner and group (UID[:GID]).
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { command } from '../common';
import { withFilesystem } from '../pools';

export function register(program: Command): void {
  command(program, 'chown', 'change owner and group (UID[:GID])', 'guestmemfs chown /dev/hugepages/pool 1000:1000 /vms/vm0')
    .argument('<pool>')
    .argument('<owner>')
    .argument('<paths...>')
    .action((spec: string, owner: string, paths: string[]) => {
      const match = /^(\d*)(?::(\d*))?$/.exec(owner);
      if (!match || (!match[1] && !match[2]))
        throw new GuestmemfsError('EINVAL', `owner "${owner}" must be UID, UID:GID or :GID (numbers)`);
      const uid = match[1] ? Number(match[1]) : undefined;
      const gid = match[2] ? Number(match[2]) : undefined;
      return withFilesystem(spec, async (gfs) => {
        for (const target of paths) await gfs.chown(target, uid, gid);
      });
    });
}

// guestmemfs pin: run a command with files of the pool pinned for its whole life (for a VMM that maps them itself).
import * as path from 'node:path';
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { pinFiles } from '../../lib/fs/external';
import { native } from '../../lib/native';
import { resolveExecutable } from '../../lib/process';
import { command, usageError } from '../common';
import { openPool } from '../pools';

/** What the command finds in its environment, beside the inherited pin. */
export const PIN_FD_ENV = 'GUESTMEMFS_PIN_FD';

export function register(program: Command): void {
  command(
    program,
    'pin',
    'run a command with files pinned for its whole life: their memory is never freed or reused while it runs',
    'guestmemfs pin /dev/hugepages/pool /vm0-ram -- qemu-system-x86_64 $(guestmemfs qemu-args /dev/hugepages/pool /vm0-ram) ...',
  )
    .argument('<pool>')
    .argument('<paths...>', 'files inside the pool, then -- and the command')
    .action((spec: string, operands: string[]) => {
      // Commander drops the "--" itself: what follows it in argv is the command.
      const dash = process.argv.indexOf('--');
      const commandArgv = dash >= 0 ? process.argv.slice(dash + 1) : [];
      const paths = operands.slice(0, operands.length - commandArgv.length);
      if (commandArgv.length === 0 || paths.length === 0)
        throw usageError('name the files to pin, then -- and the command to run with them');
      const pool = openPool(spec);
      const { pin, files } = pinFiles(pool, paths);
      const env: Record<string, string> = {};
      for (const [key, value] of Object.entries(process.env)) if (value !== undefined) env[key] = value;
      env[PIN_FD_ENV] = String(pin.fd);
      env.GUESTMEMFS_POOL = pool.path ?? spec;
      env.GUESTMEMFS_FILES = String(files.length);
      files.forEach((file, index) => {
        env[`GUESTMEMFS_FILE${index}_PATH`] = file.path;
        env[`GUESTMEMFS_FILE${index}_OFFSET`] = String(file.extents[0]!.offset);
        env[`GUESTMEMFS_FILE${index}_SIZE`] = String(file.size);
        env[`GUESTMEMFS_FILE${index}_EXTENTS`] = file.extents.map((extent) => `${extent.offset}:${extent.length}`).join(',');
      });
      const program = resolveExecutable(commandArgv[0]!);
      // The pin's descriptor is the one thing this process passes on: COMMAND and its children hold it until they exit.
      try {
        native.processExec(
          program,
          commandArgv,
          Object.entries(env).map(([key, value]) => `${key}=${value}`),
          [pin.fd],
        );
      } catch (error) {
        pin.release();
        throw GuestmemfsError.from(error).withRemedy(`could not run ${path.basename(program)}`);
      }
    });
}

// The entry a live update of `guestmemfs mount` execs: the mount command alone, so that the new service loads only
// what it serves with (the full CLI loads every subcommand, 60 ms more inside the update's metadata pause).
import { Command } from 'commander';
import { register } from './commands/mount';

const program = new Command().name('guestmemfs').exitOverride();
register(program);
program.parseAsync().catch((error: unknown) => {
  const failure = error as { code?: string; message?: string; exitCode?: number };
  if (failure.exitCode === 0) process.exit(0);
  process.stderr.write(`guestmemfs: ${failure.message ?? String(error)}\n`);
  process.exit(1);
});

#!/usr/bin/env node
// The guestmemfs command: create, inspect, change, check and hand over pools (pmempool's shape: one binary, one file per
// subcommand in cli/commands, shared options and printing in cli/common.ts).
//
// Exit codes: 0 success, 1 the operation failed (one line on stderr naming the remedy), 2 usage error; `check` answers
// 0 consistent, 3 repaired, 4 inconsistent.
import { Command, CommanderError } from 'commander';
import { verifyHandoverDemo } from '../lib/demo/handover-demo';
import { register as abort } from './commands/abort';
import { register as check } from './commands/check';
import { register as chmod } from './commands/chmod';
import { register as chown } from './commands/chown';
import { register as demo } from './commands/demo';
import { register as detect } from './commands/detect';
import { register as df } from './commands/df';
import { register as inspect } from './commands/inspect';
import { register as kexec } from './commands/kexec';
import { register as ls } from './commands/ls';
import { register as mkdir } from './commands/mkdir';
import { register as mkfs } from './commands/mkfs';
import { register as mountCommand } from './commands/mount';
import { register as mv } from './commands/mv';
import { register as pin } from './commands/pin';
import { register as qemuArgs } from './commands/qemu-args';
import { register as quota } from './commands/quota';
import { register as badblock } from './commands/badblock';
import { register as resize } from './commands/resize';
import { register as rm } from './commands/rm';
import { register as serialise } from './commands/serialise';
import { register as stat } from './commands/stat';
import { register as status } from './commands/status';
import { register as touch } from './commands/touch';
import { register as truncate } from './commands/truncate';
import { register as vmm } from './commands/vmm';
import { EXIT } from './common';

const program = new Command();
program
  .name('guestmemfs')
  .description('Persistent in-memory filesystem for VM guest memory over a hugetlbfs pool')
  .option('--debug', 'show stack traces for errors')
  .exitOverride();

// In the order `guestmemfs --help` lists them: set-up, looking, changing, external VMMs, handover, checking, the VMM.
for (const register of [
  detect,
  mkfs,
  mountCommand,
  status,
  ls,
  stat,
  df,
  mkdir,
  touch,
  truncate,
  rm,
  mv,
  chmod,
  chown,
  quota,
  pin,
  qemuArgs,
  serialise,
  abort,
  check,
  badblock,
  resize,
  inspect,
  kexec,
  demo,
  vmm,
]) {
  register(program);
}
program.command('demo-verify', { hidden: true }).action(() => verifyHandoverDemo());

/** One line for the operator: a system error's code and message, which names the remedy. */
function failureLine(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return undefined;
  return error.message.startsWith(`${code}:`) ? error.message : `${code}: ${error.message}`;
}

function fail(error: unknown): never {
  if (error instanceof CommanderError) {
    if (error.exitCode === 0) process.exit(0);
    if (error.code === 'guestmemfs.usage') process.stderr.write(`guestmemfs: ${error.message}\n`);
    process.exit(EXIT.usage);
  }
  const line = failureLine(error);
  if (line === undefined || process.argv.includes('--debug')) throw error;
  process.stderr.write(`guestmemfs: ${line}\n`);
  process.exit(EXIT.failed);
}

// Asynchronous actions (a served pool is reached over its socket) settle before the process exits.
program.parseAsync().catch(fail);

// Processes: facts Node does not expose (this process's start time, what execve runs for a name), and running a
// program to its end without blocking the event loop.
import type * as ChildProcessModule from 'node:child_process';
import type { SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestmemfsError } from './errors';
import { native } from './native';

let cachedStartTime: { pid: number; value: bigint } | undefined;

/** This process's start time in clock ticks since boot (with the pid, it names an owner even after pid reuse). */
export function processStartTime(): bigint {
  if (cachedStartTime?.pid !== process.pid) {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    cachedStartTime = { pid: process.pid, value: BigInt(fields[19]!) };
  }
  return cachedStartTime.value;
}

/** The file execve should run for argv[0]: a path as given, or the first match on PATH, as execvp finds it. */
export function resolveExecutable(program: string): string {
  if (program.includes('/')) return program;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir || '.', program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  throw new GuestmemfsError('ENOENT', `no executable "${program}" on PATH`, { syscall: 'execve', path: program });
}

/** Names the teardown holder an exec that deferred its teardown left (see processExec): `pid:fd`. */
export const EXEC_HOLDER_ENV = 'GUESTMEMFS_EXEC_HOLDER';

/** The teardown holder the previous image of this process left, holding that image's address space. */
export interface ExecHolder {
  pid: number;
  /** Lets the old address space go (its teardown starts now) and resolves the holder's exit status once reaped. */
  release(): Promise<number | undefined>;
}

/**
 * Takes the teardown holder the previous image of this process left (kexec with deferTeardown), to be released once
 * nothing urgent runs any more. The variable is taken out of `env`, and the pipe end is made close-on-exec at once, so
 * that no child inherits either (a child holding the pipe end would keep the old address space alive). Undefined when
 * there is none, or the variable names no pipe of this process (nothing of ours is left then).
 */
export function takeExecHolder(env: NodeJS.ProcessEnv = process.env): ExecHolder | undefined {
  const value = env[EXEC_HOLDER_ENV];
  delete env[EXEC_HOLDER_ENV];
  const match = /^([1-9]\d{0,9}):(\d{1,9})$/.exec(value ?? '');
  if (!match || Number(match[1]) > 0x7fffffff) return undefined;
  const pid = Number(match[1]);
  const fd = Number(match[2]);
  try {
    if (!fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:')) return undefined;
    native.fdSetInherit(fd, false);
  } catch {
    return undefined;
  }
  let exited: Promise<number | undefined> | undefined;
  return {
    pid,
    release: () => {
      if (exited === undefined) {
        fs.closeSync(fd);
        // ECHILD: no child of ours by that pid, so nothing to wait for.
        exited = native.processReap(pid).catch(() => undefined);
      }
      return exited;
    },
  };
}

/** Takes and at once releases the holder the previous image left (see takeExecHolder); undefined when there is none. */
export function reapExecHolder(env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> | undefined {
  return takeExecHolder(env)?.release();
}

export interface ProgramResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program to its end, collecting its output, without blocking this thread meanwhile (a test worker must keep
 * answering its runner; a service its clients). `timeoutMs` bounds it: past that the program is killed.
 */
export async function runToEnd(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<ProgramResult> {
  const { timeoutMs = 600_000, ...spawnOptions } = options;
  const child = childProcess().spawn(command, args, { ...spawnOptions, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const limit = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const status = await new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  clearTimeout(limit);
  return { status, stdout, stderr };
}

/**
 * node:child_process, loaded on first use: it costs several milliseconds to load, and an exec-mode VMM loads this
 * module (through the filesystem's mount) inside its blackout, where nothing spawns.
 */
export function childProcess(): typeof ChildProcessModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('node:child_process') as typeof ChildProcessModule;
}

// QEMU with its RAM in a guestmemfs file: finding QEMU (10.0 or newer, for memory-backend-file offset=) and the guest
// built by guest/qemu/build.sh, the command line, and the guest's console (its ready and tick lines).
import { type ChildProcess, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { GuestmemfsError } from '../errors';

export const QEMU = 'qemu-system-x86_64';
/** QEMU's memory-backend-file gained offset= in 8.x; the CPR modes used here are those of 10.0. */
const QEMU_MIN_MAJOR = 10;

/** Where guest/qemu/build.sh leaves vmlinuz and initramfs.cpio. */
export function guestCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.GUESTMEMFS_QEMU_GUEST ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'guestmemfs', 'qemu-guest');
}

/** Why QEMU guests cannot run here ('' when they can): QEMU missing or too old, or the guest not built. */
export function qemuUnavailableReason(): string {
  const version = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) return `${QEMU} is not installed (.ci/run installs it from bookworm-backports)`;
  const major = Number(/version (\d+)\./.exec(version.stdout)?.[1]);
  if (!(major >= QEMU_MIN_MAJOR))
    return `${QEMU} ${version.stdout.split('\n')[0]} is older than ${QEMU_MIN_MAJOR}.0 (it lacks offset= and cpr-transfer)`;
  const dir = guestCacheDir();
  for (const file of ['vmlinuz', 'initramfs.cpio']) {
    if (!fs.existsSync(path.join(dir, file))) return `the QEMU guest is not built in ${dir}: run guest/qemu/build.sh`;
  }
  return '';
}

export interface QemuOptions {
  /** The memory backend and machine arguments (qemuArgs() of the guest file). */
  memoryArgs: readonly string[];
  ramBytes: number;
  /** QMP socket to serve (QEMU listens; the caller connects). */
  qmpPath: string;
  /** -incoming values, for a QEMU that receives a migrated guest. */
  incoming?: readonly string[];
  /** Auxiliary RAM (ROMs, firmware) in shareable memory too: cpr-transfer needs it to keep every RAM block. */
  auxRamShare?: boolean;
  /** MiB of guest RAM the guest fills before it says it is ready (as much for a copying migration to copy). */
  fillMiB?: number;
}

/** The command line (without the program) of a TCG QEMU booting the guest with its console on stdout. */
export function qemuArgv(options: QemuOptions): string[] {
  const dir = guestCacheDir();
  return [
    '-accel',
    'tcg',
    '-nodefaults',
    '-nographic',
    '-no-reboot',
    '-m',
    `${options.ramBytes / (1024 * 1024)}M`,
    ...options.memoryArgs,
    ...(options.auxRamShare ? ['-machine', 'aux-ram-share=on'] : []),
    '-kernel',
    path.join(dir, 'vmlinuz'),
    '-initrd',
    path.join(dir, 'initramfs.cpio'),
    '-append',
    `console=ttyS0 panic=-1 quiet mitigations=off${options.fillMiB ? ` guestmemfs.fill=${options.fillMiB}` : ''}`,
    '-serial',
    'stdio',
    '-qmp',
    `unix:${options.qmpPath},server=on,wait=off`,
    ...(options.incoming ?? []).flatMap((value) => ['-incoming', value]),
  ];
}

/** What the guest (guest/qemu/init.sh) prints: its memory's checksum when ready, and on every tick. */
export interface GuestLine {
  kind: 'ready' | 'tick';
  tick: number;
  checksum: string;
}

/** The guest's console as lines, from a QEMU's stdout: waits for the next ready or tick line past a given tick. */
export class GuestConsole {
  readonly #lines: GuestLine[] = [];
  readonly #waiters: Array<{ test: (line: GuestLine) => boolean; resolve: (line: GuestLine) => void }> = [];
  #ended: Error | undefined;
  readonly #endWaiters: Array<(error: Error) => void> = [];

  constructor(qemu: ChildProcess) {
    const lines = readline.createInterface({ input: qemu.stdout! });
    lines.on('line', (text) => {
      const match = /guest-(ready|tick)(?: (\d+))? ([0-9a-f]{32})/.exec(text);
      if (!match) return;
      const line: GuestLine = { kind: match[1] as 'ready' | 'tick', tick: Number(match[2] ?? 0), checksum: match[3]! };
      this.#lines.push(line);
      for (const waiter of [...this.#waiters]) {
        if (!waiter.test(line)) continue;
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    });
    qemu.once('exit', (code, signal) => {
      this.#ended = new GuestmemfsError('EIO', `QEMU exited (${signal ?? code}) before the guest said so`, { syscall: 'wait' });
      for (const reject of this.#endWaiters.splice(0)) reject(this.#ended);
    });
  }

  /** The first line that passes test, already printed or still to come; rejects if QEMU exits first. */
  next(test: (line: GuestLine) => boolean): Promise<GuestLine> {
    const seen = this.#lines.find(test);
    if (seen) return Promise.resolve(seen);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ test, resolve });
      this.#endWaiters.push(reject);
    });
  }

  ready(): Promise<GuestLine> {
    return this.next((line) => line.kind === 'ready');
  }

  /** A tick after `tick` (the guest's own count, which goes on across a live update). */
  tickAfter(tick: number): Promise<GuestLine> {
    return this.next((line) => line.kind === 'tick' && line.tick > tick);
  }

  get lastTick(): number {
    return this.#lines.filter((line) => line.kind === 'tick').at(-1)?.tick ?? 0;
  }
}

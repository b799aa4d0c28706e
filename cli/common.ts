// What every subcommand shares: exit codes, the --json/-q flags and example help, printing, and how sizes, modes and
// inodes are shown.
import type { Command } from 'commander';
import { CommanderError } from 'commander';
import type { QuotaReport } from '../lib/fs/quota';
import type { Stat, StatFs } from '../lib/fs/types';
import type { PinHolder } from '../lib/pool/pins';
import { formatSize } from '../lib/units';

/** 0 success, 1 the operation failed (message on stderr), 2 usage error; check: 0 consistent, 3 repaired, 4 inconsistent. */
export const EXIT = { ok: 0, failed: 1, usage: 2, repaired: 3, inconsistent: 4 } as const;

export interface Common {
  json?: boolean;
  quiet?: boolean;
}

/** A subcommand with the flags every command shares and an example in its help. */
export function command(program: Command, name: string, description: string, example: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--json', 'machine-readable output')
    .option('-q, --quiet', 'print only what was asked for')
    .addHelpText('after', `\nExample:\n  $ ${example}`);
}

/** A usage error: printed as it is, exit code 2. */
export function usageError(message: string): CommanderError {
  return new CommanderError(EXIT.usage, 'guestmemfs.usage', message);
}

/** Prints JSON with --json (bigints as strings), otherwise the text, if any. */
export function print(options: Common, json: unknown, text: () => string): void {
  if (options.json) {
    process.stdout.write(`${JSON.stringify(json, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value), 2)}\n`);
    return;
  }
  const output = text();
  if (output) process.stdout.write(`${output}\n`);
}

/** A remark on stderr, unless --quiet or --json. */
export function note(options: Common, line: string): void {
  if (!options.quiet && !options.json) process.stderr.write(`${line}\n`);
}

/** Bytes, or with -h a human size like 2M. */
export function size(bytes: number, human: boolean | undefined): string {
  return human ? formatSize(bytes).replace(' ', '').replace('iB', '') : String(bytes);
}

/** drwxr-xr-x, as ls -l prints it. */
export function modeString(stat: Stat): string {
  const bits = ['r', 'w', 'x'];
  let out = stat.type === 'directory' ? 'd' : '-';
  for (let shift = 6; shift >= 0; shift -= 3)
    for (let bit = 0; bit < 3; bit++) out += stat.mode & (1 << (shift + 2 - bit)) ? bits[bit] : '-';
  // The sticky bit shows in the others' search slot, as ls shows it: t over x, T without.
  if (stat.mode & 0o1000) out = out.slice(0, 9) + (stat.mode & 0o001 ? 't' : 'T');
  return out;
}

export function describeStat(stat: Stat): Record<string, unknown> {
  return { ...stat, modeOctal: stat.mode.toString(8).padStart(4, '0') };
}

/** A file holding quarantined blocks is flagged wherever it is shown (ls, stat). */
export function badBlockNote(stat: { quarantinedBlocks?: number }): string {
  const count = stat.quarantinedBlocks ?? 0;
  return count > 0 ? `   [holds ${count} quarantined block${count === 1 ? '' : 's'}]` : '';
}

/** "  Pins: pid 123 on [offset, +length)" lines, or one saying there are none. */
export function pinLines(pins: readonly PinHolder[]): string[] {
  if (pins.length === 0) return ['  Pins: none'];
  return pins.map((pin) => {
    const who = pin.pids.length > 0 ? pin.pids.map((pid) => `pid ${pid}`).join(', ') : 'a process this user cannot see';
    const length = Number.isFinite(pin.length) ? formatSize(pin.length) : 'to the end';
    return `  Pins: ${who} on [${pin.offset}, +${length})`;
  });
}

/** A progress bar on stderr, when it is a terminal and the user did not ask for quiet or JSON. */
export function progressBar(options: Common, what: string): ((done: number, total: number) => void) | undefined {
  if (!process.stderr.isTTY || options.quiet || options.json) return undefined;
  return (done, total) =>
    process.stderr.write(
      `\r${what} [${'#'.repeat(Math.round((30 * done) / total)).padEnd(30)}] ${formatSize(done)} / ${formatSize(total)}`,
    );
}

/** "uid 1000: 6 GiB of 8 GiB (75%)" lines, or one saying there are no limits. */
/** "3 free runs, the largest 1.5G (768 blocks)": how broken up free space is (df, status). */
export function fragmentationLine(s: Pick<StatFs, 'freeRuns' | 'largestFreeRun' | 'blockSize'>, human = true): string {
  const runs = `${s.freeRuns} free run${s.freeRuns === 1 ? '' : 's'}`;
  return `${runs}, the largest ${size(s.largestFreeRun * s.blockSize, human)} (${s.largestFreeRun} blocks)`;
}

export function quotaLines(quotas: readonly QuotaReport[]): string[] {
  if (quotas.length === 0) return ['Quotas: none'];
  return quotas.map((quota) => {
    const who = quota.kind === 'uid' ? `uid ${quota.id}` : `dir ${quota.path}`;
    const percent = quota.limitBytes ? Math.round((100 * quota.usedBytes) / quota.limitBytes) : 100;
    return `Quota ${who}: ${formatSize(quota.usedBytes)} of ${formatSize(quota.limitBytes)} (${percent}%)`;
  });
}

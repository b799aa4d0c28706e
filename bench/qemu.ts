// npm run bench:qemu — QEMU live-updated on guestmemfs RAM (cpr-reboot and cpr-transfer: the RAM stays in the pool
// file) against QEMU with anonymous RAM, whose RAM is copied (cpr-reboot into its state file; a normal migration to a
// second QEMU on the same host for the transfer), at 1 and 4 GiB. The guest fills three quarters of its RAM first (less
// what its kernel and tmpfs need).
// Each update is timed from the migrate command to the new QEMU running the guest; QEMU's own downtime is its
// query-migrate figure.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GuestConsole, QEMU, qemuArgv, qemuUnavailableReason } from '../lib/qemu/guest';
import { fileCreated, type MigrationReport, Qmp } from '../lib/qemu/qmp';
import { scratchDirectory } from '../lib/scratch';
import { formatSize, GiB, MiB } from '../lib/units';
import { quickMode, repoRoot, reserveForBench, runsArg, stats, type Stats, writeResults } from './common';

const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const sizes = quickMode ? [256 * MiB] : [1 * GiB, 4 * GiB];
const updates = runsArg(3);
const unavailable = qemuUnavailableReason();
if (unavailable) {
  process.stderr.write(`bench:qemu needs QEMU and its guest: ${unavailable}\n`);
  process.exit(3);
}
const scratch = scratchDirectory('/tmp', 'guestmemfs-bench-qemu');
const children: ChildProcess[] = [];

interface Update {
  downtimeMs: number;
  updateMs: number;
  /** What went through the migration stream (or into the state file). */
  bytes: number;
}

/** MiB the guest fills: three quarters of its RAM, less the 128 MiB its kernel, initramfs and first blob take. */
function fillFor(ramBytes: number): number {
  return Math.max(0, (ramBytes * 3) / 4 / MiB - 128);
}

type Variant = 'gmfs-cpr-reboot' | 'gmfs-cpr-transfer' | 'anonymous-cpr-reboot' | 'anonymous-migration';

function gmfs(...args: string[]): string {
  const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`guestmemfs ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

async function running(qmp: Qmp): Promise<void> {
  for (;;) {
    const status = await qmp.execute<{ status: string }>('query-status');
    if (status.status === 'running') return;
    await qmp.event('RESUME');
  }
}

async function quit(qemu: ChildProcess, qmp: Qmp): Promise<void> {
  const exited = new Promise((resolve) => qemu.once('exit', resolve));
  await qmp.execute('quit').catch(() => undefined);
  await exited;
}

let serial = 0;
function start(memoryArgs: string[], ramBytes: number, fillMiB: number, extra: { incoming?: string[]; auxRamShare?: boolean } = {}) {
  const qmpPath = path.join(scratch.path, `qmp-${serial++}`);
  const qemu = spawn(QEMU, qemuArgv({ memoryArgs, ramBytes, qmpPath, fillMiB, ...extra }), { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(qemu);
  return { qemu, console: new GuestConsole(qemu), qmpPath };
}

/** Boots a guest and updates it `updates` times in a row in the variant's way; every update keeps the guest running. */
async function measure(variant: Variant, ramBytes: number, memoryArgs: string[]): Promise<Update[]> {
  const fillMiB = fillFor(ramBytes);
  const transfer = variant === 'gmfs-cpr-transfer';
  let current = start(memoryArgs, ramBytes, fillMiB, { auxRamShare: transfer });
  const ready = await current.console.ready();
  let qmp = await Qmp.whenServed(current.qmpPath);
  const results: Update[] = [];
  for (let update = 0; update < updates; update++) {
    const lastTick = (await current.console.tickAfter(current.console.lastTick)).tick;
    let next: ReturnType<typeof start>;
    let nextQmp: Qmp;
    let report: MigrationReport;
    let bytes: number;
    let started: bigint;
    if (variant === 'gmfs-cpr-reboot' || variant === 'anonymous-cpr-reboot') {
      const state = path.join(scratch.path, `state-${serial}`);
      const ignoreShared = variant === 'gmfs-cpr-reboot';
      await qmp.execute('migrate-set-parameters', { mode: 'cpr-reboot' });
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: ignoreShared }] });
      qmp.discard('MIGRATION');
      started = process.hrtime.bigint();
      await qmp.execute('migrate', { uri: `file:${state}` });
      report = await qmp.migrationEnd();
      await quit(current.qemu, qmp);
      next = start(memoryArgs, ramBytes, fillMiB, { incoming: ['defer'] });
      nextQmp = await Qmp.whenServed(next.qmpPath);
      await nextQmp.execute('migrate-set-parameters', { mode: 'cpr-reboot' });
      await nextQmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: ignoreShared }] });
      await nextQmp.execute('migrate-incoming', { uri: `file:${state}` });
      await running(nextQmp);
      bytes = fs.statSync(state).size;
      fs.rmSync(state);
    } else {
      const id = serial;
      const channel = (type: 'main' | 'cpr') => ({
        'channel-type': type,
        addr: { transport: 'socket', type: 'unix', path: path.join(scratch.path, `${type}-${id}.sock`) },
      });
      const channels = transfer ? [channel('main'), channel('cpr')] : [channel('main')];
      // The successor is started ahead of time, as both modes intend: its start-up is not part of the update.
      next = start(memoryArgs, ramBytes, fillMiB, { auxRamShare: transfer, incoming: channels.map((value) => JSON.stringify(value)) });
      if (transfer) await fileCreated(channel('cpr').addr.path);
      else {
        nextQmp = await Qmp.whenServed(next.qmpPath);
        await fileCreated(channel('main').addr.path);
      }
      await qmp.execute('migrate-set-parameters', { mode: transfer ? 'cpr-transfer' : 'normal' });
      started = process.hrtime.bigint();
      await qmp.migrate(channels);
      report = await qmp.migrationEnd();
      // In cpr-transfer the successor serves QMP only once it has the old one's state.
      nextQmp ??= await Qmp.whenServed(next.qmpPath);
      await running(nextQmp!);
      bytes = report.ram.transferred;
      await quit(current.qemu, qmp);
    }
    const updateMs = Number(process.hrtime.bigint() - started) / 1e6;
    const resumed = await next.console.tickAfter(lastTick);
    if (resumed.checksum !== ready.checksum) throw new Error(`${variant}: guest memory changed across the update`);
    results.push({ downtimeMs: report.downtime, updateMs, bytes });
    current = next;
    qmp = nextQmp!;
  }
  current.qemu.kill('SIGKILL');
  return results;
}

function summary(list: Update[]): { downtimeMs: Stats; updateMs: Stats; bytes: Stats } {
  return {
    downtimeMs: stats(list.map((entry) => entry.downtimeMs)),
    updateMs: stats(list.map((entry) => entry.updateMs)),
    bytes: stats(list.map((entry) => entry.bytes)),
  };
}

async function main(): Promise<void> {
  const results = [];
  for (const ramBytes of sizes) {
    const poolBytes = ramBytes + 64 * MiB;
    const reservation = reserveForBench(2 * MiB, poolBytes / (2 * MiB));
    const pool = path.join(reservation.mountpoint!, 'bench-qemu');
    try {
      gmfs('mkfs', pool, '--size', String(poolBytes), '-q', '--force');
      gmfs('touch', '--contiguous', '--type', 'guest', pool, '/vm0-ram');
      gmfs('truncate', '-s', String(ramBytes), pool, '/vm0-ram');
      const backend = gmfs('qemu-args', pool, '/vm0-ram').trim().split(' ');
      const entry: Record<string, unknown> = { ramBytes, fillMiB: fillFor(ramBytes) };
      for (const variant of ['gmfs-cpr-reboot', 'gmfs-cpr-transfer', 'anonymous-cpr-reboot', 'anonymous-migration'] as const) {
        const list = await measure(variant, ramBytes, variant.startsWith('gmfs') ? backend : []);
        entry[variant] = summary(list);
        const s = entry[variant] as ReturnType<typeof summary>;
        process.stdout.write(
          `  ${formatSize(ramBytes).padEnd(7)} ${variant.padEnd(22)} update ${s.updateMs.median.toFixed(1).padStart(8)} ms  ` +
            `QEMU downtime ${s.downtimeMs.median.toFixed(0).padStart(6)} ms  ${formatSize(s.bytes.median)} moved\n`,
        );
      }
      results.push(entry);
    } finally {
      fs.rmSync(pool, { force: true });
      reservation.release();
    }
  }
  const file = writeResults(
    'qemu',
    { updates, sizes, results, qemu: spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] },
    quickMode,
  );
  process.stdout.write(`results: ${path.relative(repoRoot, file)}\n`);
}

main()
  .catch((error: Error) => {
    process.stderr.write(`bench:qemu failed: ${error.stack ?? error.message}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    scratch.remove();
  });

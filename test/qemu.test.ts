// QEMU on guestmemfs: a Debian kernel (TCG here: kvm-pvm runs no stock kernel) whose RAM is a contiguous guest file,
// run under `guestmemfs pin`; the file removed and its blocks wanted by another while QEMU runs; QEMU killed; and QEMU
// live-updated with cpr-reboot and cpr-transfer, its RAM kept in place.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GuestConsole, QEMU, qemuArgv, qemuUnavailableReason } from '../lib/qemu/guest';
import { fileCreated, Qmp } from '../lib/qemu/qmp';
import { machine, repoRoot, skipReason } from './helpers';
import { runtimeDirectory, startService } from './service-helpers';

const m = machine();
const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const RAM = 512 * 1024 * 1024;
const unavailable = qemuUnavailableReason();
let dir: string;
let pool: string;
const children: ChildProcess[] = [];

/** Where the CLI looks for a mount service (set while a test serves the pool, so that its commands go through it). */
let runtime: string | undefined;

function gmfs(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = runtime ? { ...process.env, GUESTMEMFS_RUNTIME_DIR: runtime } : process.env;
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env });
}

function json<T>(...args: string[]): T {
  const result = gmfs(...args, '--json');
  if (result.status !== 0) throw new Error(`guestmemfs ${args.join(' ')}: ${result.stderr}`);
  return JSON.parse(result.stdout) as T;
}

/** Starts QEMU (under `guestmemfs pin` unless pinned is false) and returns it with its console. */
function startQemu(name: string, options: { incoming?: string[]; auxRamShare?: boolean; pinned?: boolean } = {}) {
  const memoryArgs = gmfs('qemu-args', pool, '/vm0-ram').stdout.trim().split(' ');
  const qmpPath = path.join(dir, `${name}.qmp`);
  const argv = qemuArgv({ memoryArgs, ramBytes: RAM, qmpPath, incoming: options.incoming, auxRamShare: options.auxRamShare });
  const qemu =
    options.pinned === false
      ? spawn(QEMU, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, [cli, 'pin', pool, '/vm0-ram', '--', QEMU, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(qemu);
  let stderr = '';
  qemu.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { qemu, console: new GuestConsole(qemu), qmpPath, stderr: () => stderr };
}

async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}

beforeAll(() => {
  if (unavailable) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-qemu-'));
  // 2 MiB pages when the machine has them; the 4 KiB fallback otherwise.
  pool = m.hugetlbfs2M ? path.join(m.hugetlbfs2M, `qemu-${process.pid}`) : path.join(dir, 'pool');
  const made = gmfs('mkfs', pool, '--size', '640M', '-q');
  if (made.status !== 0) throw new Error(made.stderr);
  gmfs('touch', '--contiguous', '--type', 'guest', pool, '/vm0-ram');
  gmfs('truncate', '-s', String(RAM), pool, '/vm0-ram');
});

/** Ends every process a test started (a failed test must not leave a QEMU or a pin behind for the next). */
async function stopAll(): Promise<void> {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  }
}

afterEach(stopAll);

afterAll(async () => {
  await stopAll();
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  if (pool) fs.rmSync(pool, { force: true });
});

/**
 * Runs QEMU under pin, removes its RAM file and gives another file every free block while the guest runs: none of
 * the guest's, which goes on with its memory; once QEMU is SIGKILLed, its blocks come back. Makes the file again.
 */
async function removeUnderRunningGuest(name: string): Promise<void> {
  const vm = startQemu(name);
  const ready = await vm.console.ready();
  const before = await vm.console.tickAfter(0);
  expect(before.checksum).toBe(ready.checksum);
  const ram = json<{ extents: Array<{ offset: number; length: number }>; pins: Array<{ pids: number[] }> }>('stat', pool, '/vm0-ram');
  expect(ram.pins).toEqual([expect.objectContaining({ pids: [vm.qemu.pid] })]); // the wrapper exec'd into QEMU
  expect(gmfs('rm', pool, '/vm0-ram').status).toBe(0);
  gmfs('touch', pool, '/other');
  const df = json<{ freeBlocks: number; blockSize: number }>('df', pool);
  expect(gmfs('truncate', '-s', String(df.freeBlocks * df.blockSize), pool, '/other').status).toBe(0);
  const [guest] = ram.extents as [{ offset: number; length: number }];
  for (const extent of json<{ extents: Array<{ offset: number; length: number }> }>('stat', pool, '/other').extents) {
    expect(extent.offset + extent.length <= guest.offset || guest.offset + guest.length <= extent.offset).toBe(true);
  }
  // The guest goes on with the memory it had: the same checksum, ticks later.
  expect((await vm.console.tickAfter(before.tick + 2)).checksum).toBe(ready.checksum);
  vm.qemu.kill('SIGKILL');
  await exited(vm.qemu);
  expect(gmfs('rm', pool, '/other').status).toBe(0); // the next change reclaims what QEMU held
  expect(json<{ pins: unknown[]; pinnedOrphans: unknown[] }>('status', pool)).toMatchObject({ pins: [], pinnedOrphans: [] });
  expect(json<{ freeBlocks: number }>('df', pool).freeBlocks).toBe(df.freeBlocks + RAM / df.blockSize);
  gmfs('touch', '--contiguous', '--type', 'guest', pool, '/vm0-ram');
  expect(gmfs('truncate', '-s', String(RAM), pool, '/vm0-ram').status).toBe(0);
}

describe.skipIf(skipReason(unavailable))('QEMU with its RAM in a guestmemfs file', () => {
  it('runs under pin; rm and a new file that wants every free block leave the guest intact; SIGKILL releases the pin', async () => {
    await removeUnderRunningGuest('pinned');
  }, 180_000);

  it('runs under pin on a pool that guestmemfs mount serves, the CLI changing it through the service', async () => {
    runtime = runtimeDirectory();
    const service = await startService(pool, runtime);
    try {
      expect(json<{ socket: string }>('status', pool).socket).toBe(service.socket);
      await removeUnderRunningGuest('served');
    } finally {
      service.child.kill('SIGTERM');
      await service.exited;
      fs.rmSync(runtime, { recursive: true, force: true });
      runtime = undefined;
    }
  }, 180_000);

  it('cpr-reboot: QEMU saves its state (not its RAM) and quits, a new QEMU resumes the guest on the same memory', async () => {
    // QEMU quits before its successor starts: a holder keeps the RAM pinned across the gap, as an update tool would.
    const holder = spawn(process.execPath, [cli, 'pin', pool, '/vm0-ram', '--', process.execPath, '-e', 'process.stdin.resume()'], {
      stdio: ['pipe', 'ignore', 'inherit'],
    });
    children.push(holder);
    const old = startQemu('reboot-old', { pinned: false });
    const ready = await old.console.ready();
    const before = await old.console.tickAfter(0);
    const qmp = await Qmp.whenServed(old.qmpPath);
    const state = path.join(dir, 'vm.state');
    await qmp.execute('migrate-set-parameters', { mode: 'cpr-reboot' });
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate', { uri: `file:${state}` });
    const report = await qmp.migrationEnd();
    expect(report.status).toBe('completed');
    await qmp.execute('quit').catch(() => undefined); // QEMU may close the socket before it answers
    await exited(old.qemu);
    // RAM stayed in the pool file: what was written is the devices' state, orders of magnitude smaller.
    const stateBytes = fs.statSync(state).size;
    expect(stateBytes).toBeLessThan(RAM / 100);
    const next = startQemu('reboot-new', { incoming: ['defer'], pinned: false });
    const nextQmp = await Qmp.whenServed(next.qmpPath);
    await nextQmp.execute('migrate-set-parameters', { mode: 'cpr-reboot' });
    await nextQmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await nextQmp.execute('migrate-incoming', { uri: `file:${state}` });
    const resumed = await next.console.tickAfter(before.tick);
    expect(resumed.checksum).toBe(ready.checksum); // the same memory, and the guest's own tick count went on
    process.stdout.write(`[qemu] cpr-reboot: ${stateBytes} bytes of state for ${RAM} bytes of RAM, QEMU downtime ${report.downtime} ms\n`);
    next.qemu.kill('SIGKILL');
    await exited(next.qemu);
    holder.stdin.end();
    await exited(holder);
  }, 180_000);

  it('cpr-transfer: a new QEMU started ahead takes the guest over, its RAM passed by descriptor and never copied', async () => {
    const old = startQemu('transfer-old', { auxRamShare: true });
    const ready = await old.console.ready();
    const before = await old.console.tickAfter(0);
    const qmp = await Qmp.whenServed(old.qmpPath);
    const channel = (type: 'main' | 'cpr') => ({
      'channel-type': type,
      addr: { transport: 'socket', type: 'unix', path: path.join(dir, `${type}.sock`) },
    });
    const next = startQemu('transfer-new', {
      auxRamShare: true,
      incoming: [JSON.stringify(channel('main')), JSON.stringify(channel('cpr'))],
    });
    await fileCreated(channel('cpr').addr.path);
    await qmp.execute('migrate-set-parameters', { mode: 'cpr-transfer' });
    await qmp.migrate([channel('main'), channel('cpr')]);
    const report = await qmp.migrationEnd();
    expect(report.status).toBe('completed');
    expect(report.ram.total).toBe(0); // no guest RAM went through the migration stream
    expect(report.ram.transferred).toBeLessThan(RAM / 100);
    await qmp.execute('quit').catch(() => undefined);
    await exited(old.qemu);
    const resumed = await next.console.tickAfter(before.tick);
    expect(resumed.checksum).toBe(ready.checksum);
    // The successor's pin holds the RAM now that the old QEMU and its pin are gone.
    expect(json<{ pins: Array<{ pids: number[] }> }>('stat', pool, '/vm0-ram').pins).toEqual([
      expect.objectContaining({ pids: [next.qemu.pid] }),
    ]);
    process.stdout.write(
      `[qemu] cpr-transfer: ${report.ram.transferred} bytes sent for ${RAM} bytes of RAM, QEMU downtime ${report.downtime} ms, ` +
        `migration ${report['total-time']} ms\n`,
    );
    next.qemu.kill('SIGKILL');
    await exited(next.qemu);
  }, 180_000);
});

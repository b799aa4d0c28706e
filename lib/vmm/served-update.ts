// A VMM on a pool that `guestmemfs mount` serves, live-updated in exec and transfer mode, as a runnable program: its
// files are created through the service and mapped here, pinned on descriptors the service passes, so that several
// VMMs share one pool. The metadata never moves (the service owns it); an update hands over only the guest: its vCPU
// state, through the state file, and guest RAM, which stays pinned throughout.
//
//   exec mode      the guest pauses and its state is saved; a pin over its files is kept on an inherited descriptor,
//                  and the VMM execs itself; the new program maps the files again (new pins), drops the kept one and
//                  resumes the guest.
//   transfer mode  a successor started ahead maps the files (its own pins) and creates its VM; the guest pauses, its
//                  state is saved, and the successor, spinning on the state file, resumes it; the old VMM then exits.
//
//   node served-update.js boot <socket> <name> <ramBytes> <steps> <seed> <modes> <maxDelayMs>
//   node served-update.js resume <socket> <name>        (exec mode, after the execve)
//   node served-update.js successor <socket> <name>     (transfer mode, started by the running VMM)
//
// <modes> lists one update per entry, in order: "exec,transfer" updates twice. Events are JSON lines on stdout.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { native } from '../native';
import { Pin } from '../pool/pins';
import { EXEC_HOLDER_ENV, takeExecHolder } from '../process';
import { connect, type ServiceClient } from '../service/client';
import { elapsedMs } from '../units';
import { lineReader } from './line-reader';
import { emit, framesOf, updateDelay } from './update-common';
import { STATE_CAPACITY, Vmm, type VmmFiles } from './vmm';

/** The inherited descriptor that pins the guest's files across the execve of an exec-mode update. */
const KEPT_PIN_ENV = 'GUESTMEMFS_SERVED_PIN_FD';
const READY = 'ready';
const RESUMING = 'resuming';

/** What travels with the guest from one VMM process to the next, in its saved state. */
interface ServedPlan {
  name: string;
  modes: Array<'exec' | 'transfer'>;
  maxDelayMs: number;
  seed: number;
  bootFrames: string[] | null;
  /** Blackouts so far, in ms, one per update. */
  blackouts: Array<{ mode: string; ms: number; pid: number }>;
}

function filesOf(name: string): VmmFiles {
  return { ramPath: `/${name}/ram`, statePath: `/${name}/state` };
}

/** Maps guest RAM and the state file through the service (each mapping pinned) and makes the VM over them. */
async function attach(client: ServiceClient, name: string): Promise<Vmm> {
  const files = filesOf(name);
  const ram = await client.map(files.ramPath, { sharePageTables: true });
  const state = await client.map(files.statePath);
  return Vmm.fromMappings(files, ram, state);
}

async function boot(socket: string, args: string[]): Promise<void> {
  const [name, ramText, stepsText, seedText, modesText, delayText] = args as [string, string, string, string, string, string];
  const client = await connect(socket);
  const files = filesOf(name);
  await client.mkdir(`/${name}`);
  await client.create(files.ramPath, { type: 'guest' });
  await client.truncate(files.ramPath, Number(ramText));
  await client.create(files.statePath, { type: 'state' });
  await client.truncate(files.statePath, STATE_CAPACITY);
  const vmm = await attach(client, name);
  vmm.machine.loadDemoGuest({ steps: Number(stepsText), seed: BigInt(seedText) });
  const plan: ServedPlan = {
    name,
    modes: modesText ? (modesText.split(',') as ServedPlan['modes']) : [],
    maxDelayMs: Number(delayText),
    seed: Number(seedText),
    bootFrames: framesOf(vmm),
    blackouts: [],
  };
  emit({ event: 'boot', name, pid: process.pid });
  await drive(socket, client, vmm, plan);
}

/** Runs the guest, and at its turn updates it in the next mode of the plan, or waits for its halt. */
async function drive(socket: string, client: ServiceClient, vmm: Vmm, plan: ServedPlan, onRunning?: (at: bigint) => void): Promise<void> {
  const running = vmm.start();
  if (onRunning) onRunning(await vmm.runningSince());
  const mode = plan.modes[0];
  if (mode === undefined) {
    const reason = await running;
    const frames = framesOf(vmm);
    emit({
      event: 'done',
      name: plan.name,
      pid: process.pid,
      reason,
      serial: vmm.serial(),
      sameFrames: plan.bootFrames && frames ? JSON.stringify(frames) === JSON.stringify(plan.bootFrames) : null,
      blackouts: plan.blackouts,
    });
    vmm.close();
    client.close();
    return;
  }
  const next: ServedPlan = { ...plan, modes: plan.modes.slice(1) };
  // The same deterministic delay as the other update programs, the updates left counting down the modes.
  const delay = () => updateDelay({ seed: plan.seed, updatesLeft: plan.modes.length, maxDelayMs: plan.maxDelayMs });
  if (mode === 'transfer') return transfer(socket, client, vmm, next, delay);
  await delay();
  const { stoppedAtNs } = await vmm.pause();
  vmm.saveState(stoppedAtNs, { plan: next });
  // The pin that holds the guest's files while no mapping does: on a descriptor of its own, kept across the execve.
  const kept = Pin.take(client.pool(), [...vmm.ram.extents, ...vmm.stateExtents], client.poolDescriptor()).handOff();
  const program = process.argv[1]!;
  native.processExec(
    process.execPath,
    [process.execPath, ...process.execArgv, program, 'resume', socket, plan.name],
    Object.entries({ ...process.env, [KEPT_PIN_ENV]: String(kept) }).map(([key, value]) => `${key}=${value}`),
    [kept],
    EXEC_HOLDER_ENV,
  );
}

/** Exec mode, after the execve: map the files again, drop the kept pin, restore and run the guest. */
async function resume(socket: string, name: string): Promise<void> {
  const kept = Number(process.env[KEPT_PIN_ENV]);
  delete process.env[KEPT_PIN_ENV];
  const holder = takeExecHolder();
  const client = await connect(socket);
  const vmm = await attach(client, name);
  native.fdClose(kept); // the new mappings hold their own pins now
  const { saved } = vmm.restoreSaved();
  void holder?.release(); // the guest runs: the old image's teardown may start
  vmm.clearSavedState(); // consumed: the next update's successor must wait for the next save
  const plan = (saved.extra as { plan: ServedPlan }).plan;
  await continueAfterRestore(socket, client, vmm, plan, 'exec', BigInt(saved.stoppedAtNs));
}

async function continueAfterRestore(
  socket: string,
  client: ServiceClient,
  vmm: Vmm,
  plan: ServedPlan,
  mode: string,
  stoppedAtNs: bigint,
): Promise<void> {
  await drive(socket, client, vmm, plan, (runningAt) => {
    const blackout = { mode, ms: elapsedMs(stoppedAtNs, runningAt), pid: process.pid };
    plan.blackouts.push(blackout);
    emit({ event: 'update', name: plan.name, ...blackout });
  });
}

/** Transfer mode, the running side: start the successor, let it prepare, pause, save, and leave once it resumed. */
async function transfer(socket: string, client: ServiceClient, vmm: Vmm, next: ServedPlan, delay: () => Promise<void>): Promise<void> {
  // No saved state may be in the file when the successor starts waiting for one: only the coming save counts.
  vmm.clearSavedState();
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'successor', socket, next.name], {
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  });
  const report = lineReader(child.stdio[3] as Readable);
  if ((await report()) !== READY) throw new Error(`the successor (pid ${child.pid}) exited before it was ready`);
  await delay(); // after the successor is ready: its start-up stays out of the blackout
  const { stoppedAtNs } = await vmm.pause();
  vmm.saveState(stoppedAtNs, { plan: next });
  if ((await report()) !== RESUMING) throw new Error(`the successor (pid ${child.pid}) did not resume the guest`);
  // The successor maps the guest with its own pins: this VMM lets go, and its process ends.
  vmm.close();
  client.close();
  (child.stdio[3] as Readable).destroy();
  child.unref();
}

/** Transfer mode, the successor: map and make the VM ahead, then spin on the state file and resume the guest. */
async function successor(socket: string, name: string): Promise<void> {
  const client = await connect(socket);
  const vmm = await attach(client, name);
  fs.writeSync(3, `${READY}\n`);
  vmm.waitForSavedState({ timeoutMs: 60_000 });
  const { saved } = vmm.restoreSaved();
  vmm.clearSavedState();
  const plan = (saved.extra as { plan: ServedPlan }).plan;
  // The commit point, just before the vCPU runs here: from now on the old VMM never resumes the guest.
  fs.writeSync(3, `${RESUMING}\n`);
  fs.closeSync(3);
  await continueAfterRestore(socket, client, vmm, plan, 'transfer', BigInt(saved.stoppedAtNs));
}

async function main(): Promise<void> {
  const [role, socket, ...rest] = process.argv.slice(2) as [string, string, ...string[]];
  if (role === 'boot') return boot(socket, rest);
  if (role === 'resume') return resume(socket, rest[0]!);
  if (role === 'successor') return successor(socket, rest[0]!);
  throw new Error(`usage: served-update.js boot|resume|successor <socket> ...`);
}

main().catch((error: unknown) => {
  process.stderr.write(`served-update: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});

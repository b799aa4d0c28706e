// What the exec-mode and transfer-mode update programs share: the plan, event output, booting the guest, the update
// delay, and the end of a run (the guest halted, or a benchmark stopped it).
import * as fs from 'node:fs';
import type { setFlagsFromString } from 'node:v8';
import type { runInNewContext } from 'node:vm';
import * as path from 'node:path';
import { mkfs } from '../fs/format';
import { native } from '../native';
import { childProcess } from '../process';
import { mount } from '../fs/mount';
import { pinHolders } from '../pool/pins';
import { Pool } from '../pool/pool';
import { elapsedMs, MiB } from '../units';
import { adoptDevice, createDevice, type DeviceFiles, type DeviceStats, FIELD, readDeviceState } from './device';
import { Vmm, type VmmFiles } from './vmm';

export const CONFIG: VmmFiles = { ramPath: '/vm0/ram', statePath: '/vm0/state' };
/** The demo device's IOMMU table and state, when the guest has the device. */
export const DEVICE_FILES: DeviceFiles = { iommuPath: '/vm0/iommu', devicePath: '/vm0/device' };
/** How long the last VMM waits for the device backend to stop when the run ends. */
const DEVICE_STOP_TIMEOUT_MS = 10_000;
/**
 * The VMM's end of its lifeline to the device backend (a socket pair): every VMM of the run holds it, across execve
 * and into a transfer successor, and the backend exits when the last copy closes, as a vhost-user backend does when
 * its frontend's socket closes. Without it, a VMM that crashed would leave the backend DMAing into a guest nobody runs.
 */
export const DEVICE_OWNER_FD_ENV = 'GUESTMEMFS_DEVICE_OWNER_FD';
let deviceOwnerFd: number | undefined;

/** The fds an execve must keep for the device: the lifeline, when there is one. */
export function lifelineFds(): number[] {
  const fd = deviceLifeline();
  return fd === undefined ? [] : [fd];
}

/**
 * This VMM's end of the device lifeline, taken from the environment once (it arrives inheritable, through execve or
 * as a transfer successor's extra stdio, and is made close-on-exec again here); undefined without a device.
 */
export function deviceLifeline(): number | undefined {
  if (deviceOwnerFd !== undefined) return deviceOwnerFd;
  const text = process.env[DEVICE_OWNER_FD_ENV];
  if (text === undefined || !/^\d+$/.test(text)) return undefined;
  deviceOwnerFd = Number(text);
  native.fdSetInherit(deviceOwnerFd, false);
  return deviceOwnerFd;
}
/** Guest RAM's physical frames at boot, kept for the proof at the end of the run (read outside any blackout). */
const BOOT_FRAMES_PATH = '/vm0/boot-frames';

/** Carried from one VMM process to the next in the state file. */
export interface Plan {
  ramBytes: number;
  updatesLeft: number;
  maxDelayMs: number;
  seed: number;
  vcpus: number;
  /** Whether the guest has the demo device (its backend keeps running across every update). */
  device: boolean;
}

/** One JSON line per event on stdout, written synchronously so nothing is lost at execve. */
export function emit(record: Record<string, unknown>): void {
  fs.writeSync(1, `${JSON.stringify(record)}\n`);
}

/** Guest RAM's physical frames, or null where the kernel hides them (not root). */
export function framesOf(vmm: Vmm): string[] | null {
  try {
    return vmm.ram.physicalFrames().map(String);
  } catch {
    return null;
  }
}

/** Formats the pool, boots the demo guest, records its RAM's frames and reports it; returns the VMM and the plan. */
export function bootGuest(pool: Pool, args: string[]): { vmm: Vmm; plan: Plan } {
  const [ramText, stepsText, seedText, updatesText, delayText, vcpusText, recordsText, rateText] = args;
  const vcpus = Number(vcpusText ?? 1);
  const deviceRecords = Number(recordsText ?? 0);
  const ramBytes = Number(ramText);
  mkfs(pool, { force: true });
  const gfs = mount(pool);
  gfs.mkdir('/vm0');
  const vmm = Vmm.boot(gfs, { ...CONFIG, ramSize: ramBytes, vcpus }, { steps: Number(stepsText), seed: BigInt(seedText!), deviceRecords });
  if (deviceRecords > 0) {
    createDevice(gfs, vmm.ram, DEVICE_FILES);
    startDeviceBackend(pool, Number(rateText ?? 50_000));
  }
  gfs.create(BOOT_FRAMES_PATH, { type: 'plain' });
  gfs.write(BOOT_FRAMES_PATH, Buffer.from(JSON.stringify(framesOf(vmm))));
  emit({ event: 'boot', pid: process.pid });
  return {
    vmm,
    plan: {
      ramBytes,
      updatesLeft: Number(updatesText),
      maxDelayMs: Number(delayText),
      seed: Number(seedText),
      vcpus,
      device: deviceRecords > 0,
    },
  };
}

/**
 * Starts the device backend in a session of its own (it outlives every VMM process of the run) and waits for it to
 * say it is ready: it has pinned and mapped the guest's RAM and the device's files.
 */
function startDeviceBackend(pool: Pool, recordsPerSecond: number): void {
  const program = path.join(__dirname, 'device-backend.js');
  const args = [program, pool.path!, CONFIG.ramPath, DEVICE_FILES.iommuPath, DEVICE_FILES.devicePath, String(recordsPerSecond)];
  const [owner, backendEnd] = native.socketPair();
  let ready;
  try {
    ready = childProcess().spawnSync(process.execPath, ['-e', READY_WAITER, ...args], {
      stdio: ['ignore', 'pipe', 'inherit', backendEnd],
      encoding: 'utf8',
    });
  } finally {
    native.fdClose(backendEnd);
  }
  deviceOwnerFd = owner;
  process.env[DEVICE_OWNER_FD_ENV] = String(owner);
  const line = ready.stdout.trim();
  if (ready.status !== 0 || !line.includes('device-ready')) throw new Error(`the device backend did not start: ${line || ready.status}`);
  emit(JSON.parse(line) as Record<string, unknown>);
}

/**
 * Starts the backend detached and relays its ready line: a child of a throwaway process, so that no VMM process is
 * its parent (it is reparented to init when the waiter exits) and none waits on it. Its fd 3, the backend's end of
 * the lifeline, is the backend's fd 3 too.
 */
const READY_WAITER = `
const { spawn } = require('node:child_process');
const child = spawn(process.execPath, process.argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'inherit', 3] });
let out = '';
child.stdout.on('data', (chunk) => {
  out += chunk;
  if (out.includes('\\n')) { process.stdout.write(out); child.stdout.destroy(); child.unref(); process.exit(0); }
});
child.on('exit', (code) => process.exit(code || 1));
`;

/**
 * What a VMM that just took the guest over reports of the device (outside the blackout): the IOMMU table and device
 * state it adopted, as the backend that never stopped has them now.
 */
export function adoptedDevice(vmm: Vmm, plan: Plan): Record<string, unknown> {
  if (!plan.device) return {};
  deviceLifeline(); // close-on-exec again, now that it has come through

  const device = adoptDevice(vmm.fs, DEVICE_FILES);
  return { device: { ...device, startedNs: device.startedNs.toString() } };
}

/** Asks the device backend to stop and waits until it has; returns its final state. */
function stopDevice(vmm: Vmm): DeviceStats {
  const mapping = vmm.fs.map(DEVICE_FILES.devicePath);
  try {
    const words = new Int32Array(mapping.buffer, 0, 8);
    Atomics.store(words, FIELD.stopRequested / 4, 1);
    const deadline = Date.now() + DEVICE_STOP_TIMEOUT_MS;
    while (Atomics.load(words, FIELD.stopped / 4) === 0 && Date.now() < deadline) native.futexWait(mapping.id, FIELD.stopped, 0, 10);
    return readDeviceState(mapping, DEVICE_FILES.devicePath);
  } finally {
    mapping.unmap();
  }
}

/** A deterministic pseudo-random delay before the next update, so a run can be repeated. */
export function updateDelay(plan: Pick<Plan, 'seed' | 'updatesLeft' | 'maxDelayMs'>): Promise<void> {
  const delay = ((plan.seed * 2654435761 + plan.updatesLeft * 40503) >>> 0) % Math.max(1, plan.maxDelayMs);
  return new Promise((resolve) => setTimeout(resolve, delay));
}

/**
 * Ends a run with no updates left: waits for the guest's halt (a benchmark runs it without end and stops it instead),
 * reports its console output and whether guest RAM kept its physical frames, and lets go.
 */
export async function finishRun(vmm: Vmm, running: Promise<string>): Promise<void> {
  let reason: string;
  if (process.env.GUESTMEMFS_UPDATE_STOP_AFTER === '1') {
    await vmm.pause();
    reason = 'stopped';
  } else {
    reason = await running;
  }
  reportDone(vmm, reason);
}

/**
 * The resuming side's part of an update's breakdown, from Vmm.resume()'s timings: from `from` (the filesystem mounted)
 * to `running` (the vCPU back in KVM_RUN), what is not reading the state, mapping or restoring the vCPU is "other".
 */
export function resumeBreakdown(
  timings: { readStateMs: number; mapMs: number; vcpuMs: number },
  from: bigint,
  running: bigint,
): Record<string, number> {
  return {
    readStateMs: timings.readStateMs,
    mapMs: timings.mapMs,
    vcpuRestoreMs: timings.vcpuMs,
    otherMs: elapsedMs(from, running) - timings.readStateMs - timings.mapMs - timings.vcpuMs,
  };
}

/** The processes the kernel shows holding pins on guest RAM (read from /proc after an update, outside its blackout). */
export function ramPinners(vmm: Vmm): number[] {
  return [...new Set(pinHolders(vmm.fs.pool, vmm.ram.extents).flatMap((holder) => holder.pids))].sort((a, b) => a - b);
}

/** Whether guest RAM is on the physical frames it had at boot (null where the kernel hides frames). */
export function sameFramesAsBoot(vmm: Vmm): boolean | null {
  const atBoot = JSON.parse(Buffer.from(vmm.fs.read(BOOT_FRAMES_PATH)).toString('utf8')) as string[] | null;
  const now = framesOf(vmm);
  return atBoot && now ? JSON.stringify(now) === JSON.stringify(atBoot) : null;
}

export function reportDone(vmm: Vmm, reason: string, extra: Record<string, unknown> = {}): void {
  const device = vmm.fs.exists(DEVICE_FILES.devicePath) ? stopDevice(vmm) : undefined;
  emit({
    event: 'done',
    pid: process.pid,
    reason,
    serial: vmm.serial(),
    sameFrames: sameFramesAsBoot(vmm),
    ...(device ? { device: { ...device, startedNs: device.startedNs.toString() } } : {}),
    ...extra,
  });
  vmm.close();
  vmm.fs.unmount();
}

/** Set to 1 to skip the rehearsal (to measure what a cold update path costs). */
export const NO_REHEARSAL_ENV = 'GUESTMEMFS_NO_REHEARSAL';
/** Enough rounds for V8 to compile the update path's hot functions with its optimizing tiers. */
const REHEARSAL_ROUNDS = Number(process.env.GUESTMEMFS_REHEARSAL_ROUNDS ?? 30);
let rehearsed = false;

/**
 * Runs a whole live update (premap, serialise, release, restore, attach, save, wait, resume, run) on a small scratch pool and a
 * scratch VM, so that the code of the real one is compiled, its lazily loaded parts are loaded and the worker thread
 * pool that runs vCPUs exists before the guest pauses: run cold, the same code costs several times as much inside the
 * blackout. Touches nothing of the real pool. Runs once per process.
 */
export async function rehearseUpdate(vcpus = 1, rounds = REHEARSAL_ROUNDS): Promise<void> {
  if (process.env[NO_REHEARSAL_ENV] === '1' || rehearsed) return;
  rehearsed = true;
  const scratch = Pool.create({ backend: 'memfd-4k', size: 8 * MiB });
  try {
    mkfs(scratch, { force: true });
    const booted = mount(scratch);
    booted.mkdir('/vm0');
    let vmm = Vmm.boot(booted, { ...CONFIG, ramSize: 2 * MiB, vcpus }, { steps: 1, seed: 1n });
    const extra = { plan: { ramBytes: 0, updatesLeft: 0, maxDelayMs: 0, seed: 0, vcpus, device: false } };
    for (let round = 0; round < rounds; round++) {
      const prepared = Vmm.prepareResume(scratch, CONFIG, vcpus); // the successor, ahead of time
      vmm.ensureStateRoom(); // the sender's prepare phase
      vmm.clearSavedState();
      vmm.fs.serialise();
      vmm.fs.unmount();
      const successor = Vmm.attach(mount(scratch, { requireHandover: true }), CONFIG, prepared).vmm;
      vmm.saveState(process.hrtime.bigint(), extra); // the blackout
      successor.waitForSavedState();
      successor.restoreSaved();
      vmm.close();
      vmm = successor;
    }
    const reason = await vmm.start();
    vmm.close();
    vmm.fs.unmount();
    if (reason !== 'halted') throw new Error(`the rehearsal guest stopped (${reason}) instead of halting`);
  } finally {
    scratch.close();
  }
}

/** V8's gc(), with the options it takes: `{ type: 'minor' }` runs a scavenge only. */
type CollectGarbage = (options: { type: 'minor' }) => void;
let scavenge: CollectGarbage | undefined;

/**
 * Collects garbage now, while the guest still runs: the young generation starts empty, so the few hundred KiB the
 * blackout allocates do not trigger a scavenge (about 1 ms) inside it. A scavenge, not a full collection: a full one
 * leaves sweeping to V8's worker threads, which then contend with the vCPU threads for the CPUs while they pause and
 * save (2-vCPU transfer updates at 4 GiB, 21 each: a median of 0.50 ms after a full collection, 0.42 after a scavenge).
 */
export function collectGarbageBeforeBlackout(): void {
  if (!scavenge) {
    // Loaded here, not at the top: node:v8 costs ~2 ms to load, and an exec-mode successor loads this module inside
    // the blackout.
    /* eslint-disable @typescript-eslint/no-require-imports */
    (require('node:v8') as { setFlagsFromString: typeof setFlagsFromString }).setFlagsFromString('--expose-gc');
    scavenge = (require('node:vm') as { runInNewContext: typeof runInNewContext }).runInNewContext('gc') as CollectGarbage;
    /* eslint-enable @typescript-eslint/no-require-imports */
  }
  scavenge({ type: 'minor' });
}

// Live update in transfer mode, as a runnable program (the model of QEMU's cpr-transfer and Cloud Hypervisor's local
// migration): the running VMM starts its successor ahead of time. At the update, while the guest still runs, it
// serialises the filesystem and lets go of it, and the successor restores it and attaches to guest RAM and the state
// file (the prepare phase of Linux's live update orchestrator: only guest memory and the saved state change from here
// on, and neither is metadata). Then the guest pauses: each vCPU's thread saves it into the state file, the last one
// publishes them, and the successor's vCPU threads, asleep on that file, load their own, report the commit point and
// run. The blackout holds only the vCPU states' trip through shared memory, with no JavaScript of either process in
// it. If the successor dies or refuses at any point before its commit point, the original takes the pool back and
// resumes the guest.
//
// The two talk over the successor's stdin (sender to successor: "handover" once the pool is serialised and released,
// then the sender's timings) and fd 3 (successor to sender: "ready" once prepared, "armed" once it has restored the
// filesystem and spins on the state file, "resuming" at its commit point, just before its vCPU runs).
//
//   node transfer-update.js boot <pool> <ramBytes> <steps> <seed> <updates> <maxDelayMs> [vcpus]
//   node transfer-update.js successor <pool> <vcpus>    (started by the running VMM)
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import * as fs from 'node:fs';
import type { Filesystem } from '../fs/filesystem';
import { mount } from '../fs/mount';
import { native } from '../native';
import { Pool } from '../pool/pool';
import { elapsedMs } from '../units';
import {
  bootGuest,
  CONFIG,
  emit,
  finishRun,
  type Plan,
  rehearseUpdate,
  reportDone,
  sameFramesAsBoot,
  collectGarbageBeforeBlackout,
  ramPinners,
  updateDelay,
  adoptedDevice,
  DEVICE_OWNER_FD_ENV,
  deviceLifeline,
} from './update-common';
import { lineReader } from './line-reader';
import { type PreparedResume, Vmm } from './vmm';

/** Test hook: the first successor refuses the handover (exits without taking over), to prove a refused update loses nothing. */
const REFUSE_FIRST_ENV = 'GUESTMEMFS_TRANSFER_REFUSE_FIRST';
/**
 * Test hook: the first successor dies inside the blackout (after restoring the pool and seeing the saved state,
 * before its commit point). It waits for the state in JavaScript to stop there, where the native path would commit.
 */
const DIE_FIRST_ENV = 'GUESTMEMFS_TRANSFER_DIE_FIRST';
/** The successor's end of the pipe on which it reports (fd 0 brings the sender's news, fd 1 and 2 are shared). */
const REPORT_FD = 3;
/** Where a successor finds the device lifeline (deviceLifeline()), when the guest has the demo device. */
const SUCCESSOR_LIFELINE_FD = 4;
/** Sender to successor: the pool is serialised and released; restore it, attach, and wait for the saved state. */
const HANDED_OVER = 'handover';
/**
 * Successor to sender: prepared (before the update), armed (the pool restored, guest RAM and the state file attached,
 * its vCPUs waiting on the state file: the guest may pause now), and resuming: the commit point, written by its first
 * vCPU's thread once every vCPU is loaded, just before they run. Until then the sender may take the guest back; after
 * it, never.
 */
const READY = 'ready';
const ARMED = 'armed';
const RESUMING = 'resuming';
/** How long after the commit point the old VMM waits before tearing its VM down: the successor resumes well within it. */
const TEARDOWN_DELAY_MS = 50;

/** The sender's timings; sent on the successor's stdin once the state is saved, read after the resume. */
interface SenderTimings {
  /** Serialising and releasing the filesystem, before the pause. */
  serialiseMs: number;
  /** When the last vCPU stopped (CLOCK_MONOTONIC ns, as a string): the pause signal's reach, apart from the save. */
  lastStoppedAtNs: string;
}

/** Starts the successor and resolves once it has prepared everything it can before the update (or rejects if it died). */
async function startSuccessor(poolPath: string, env: NodeJS.ProcessEnv, vcpus: number) {
  // The device lifeline goes along as the successor's fd 4: with it, the successor keeps the backend alive.
  const lifeline = deviceLifeline();
  const child = spawn(process.execPath, [...process.execArgv, __filename, 'successor', poolPath, String(vcpus)], {
    stdio: ['pipe', 'inherit', 'inherit', 'pipe', ...(lifeline === undefined ? [] : [lifeline])],
    env: lifeline === undefined ? env : { ...env, [DEVICE_OWNER_FD_ENV]: String(SUCCESSOR_LIFELINE_FD) },
  });
  child.stdin!.on('error', () => {}); // a successor that already died cannot be told; the exit below handles it
  const nextReport = lineReader(child.stdio[REPORT_FD] as Readable);
  if ((await nextReport()) !== READY) throw new Error(`successor pid ${child.pid} exited before it was ready`);
  return {
    child,
    /** Tells the successor the pool is released; resolves with whether it armed (false if it refused or died). */
    handOver: async () => {
      child.stdin!.write(`${HANDED_OVER}\n`);
      return (await nextReport()) === ARMED;
    },
    tell: (timings: SenderTimings) => child.stdin!.end(`${JSON.stringify(timings)}\n`),
    /** Whether the successor reached its commit point (false if it exited or closed the pipe before). */
    committed: async () => (await nextReport()) === RESUMING,
    /** Lets the successor live on without this process: nothing here waits for it any more, so this one can exit. */
    detach: () => {
      (child.stdio[REPORT_FD] as Readable).destroy();
      child.stdin!.destroy();
      child.unref();
    },
  };
}

/** Reads one line from stdin, blocking; null at end of file (the sender is gone). */
function readLine(): string | null {
  const byte = Buffer.alloc(1);
  let line = '';
  for (;;) {
    if (fs.readSync(0, byte, 0, 1, null) === 0) return null;
    if (byte[0] === 0x0a) return line;
    line += String.fromCharCode(byte[0]!);
  }
}

/** The environment of the next successor: a test hook set for the first one only. */
function successorEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const [hook, effect] of [
    [REFUSE_FIRST_ENV, 'GUESTMEMFS_TRANSFER_REFUSE'],
    [DIE_FIRST_ENV, 'GUESTMEMFS_TRANSFER_DIE'],
  ] as const) {
    delete env[hook];
    if (process.env[hook] === '1') env[effect] = '1';
    delete process.env[hook];
  }
  return env;
}

async function drive(
  poolPath: string,
  pool: Pool,
  vmm: Vmm,
  plan: Plan,
  onRunning?: (at: bigint) => void,
  alreadyRunning?: Promise<string>,
): Promise<void> {
  const running = alreadyRunning ?? vmm.start();
  if (onRunning) onRunning(await vmm.runningSince());
  if (plan.updatesLeft === 0) return finishRun(vmm, running);
  // What the VMM after this update carries on with.
  const next = { ...plan, updatesLeft: plan.updatesLeft - 1 };
  // The successor starts now, long before the update, and prepares its VM: its start-up is outside the blackout.
  const successor = await startSuccessor(poolPath, successorEnv(), plan.vcpus);
  await rehearseUpdate(plan.vcpus);
  await updateDelay(plan);
  // Prepare phase, the guest still running: serialise and let go of the filesystem; the successor restores it.
  const gfs: Filesystem = vmm.fs;
  vmm.ensureStateRoom();
  // Cleared before the successor waits on it, and from now on a pause saves the vCPUs on their own threads.
  vmm.armHandover();
  const serialiseStarted = process.hrtime.bigint();
  gfs.serialise();
  gfs.unmount(); // stays serialised; the mount lock goes to whoever takes it next
  const serialiseMs = elapsedMs(serialiseStarted);
  const armed = await successor.handOver();
  let stoppedAtNs: bigint | undefined;
  if (armed) {
    collectGarbageBeforeBlackout();
    // Every vCPU is asked to stop now (pause() asks before its first await). From then on the blackout is the vCPU
    // threads' (these and the successor's): this thread takes only the CPU time they leave.
    const pausing = vmm.pause();
    native.setThreadPolicy('idle');
    const paused = await pausing;
    stoppedAtNs = paused.stoppedAtNs;
    if (paused.reason === 'halted') {
      native.setThreadPolicy('normal');
      // The guest finished before this update: nothing left to update across.
      const { vmm: halted } = await takeBack(pool, vmm, successor.child, plan, { stoppedAtNs, saved: false });
      reportDone(halted, paused.reason, { updatesSkipped: plan.updatesLeft });
      return;
    }
    // The vCPUs are published by now (their threads did it); this adds the rest, which the successor reads later.
    vmm.saveState(stoppedAtNs, { plan: next });
    successor.tell({ serialiseMs, lastStoppedAtNs: vmm.machine.lastRunStoppedAt().toString() });
    // Wait for the successor's commit point or its end; no polling. Tearing down the old VM (milliseconds of kernel
    // work for large RAM) waits until the successor's vCPU runs, so that it stays out of the blackout.
    const committed = await successor.committed();
    native.setThreadPolicy('normal');
    if (committed) {
      await new Promise((resolve) => setTimeout(resolve, TEARDOWN_DELAY_MS));
      vmm.close();
      successor.detach();
      return; // handed over: this VMM is done and exits
    }
  }
  // The successor is gone without taking over: resume the guest here.
  const back = await takeBack(pool, vmm, successor.child, next, stoppedAtNs === undefined ? undefined : { stoppedAtNs, saved: true });
  emit({
    event: 'update-failed',
    pid: process.pid,
    error: `successor pid ${successor.child.pid} exited without taking over`,
    pausedBeforeFailure: armed,
    resumedAfterMs: elapsedMs(back.stoppedAtNs),
  });
  await drive(poolPath, pool, back.vmm, next);
}

/**
 * Takes the guest back from a successor that will not run it: stops the successor (and waits for its end, so that it
 * cannot see a save made after this), takes the pool back (this process's own handover, or a recovery if the
 * successor died holding it) and resumes the VMM here from its saved state. A guest not yet paused is paused, and a
 * state not yet saved is saved, carrying `plan`.
 */
async function takeBack(
  pool: Pool,
  vmm: Vmm,
  successor: ChildProcess,
  plan: Plan,
  paused?: { stoppedAtNs: bigint; saved: boolean },
): Promise<{ vmm: Vmm; stoppedAtNs: bigint }> {
  if (successor.exitCode === null && successor.signalCode === null) {
    successor.kill('SIGKILL');
    await once(successor, 'exit');
  }
  const stoppedAtNs = paused?.stoppedAtNs ?? (await vmm.pause()).stoppedAtNs;
  if (!paused?.saved) vmm.saveState(stoppedAtNs, { plan });
  vmm.close();
  return { vmm: Vmm.resume(mount(pool), CONFIG).vmm, stoppedAtNs };
}

async function main(): Promise<void> {
  const [mode, poolPath, ...args] = process.argv.slice(2);
  const pool = Pool.open(poolPath!);
  if (mode === 'boot') {
    const { vmm, plan } = bootGuest(pool, args);
    await drive(poolPath!, pool, vmm, plan);
    return;
  }
  // successor: started ahead of time. It prepares, says it is ready and sleeps until the pool is handed over; then it
  // restores it, attaches, and spins until the guest's state is saved.
  const refuse = process.env.GUESTMEMFS_TRANSFER_REFUSE === '1';
  let prepared: PreparedResume | undefined;
  const vcpus = Number(args[0] ?? 1);
  if (!refuse) {
    await rehearseUpdate(vcpus);
    const { ramError, ...made } = Vmm.prepareResume(pool, CONFIG, vcpus);
    // Not fatal: guest RAM is then mapped and registered when the pool is handed over (still before the pause).
    if (ramError) emit({ event: 'premap-failed', pid: process.pid, error: ramError });
    prepared = made;
  }
  fs.writeSync(REPORT_FD, `${READY}\n`);
  const handedOver = readLine();
  if (handedOver !== HANDED_OVER)
    throw new Error(`the running VMM closed the handover pipe without an update (it sent ${JSON.stringify(handedOver)})`);
  if (refuse) {
    emit({ event: 'successor-refused', pid: process.pid });
    return;
  }
  const restoreStarted = process.hrtime.bigint();
  const gfs = mount(pool, { requireHandover: true });
  const restoreMs = elapsedMs(restoreStarted);
  const { vmm, mapMs, premapped } = Vmm.attach(gfs, CONFIG, prepared);
  collectGarbageBeforeBlackout();
  const senderPid = process.ppid;
  const abandoned = () => process.ppid !== senderPid;
  if (process.env.GUESTMEMFS_TRANSFER_DIE === '1') {
    fs.writeSync(REPORT_FD, `${ARMED}\n`);
    vmm.waitForSavedState({ abandoned });
    process.kill(process.pid, 'SIGKILL');
  }
  const running = vmm.resumeFromHandover(REPORT_FD);
  let ranAt: bigint;
  try {
    // Armed only once every vCPU's thread waits on the state file: a thread still to start when the guest pauses
    // would queue for a CPU behind the running guest's vCPUs, for a time slice or more.
    await vcpusWaiting(vmm, running);
    fs.writeSync(REPORT_FD, `${ARMED}\n`);
    // As the sender's: the blackout is the vCPU threads'.
    native.setThreadPolicy('idle');
    // The wait is cancelled ('cancelled') when the sender is gone.
    ranAt = await vmm.runningSince({ abandoned });
  } catch (error) {
    vmm.machine.pause(); // a vCPU still waiting for the handover ends, 'cancelled'
    const reason = await running.catch((failure: Error) => failure.message);
    emit({ event: 'successor-gave-up', pid: process.pid, error: `${(error as Error).message} (${reason})` });
    return;
  } finally {
    native.setThreadPolicy('normal');
  }
  const noticed = vmm.handoverNoticedAt();
  const saved = vmm.adoptSavedJson({ abandoned });
  const plan = saved.extra.plan as Plan;
  const sender = JSON.parse(readLine() ?? 'null') as SenderTimings | null;
  if (!sender) throw new Error('the previous VMM sent no timings');
  emit({
    event: 'update',
    mode: 'transfer',
    pid: process.pid,
    vcpus: vmm.machine.vcpus.length,
    blackoutMs: elapsedMs(BigInt(saved.stoppedAtNs), ranAt),
    premapped,
    sameFrames: sameFramesAsBoot(vmm),
    ramPinnedBy: ramPinners(vmm),
    blackoutNs: [saved.stoppedAtNs, ranAt.toString()],
    ...adoptedDevice(vmm, plan),
    // Done while the guest still ran in the previous VMM: outside the blackout.
    beforePause: { serialiseMs: sender.serialiseMs, restoreMs, mapMs },
    breakdown: {
      // From the first vCPU stopping to the last (0 with one vCPU).
      stopSkewMs: elapsedMs(BigInt(saved.stoppedAtNs), BigInt(sender.lastStoppedAtNs)),
      // From that to the last one's state published, on the sender's vCPU threads.
      saveMs: elapsedMs(BigInt(sender.lastStoppedAtNs), vmm.savedAtNs),
      // From that to the first of this process's vCPU threads waking.
      signalMs: elapsedMs(vmm.savedAtNs, noticed),
      // Loading every vCPU, the commit point, and the last one entering KVM_RUN.
      resumeMs: elapsedMs(noticed, ranAt),
    },
  });
  await drive(poolPath!, pool, vmm, plan, undefined, running);
}

/** Waits (a millisecond at a time) until every vCPU thread of a resumeFromHandover() waits for the handover. */
async function vcpusWaiting(vmm: Vmm, running: Promise<string>): Promise<void> {
  let ended = false;
  void running.finally(() => (ended = true));
  while (!vmm.machine.awaitingHandover()) {
    if (ended) throw new Error('the vCPUs stopped before the handover');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

main().catch((error: Error) => {
  process.stderr.write(`transfer-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

// Live update in exec mode, as a runnable program: boot the demo guest, and at chosen moments serialise the filesystem
// (the guest still running), pause the guest, save its state and execve a fresh copy of this program (same PID), which
// restores and resumes the guest.
//
//   node exec-update.js boot   <pool> <ramBytes> <steps> <seed> <updates> <maxDelayMs> [vcpus]
//   (resume is this program exec'ing itself; the pool comes back through GUESTMEMFS_POOL)
//
// Each process prints one JSON line per event on stdout: an `update` line with the blackout and its breakdown, and a
// final `done` line with the guest's console output and whether guest RAM stayed on the same physical frames.
import { mount } from '../fs/mount';
import { openHandedOverPool } from '../fs/successor';
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
  resumeBreakdown,
  sameFramesAsBoot,
  ramPinners,
  updateDelay,
  adoptedDevice,
  collectGarbageBeforeBlackout,
} from './update-common';
import { type CodeCacheHandoff, dropCodeCache, handOverCodeCache } from './code-cache';
import { Vmm } from './vmm';

const TIMINGS_ENV = 'GUESTMEMFS_UPDATE_TIMINGS';
/** Test hook: the first update execs a program that does not exist, to prove a failed update loses nothing. */
const FAIL_FIRST_EXEC_ENV = 'GUESTMEMFS_UPDATE_FAIL_FIRST_EXEC';
/** The launcher that started this program from its bundle (exec-launcher.ts), if one did. */
const launcher = globalThis.guestmemfsExecLauncher;

/** Runs the guest; after a random delay (if updates remain) updates it, otherwise waits for it to finish. */
async function drive(vmm: Vmm, plan: Plan, onRunning?: (at: bigint) => void): Promise<void> {
  const running = vmm.start();
  if (onRunning) onRunning(await vmm.runningSince());
  if (plan.updatesLeft === 0) return finishRun(vmm, running);
  await rehearseUpdate(plan.vcpus);
  await updateDelay(plan);
  // What the VMM after this update carries on with.
  const next = { ...plan, updatesLeft: plan.updatesLeft - 1 };
  // Prepare phase, the guest still running: serialise the filesystem (its metadata cannot change from here on; the
  // state file's contents still can).
  const gfs = vmm.fs;
  vmm.ensureStateRoom();
  const serialiseStarted = process.hrtime.bigint();
  gfs.serialise();
  const serialiseMs = elapsedMs(serialiseStarted);
  // The update path has run (rehearsed) by now: its compiled code goes to the next process. Before the collection
  // below, whose --expose-gc would make V8 reject the cache in a process without it.
  const cacheStarted = process.hrtime.bigint();
  const codeCache: CodeCacheHandoff | undefined = launcher ? handOverCodeCache(launcher) : undefined;
  const codeCacheMs = elapsedMs(cacheStarted);
  collectGarbageBeforeBlackout();
  const { reason, stoppedAtNs } = await vmm.pause();
  if (reason === 'halted') {
    // The guest finished before this update: nothing left to update across.
    dropCodeCache(codeCache);
    gfs.abort();
    reportDone(vmm, reason, { updatesSkipped: plan.updatesLeft });
    return;
  }
  const saved = vmm.saveState(stoppedAtNs, { plan: next });
  vmm.close();
  // The stop time travels in the state file; these are the rest of the sender's half.
  const timings = { serialiseMs, codeCacheMs, saved: saved.toString(), execAt: process.hrtime.bigint().toString() };
  const env: NodeJS.ProcessEnv = { ...process.env, ...codeCache?.env, [TIMINGS_ENV]: JSON.stringify(timings) };
  const failThisOne = env[FAIL_FIRST_EXEC_ENV] === '1';
  delete env[FAIL_FIRST_EXEC_ENV];
  try {
    gfs.kexec(
      [failThisOne ? '/nonexistent/guestmemfs-vmm' : process.execPath, ...process.execArgv, launcher?.entry ?? __filename, 'resume'],
      { env, keepFds: codeCache ? [codeCache.fd] : [] },
    );
  } catch (error) {
    dropCodeCache(codeCache);
    // This process keeps the filesystem: abort the handover it made and take the guest back from its state file.
    delete process.env[FAIL_FIRST_EXEC_ENV];
    if (gfs.serialised) gfs.abort();
    const { vmm: again } = Vmm.resume(gfs, CONFIG);
    emit({ event: 'update-failed', pid: process.pid, error: (error as Error).message, resumedAfterMs: elapsedMs(stoppedAtNs) });
    await drive(again, next);
  }
}

async function main(): Promise<void> {
  const [mode, poolPath, ...args] = process.argv.slice(2);
  if (mode === 'boot') {
    const { vmm, plan } = bootGuest(Pool.open(poolPath!), args);
    await drive(vmm, plan);
    return;
  }
  // resume: this program, exec'd by its previous self.
  const timings = JSON.parse(process.env[TIMINGS_ENV] ?? '{}') as {
    serialiseMs: number;
    codeCacheMs: number;
    saved: string;
    execAt: string;
  };
  const started = process.hrtime.bigint();
  // Without the launcher, Node start-up and module loading cannot be told apart: both count as start-up.
  const launchedAt = launcher?.launchedAtNs ?? started;
  const gfs = mount(openHandedOverPool());
  const restored = process.hrtime.bigint();
  const { vmm, saved, timings: resumeTimings } = Vmm.resume(gfs, CONFIG);
  const plan = saved.extra.plan as Plan;
  // The blackout ends when the vCPU is handed back to KVM.
  await drive(vmm, plan, (running) => {
    emit({
      event: 'update',
      mode: 'exec',
      pid: process.pid,
      vcpus: vmm.machine.vcpus.length,
      blackoutMs: elapsedMs(BigInt(saved.stoppedAtNs), running),
      sameFrames: sameFramesAsBoot(vmm),
      ramPinnedBy: ramPinners(vmm),
      blackoutNs: [saved.stoppedAtNs, running.toString()],
      ...adoptedDevice(vmm, plan),
      // Done while the guest still ran: outside the blackout.
      beforePause: { serialiseMs: timings.serialiseMs, codeCacheMs: timings.codeCacheMs },
      codeCache: launcher?.codeCache ?? 'none',
      breakdown: {
        saveMs: elapsedMs(BigInt(saved.stoppedAtNs), BigInt(timings.saved)),
        execAndStartupMs: elapsedMs(BigInt(timings.execAt), launchedAt),
        loadMs: elapsedMs(launchedAt, started),
        restoreMs: elapsedMs(started, restored),
        ...resumeBreakdown(resumeTimings, restored, running),
      },
    });
  });
}

main().catch((error: Error) => {
  process.stderr.write(`exec-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

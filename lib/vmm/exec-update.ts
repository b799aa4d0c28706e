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
import { type ExecHolder, takeExecHolder } from '../process';
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
  lifelineFds,
} from './update-common';
import { type CodeCacheHandoff, dropCodeCache, handOverCodeCache } from './code-cache';
import { EARLY_RESUME_ENV } from './early-resume';
import { type SavedVmm, Vmm } from './vmm';

const TIMINGS_ENV = 'GUESTMEMFS_UPDATE_TIMINGS';
/** Test hook: the first update execs a program that does not exist, to prove a failed update loses nothing. */
const FAIL_FIRST_EXEC_ENV = 'GUESTMEMFS_UPDATE_FAIL_FIRST_EXEC';
/** Test hook: leave no early-resume spec, so that the new process resumes the guest only once it has mounted. */
const NO_EARLY_RESUME_ENV = 'GUESTMEMFS_UPDATE_NO_EARLY_RESUME';
/** The launcher that started this program from its bundle (exec-launcher.ts), if one did. */
const launcher = globalThis.guestmemfsExecLauncher;

/** Runs the guest; after a random delay (if updates remain) updates it, otherwise waits for it to finish. */
async function drive(vmm: Vmm, plan: Plan, onRunning?: (at: bigint) => void, running = vmm.start()): Promise<void> {
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
  // Each vCPU saves itself into its slot on its own thread as the pause stops it: no ioctl round trips from here.
  vmm.armHandover();
  const { reason, stoppedAtNs } = await vmm.pause();
  if (reason === 'halted') {
    // The guest finished before this update: nothing left to update across.
    dropCodeCache(codeCache);
    gfs.abort();
    reportDone(vmm, reason, { updatesSkipped: plan.updatesLeft });
    return;
  }
  const saved = vmm.saveState(stoppedAtNs, { plan: next });
  const earlyResume = process.env[NO_EARLY_RESUME_ENV] === '1' ? {} : { [EARLY_RESUME_ENV]: JSON.stringify(vmm.earlyResumeSpec()) };
  vmm.close();
  // The stop time travels in the state file; these are the rest of the sender's half. `closed` is where execve and
  // Node start-up begin.
  const timings = { serialiseMs, codeCacheMs, saved: saved.toString(), closed: process.hrtime.bigint().toString() };
  const env: NodeJS.ProcessEnv = { ...process.env, ...codeCache?.env, ...earlyResume, [TIMINGS_ENV]: JSON.stringify(timings) };
  const failThisOne = env[FAIL_FIRST_EXEC_ENV] === '1';
  delete env[FAIL_FIRST_EXEC_ENV];
  try {
    gfs.kexec(
      [failThisOne ? '/nonexistent/guestmemfs-vmm' : process.execPath, ...process.execArgv, launcher?.entry ?? __filename, 'resume'],
      // The old image's address space (80 to 100 MB of Node) is torn down by a holder while the guest runs again.
      { env, keepFds: [...(codeCache?.fds ?? []), ...lifelineFds()], deferTeardown: true },
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
    closed: string;
  };
  const started = process.hrtime.bigint();
  // Without the launcher, Node start-up and module loading cannot be told apart: both count as start-up.
  const launchedAt = launcher?.launchedAtNs ?? started;
  const early = launcher?.earlyResume;
  // Taken before openHandedOverPool() would let it go: the old image's teardown waits until the guest runs.
  const oldImage = takeExecHolder();
  const gfs = mount(openHandedOverPool());
  const restored = process.hrtime.bigint();
  const sender = {
    beforePause: { serialiseMs: timings.serialiseMs, codeCacheMs: timings.codeCacheMs },
    codeCache: launcher?.codeCaches.bundle.taken ?? 'none',
    earlyResumeCodeCache: launcher?.codeCaches.earlyResume.taken ?? 'none',
  };
  if (early && !('error' in early)) {
    // The launcher runs the guest already: the blackout ended before this program loaded.
    const { vmm, saved, running } = await Vmm.adoptEarlyResume(gfs, CONFIG, early);
    const adopted = process.hrtime.bigint();
    const stamps = early.stampsNs;
    await drive(
      vmm,
      saved.extra.plan as Plan,
      (runningAt) =>
        reportUpdate(vmm, saved, runningAt, oldImage, {
          ...sender,
          earlyResume: true,
          breakdown: {
            saveMs: elapsedMs(BigInt(saved.stoppedAtNs), BigInt(timings.saved)),
            closeMs: elapsedMs(BigInt(timings.saved), BigInt(timings.closed)),
            execAndStartupMs: elapsedMs(BigInt(timings.closed), stamps.launched),
            addonMs: elapsedMs(stamps.launched, stamps.addon),
            mapMs: elapsedMs(stamps.addon, stamps.mapped),
            vmMs: elapsedMs(stamps.mapped, stamps.vm),
            vcpuRestoreMs: elapsedMs(stamps.vm, runningAt),
          },
          // With the guest running: loading the bundle, mounting the pool, adopting the VM and its mappings.
          afterResume: {
            loadMs: elapsedMs(stamps.vm, started),
            mountMs: elapsedMs(started, restored),
            adoptMs: elapsedMs(restored, adopted),
          },
        }),
      running,
    );
    return;
  }
  const { vmm, saved, timings: resumeTimings } = Vmm.resume(gfs, CONFIG);
  // The blackout ends when the vCPU is handed back to KVM.
  await drive(vmm, saved.extra.plan as Plan, (running) =>
    reportUpdate(vmm, saved, running, oldImage, {
      ...sender,
      earlyResume: early ? early.error : false,
      breakdown: {
        saveMs: elapsedMs(BigInt(saved.stoppedAtNs), BigInt(timings.saved)),
        execAndStartupMs: elapsedMs(BigInt(timings.closed), launchedAt),
        loadMs: elapsedMs(launchedAt, started),
        restoreMs: elapsedMs(started, restored),
        ...resumeBreakdown(resumeTimings, restored, running),
      },
    }),
  );
}

/**
 * The `update` event of an exec-mode successor, once its guest runs (the proofs are read outside the blackout); the
 * old image's address space may go now.
 */
function reportUpdate(vmm: Vmm, saved: SavedVmm, running: bigint, oldImage: ExecHolder | undefined, parts: Record<string, unknown>): void {
  void oldImage?.release();
  emit({
    event: 'update',
    mode: 'exec',
    pid: process.pid,
    vcpus: vmm.machine.vcpus.length,
    blackoutMs: elapsedMs(BigInt(saved.stoppedAtNs), running),
    sameFrames: sameFramesAsBoot(vmm),
    ramPinnedBy: ramPinners(vmm),
    blackoutNs: [saved.stoppedAtNs, running.toString()],
    ...adoptedDevice(vmm, saved.extra.plan as Plan),
    ...parts,
  });
}

main().catch((error: Error) => {
  process.stderr.write(`exec-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

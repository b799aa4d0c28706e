// Live update in transfer mode, as a runnable program (the model of QEMU's cpr-transfer and Cloud Hypervisor's local
// migration): the running VMM starts its successor ahead of time; at the update it pauses the guest, saves its state,
// serialises and lets go of the pool; the successor, already waiting, restores and resumes it. If the successor dies or
// refuses, the original takes its own handover back and resumes the guest.
//
// The two talk over the successor's stdin (sender to successor: "pausing", then the sender's timings) and fd 3
// (successor to sender: "ready" once prepared, "spinning" once it busy-waits for the release, "resuming" at its commit
// point, just before its vCPU runs).
//
//   node transfer-update.js boot <pool> <ramBytes> <steps> <seed> <updates> <maxDelayMs>
//   node transfer-update.js successor <pool>            (started by the running VMM)
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import type { Readable } from 'node:stream';
import * as fs from 'node:fs';
import { type Filesystem, mount } from '../fs/filesystem';
import { spinForHandover } from '../handover/successor';
import { native } from '../native';
import { Pool } from '../pool/pool';
import { bootGuest, CONFIG, emit, finishRun, ms, type Plan, rehearseUpdate, reportDone, resumeBreakdown, sameFramesAsBoot, updateDelay, collectGarbageBeforeBlackout } from './update-common';
import { type PreparedResume, Vmm } from './vmm';

/** Test hook: the first successor refuses the handover (exits without taking over), to prove a refused update loses nothing. */
const REFUSE_FIRST_ENV = 'GUESTMEMFS_TRANSFER_REFUSE_FIRST';
/** The successor's end of the pipe on which it reports (fd 0 brings the sender's news, fd 1 and 2 are shared). */
const REPORT_FD = 3;
/** Sender to successor: the guest is about to pause, start spinning for the handover. */
const PAUSING = 'pausing';
/**
 * Successor to sender: prepared (before the first announce), spinning (after it), and resuming: the commit point,
 * written just before its vCPU runs. Until then the sender may take the guest back; after it, never.
 */
const READY = 'ready';
const SPINNING = 'spinning';
const RESUMING = 'resuming';
/** How long after the commit point the old VMM waits before tearing its VM down: the successor resumes well within it. */
const TEARDOWN_DELAY_MS = 50;

/** The sender's half of the blackout; sent on the successor's stdin as the pool is let go, read after the resume. */
interface SenderTimings {
  saveMs: number;
  serialiseMs: number;
  releasedAtNs: string;
}

/** Reads a stream line by line: each call resolves with the next line, or null once the stream has ended or failed. */
function lineReader(stream: Readable): () => Promise<string | null> {
  const lines = readline.createInterface({ input: stream, crlfDelay: Infinity })[Symbol.asyncIterator]();
  return async () => {
    try {
      const next = await lines.next();
      return next.done ? null : next.value;
    } catch {
      return null;
    }
  };
}

/** Starts the successor and resolves once it has prepared everything it can before the pause (or rejects if it died). */
async function startSuccessor(poolPath: string, refuse: boolean) {
  const env = { ...process.env };
  delete env[REFUSE_FIRST_ENV];
  if (refuse) env.GUESTMEMFS_TRANSFER_REFUSE = '1';
  const child = spawn(process.execPath, [...process.execArgv, __filename, 'successor', poolPath], { stdio: ['pipe', 'inherit', 'inherit', 'pipe'], env });
  child.stdin!.on('error', () => {}); // a successor that already died cannot be told; the exit below handles it
  const nextReport = lineReader(child.stdio[REPORT_FD] as Readable);
  if ((await nextReport()) !== READY) throw new Error(`successor pid ${child.pid} exited before it was ready`);
  return {
    child,
    /**
     * Tells the successor the pause is imminent and waits until it spins (or has gone), so that it notices the release
     * at once: waking it from a sleep takes longer than the sender's half of the update.
     */
    announce: async () => {
      child.stdin!.write(`${PAUSING}\n`);
      await nextReport(); // SPINNING, or null from a successor that died: that is found after the release
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

/**
 * Puts this process's main thread on its own CPU for the blackout (the sender on the first allowed CPU, the successor
 * on the last): on one CPU the spinning successor would wait behind the sender's whole half of the update. Returns
 * the undo. Nothing to do with a single CPU.
 */
function pinMainThread(role: 'sender' | 'successor'): () => void {
  const allowed = native.threadAffinity();
  if (allowed.length < 2) return () => {};
  native.setThreadAffinity([role === 'sender' ? allowed[0]! : allowed.at(-1)!]);
  return () => native.setThreadAffinity(allowed);
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

async function drive(poolPath: string, pool: Pool, vmm: Vmm, plan: Plan, onRunning?: (at: bigint) => void): Promise<void> {
  const running = vmm.start();
  if (onRunning) onRunning(await vmm.runningSince());
  if (plan.updatesLeft === 0) return finishRun(vmm, running);
  // The successor starts now, long before the update, and prepares its VM: its start-up is outside the blackout.
  const successor = await startSuccessor(poolPath, process.env[REFUSE_FIRST_ENV] === '1');
  delete process.env[REFUSE_FIRST_ENV];
  await rehearseUpdate();
  await updateDelay(plan);
  collectGarbageBeforeBlackout();
  const unpin = pinMainThread('sender');
  // A successor that died by now is found after the pause and serialisation, like one dying during them.
  await successor.announce();
  const { reason, stoppedAtNs } = await vmm.pause();
  if (reason === 'halted') {
    unpin();
    successor.child.kill('SIGKILL');
    reportDone(vmm, reason);
    return;
  }
  vmm.saveState(stoppedAtNs, { plan: { ...plan, updatesLeft: plan.updatesLeft - 1 } });
  const savedAt = process.hrtime.bigint();
  const gfs: Filesystem = vmm.fs;
  gfs.serialise();
  gfs.unmount(); // stays serialised; the mount lock goes to whoever takes it next
  const releasedAt = process.hrtime.bigint();
  successor.tell({ saveMs: ms(stoppedAtNs, savedAt), serialiseMs: ms(savedAt, releasedAt), releasedAtNs: releasedAt.toString() });
  // Wait for the successor's commit point or its end; no polling. Tearing down the old VM (milliseconds of kernel work
  // for large RAM) waits until the successor's vCPU runs, so that it stays out of the blackout.
  const committed = await successor.committed();
  unpin();
  if (committed) {
    await new Promise((resolve) => setTimeout(resolve, TEARDOWN_DELAY_MS));
    vmm.close();
    successor.detach();
    return; // handed over: this VMM is done and exits
  }
  // The successor is gone without taking over: take the handover back (or recover the pool, if it died after mounting)
  // and resume the guest here.
  vmm.close();
  const again = mount(pool);
  const { vmm: resumed } = Vmm.resume(again, CONFIG);
  emit({ event: 'update-failed', pid: process.pid, error: `successor pid ${successor.child.pid} exited without taking over`, resumedAfterMs: ms(stoppedAtNs, process.hrtime.bigint()) });
  await drive(poolPath, pool, resumed, { ...plan, updatesLeft: plan.updatesLeft - 1 });
}

async function main(): Promise<void> {
  const [mode, poolPath, ...args] = process.argv.slice(2) as string[];
  const pool = Pool.open(poolPath!);
  if (mode === 'boot') {
    const { vmm, plan } = bootGuest(pool, args);
    await drive(poolPath!, pool, vmm, plan);
    return;
  }
  // successor: started ahead of time. It prepares, says it is ready, sleeps until the sender announces the pause, then
  // spins until the pool is released.
  const refuse = process.env.GUESTMEMFS_TRANSFER_REFUSE === '1';
  let prepared: PreparedResume | undefined;
  if (!refuse) {
    await rehearseUpdate();
    const { ramError, ...made } = Vmm.prepareResume(pool, CONFIG);
    // Not fatal: guest RAM is then mapped and registered after the handover, inside the blackout.
    if (ramError) emit({ event: 'premap-failed', pid: process.pid, error: ramError });
    prepared = made;
  }
  collectGarbageBeforeBlackout();
  fs.writeSync(REPORT_FD, `${READY}\n`);
  const announced = readLine();
  if (announced !== PAUSING) throw new Error(`the running VMM closed the handover pipe without an update (it sent ${JSON.stringify(announced)})`);
  const unpin = pinMainThread('successor');
  fs.writeSync(REPORT_FD, `${SPINNING}\n`);
  if (refuse) {
    emit({ event: 'successor-refused', pid: process.pid });
    return;
  }
  const gfs = spinForHandover(pool);
  const mounted = process.hrtime.bigint();
  const { vmm, saved, timings } = Vmm.resume(gfs, CONFIG, prepared);
  const plan = saved.extra.plan as Plan;
  fs.writeSync(REPORT_FD, `${RESUMING}\n`);
  // The blackout ends when the vCPU is handed back to KVM; the sender's timings are read after that, outside it.
  await drive(poolPath!, pool, vmm, plan, (running) => {
    unpin();
    const sender = JSON.parse(readLine() ?? 'null') as SenderTimings | null;
    if (!sender) throw new Error('the previous VMM sent no timings');
    const restoreMs = gfs.restored?.ms ?? 0;
    const released = BigInt(sender.releasedAtNs);
    emit({
      event: 'update',
      mode: 'transfer',
      pid: process.pid,
      blackoutMs: ms(BigInt(saved.stoppedAtNs), running),
      premapped: timings.premapped,
      sameFrames: sameFramesAsBoot(vmm),
      breakdown: {
        saveMs: sender.saveMs,
        serialiseMs: sender.serialiseMs,
        // From the sender letting go of the pool to this process restoring it (spinning, it notices at once).
        signalMs: ms(released, mounted) - restoreMs,
        restoreMs,
        ...resumeBreakdown(timings, mounted, running),
      },
    });
  });
}

main().catch((error: Error) => {
  process.stderr.write(`transfer-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

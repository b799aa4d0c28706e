// Live update in transfer mode, as a runnable program (the model of QEMU's cpr-transfer and Cloud Hypervisor's local
// migration): the running VMM starts its successor ahead of time; at the update it pauses the guest, saves its state,
// serialises and lets go of the pool; the successor, already waiting, restores and resumes it. If the successor dies or
// refuses, the original takes its own handover back and resumes the guest.
//
//   node transfer-update.js boot <pool> <ramBytes> <steps> <seed> <updates> <maxDelayMs>
//   node transfer-update.js successor <pool>            (started by the running VMM)
import { spawn } from 'node:child_process';
import { type Filesystem, mount, readPoolSuperblock } from '../fs/filesystem';
import { PoolState } from '../fs/layout';
import { waitForHandover } from '../handover/successor';
import { Pool } from '../pool/pool';
import { bootGuest, CONFIG, emit, finishRun, ms, type Plan, reportDone, updateDelay } from './update-common';
import { prepareVm } from './machine';
import { Vmm } from './vmm';

/** Test hook: the first successor exits without taking over, to prove a refused update loses nothing. */
const REFUSE_FIRST_ENV = 'GUESTMEMFS_TRANSFER_REFUSE_FIRST';

/** The sender's half of the blackout, passed to the successor on its stdin once the pool is let go. */
interface SenderTimings {
  saveMs: number;
  serialiseMs: number;
  releasedAtNs: string;
}

function startSuccessor(poolPath: string, refuse: boolean) {
  const env = { ...process.env };
  delete env[REFUSE_FIRST_ENV];
  if (refuse) env.GUESTMEMFS_TRANSFER_REFUSE = '1';
  const child = spawn(process.execPath, [__filename, 'successor', poolPath], { stdio: ['pipe', 'inherit', 'inherit'], env });
  child.stdin!.on('error', () => {}); // a successor that already died cannot be told; the exit below handles it
  let exited = false;
  child.once('exit', () => (exited = true));
  return { child, hasExited: () => exited, tell: (timings: SenderTimings) => child.stdin!.end(`${JSON.stringify(timings)}\n`) };
}

/** Reads the sender's timings from stdin (null if it sent none); started early so they are buffered by the end. */
function senderTimings(): Promise<SenderTimings | null> {
  return new Promise((resolve) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => (text += chunk));
    process.stdin.on('error', () => resolve(null));
    process.stdin.on('end', () => {
      try {
        resolve(JSON.parse(text) as SenderTimings);
      } catch {
        resolve(null);
      }
    });
  });
}

async function drive(poolPath: string, pool: Pool, vmm: Vmm, plan: Plan, frames: string[] | null, onRunning?: (at: bigint) => Promise<void>): Promise<void> {
  const running = vmm.start();
  if (onRunning) await onRunning(process.hrtime.bigint());
  if (plan.updatesLeft === 0) return finishRun(vmm, running, frames);
  // The successor starts now, long before the update: its start-up is outside the blackout.
  const successor = startSuccessor(poolPath, process.env[REFUSE_FIRST_ENV] === '1');
  delete process.env[REFUSE_FIRST_ENV];
  await new Promise((resolve) => setTimeout(resolve, 150)); // let the successor start up first
  await updateDelay(plan);
  const { reason, stoppedAtNs } = await vmm.pause();
  if (reason === 'halted') {
    successor.child.kill('SIGKILL');
    reportDone(vmm, reason, frames);
    return;
  }
  vmm.saveState(stoppedAtNs, { plan: { ...plan, updatesLeft: plan.updatesLeft - 1 }, frames });
  const savedAt = process.hrtime.bigint();
  const gfs: Filesystem = vmm.fs;
  gfs.serialise();
  gfs.unmount(); // stays serialised; the mount lock goes to whoever takes it next
  const releasedAt = process.hrtime.bigint();
  successor.tell({ saveMs: ms(stoppedAtNs, savedAt), serialiseMs: ms(savedAt, releasedAt), releasedAtNs: releasedAt.toString() });
  // Tearing down the old VM (slow for large RAM) waits until the successor is already restoring: the guest's memory
  // stays in its file either way.
  vmm.close();
  // Wait until the successor owns the pool (it mounted: the superblock says so) or has died.
  for (;;) {
    const sb = readPoolSuperblock(pool);
    if (sb.state === PoolState.Mounted && sb.ownerPid === successor.child.pid) return; // handed over: this VMM is done
    if (successor.hasExited()) break;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  // The successor is gone without taking over: take the handover back and resume the guest here.
  const again = mount(pool);
  const { vmm: resumed } = Vmm.resume(again, CONFIG);
  emit({ event: 'update-failed', pid: process.pid, error: `successor pid ${successor.child.pid} exited without taking over`, resumedAfterMs: ms(stoppedAtNs, process.hrtime.bigint()) });
  await drive(poolPath, pool, resumed, { ...plan, updatesLeft: plan.updatesLeft - 1 }, frames);
}

async function main(): Promise<void> {
  const [mode, poolPath, ...args] = process.argv.slice(2) as string[];
  const pool = Pool.open(poolPath!);
  if (mode === 'boot') {
    const { vmm, plan, frames } = bootGuest(pool, args);
    await drive(poolPath!, pool, vmm, plan, frames);
    return;
  }
  // successor: started ahead of time, waits for the handover.
  if (process.env.GUESTMEMFS_TRANSFER_REFUSE === '1') {
    emit({ event: 'successor-refused', pid: process.pid });
    return;
  }
  const fromSender = senderTimings();
  // Everything that does not depend on the guest's saved state is made before the pause: the VM and its vCPU.
  const prepared = prepareVm();
  const gfs = await waitForHandover(pool, { timeoutMs: 60_000 });
  const mounted = process.hrtime.bigint();
  const { vmm, saved, timings } = Vmm.resume(gfs, CONFIG, prepared);
  const plan = saved.extra.plan as Plan;
  // The blackout ends when the vCPU is handed back to KVM; the sender's timings are read after that, outside it.
  await drive(poolPath!, pool, vmm, plan, (saved.extra.frames as string[] | null) ?? null, async (running) => {
    const sender = await fromSender;
    const restoreAndMountMs = gfs.restored?.ms ?? 0;
    emit({
      event: 'update',
      mode: 'transfer',
      pid: process.pid,
      blackoutMs: ms(BigInt(saved.stoppedAtNs), running),
      breakdown: {
        saveMs: sender?.saveMs ?? null,
        serialiseMs: sender?.serialiseMs ?? null,
        // From the sender letting go of the pool to this process starting to restore it: the wake-up latency.
        signalMs: sender ? ms(BigInt(sender.releasedAtNs), mounted) - restoreAndMountMs : null,
        restoreMs: restoreAndMountMs,
        mapMs: timings.mapMs,
        vcpuRestoreMs: timings.vcpuMs,
        otherMs: ms(mounted, running) - timings.mapMs - timings.vcpuMs,
      },
    });
  });
}

main().catch((error: Error) => {
  process.stderr.write(`transfer-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

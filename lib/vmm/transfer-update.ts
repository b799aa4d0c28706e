// Live update in transfer mode, as a runnable program (the model of QEMU's cpr-transfer and Cloud Hypervisor's local
// migration): the running VMM starts its successor ahead of time; at the update it pauses the guest, saves its state,
// serialises and lets go of the pool; the successor, already waiting, restores and resumes it. If the successor dies or
// refuses, the original takes its own handover back and resumes the guest.
//
//   node transfer-update.js boot <pool> <ramBytes> <steps> <seed> <updates> <maxDelayMs>
//   node transfer-update.js successor <pool>            (started by the running VMM)
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { type Filesystem, mkfs, mount, readPoolSuperblock } from '../fs/filesystem';
import { PoolState } from '../fs/layout';
import { waitForHandover } from '../handover/successor';
import { Pool } from '../pool/pool';
import { Vmm, type VmmConfig } from './vmm';

/** Test hook: the first successor exits without taking over, to prove a refused update loses nothing. */
const REFUSE_FIRST_ENV = 'GUESTMEMFS_TRANSFER_REFUSE_FIRST';
const CONFIG: Omit<VmmConfig, 'ramSize'> = { ramPath: '/vm0/ram', statePath: '/vm0/state' };

interface Plan {
  ramBytes: number;
  updatesLeft: number;
  maxDelayMs: number;
  seed: number;
}

function emit(record: Record<string, unknown>): void {
  fs.writeSync(1, `${JSON.stringify(record)}\n`);
}

const ms = (from: bigint, to: bigint) => Number(to - from) / 1e6;

function startSuccessor(poolPath: string, refuse: boolean) {
  const env = { ...process.env };
  delete env[REFUSE_FIRST_ENV];
  if (refuse) env.GUESTMEMFS_TRANSFER_REFUSE = '1';
  const child = spawn(process.execPath, [__filename, 'successor', poolPath], { stdio: ['ignore', 'inherit', 'inherit'], env });
  let exited = false;
  child.once('exit', () => (exited = true));
  return { child, hasExited: () => exited };
}

function finish(vmm: Vmm, reason: string, frames: string[] | null): void {
  let sameFrames: boolean | null = null;
  if (frames) {
    try {
      sameFrames = JSON.stringify(vmm.ram.physicalFrames().map(String)) === JSON.stringify(frames);
    } catch {
      sameFrames = null;
    }
  }
  emit({ event: 'done', pid: process.pid, reason, serial: vmm.serial(), sameFrames });
  vmm.close();
  vmm.fs.unmount();
}

async function drive(poolPath: string, pool: Pool, vmm: Vmm, plan: Plan, frames: string[] | null): Promise<void> {
  const running = vmm.start();
  if (plan.updatesLeft === 0) {
    // A benchmark runs the guest without end and stops it here; otherwise it runs to its halt.
    if (process.env.GUESTMEMFS_UPDATE_STOP_AFTER === '1') {
      await vmm.pause();
      finish(vmm, 'stopped', frames);
      return;
    }
    finish(vmm, await running, frames);
    return;
  }
  // The successor starts now, long before the update: its start-up is outside the blackout.
  const successor = startSuccessor(poolPath, process.env[REFUSE_FIRST_ENV] === '1');
  delete process.env[REFUSE_FIRST_ENV];
  const delay = ((plan.seed * 2654435761 + plan.updatesLeft * 40503) >>> 0) % Math.max(1, plan.maxDelayMs);
  await new Promise((resolve) => setTimeout(resolve, delay + 150));
  const { reason, stoppedAtNs } = await vmm.pause();
  if (reason === 'halted') {
    successor.child.kill('SIGKILL');
    finish(vmm, reason, frames);
    return;
  }
  vmm.saveState(stoppedAtNs, { plan: { ...plan, updatesLeft: plan.updatesLeft - 1 }, frames });
  vmm.close();
  const gfs: Filesystem = vmm.fs;
  gfs.serialise();
  gfs.unmount(); // stays serialised; the mount lock goes to whoever takes it next
  // Wait until the successor owns the pool (it mounted: the superblock says so) or has died.
  for (;;) {
    const sb = readPoolSuperblock(pool);
    if (sb.state === PoolState.Mounted && sb.ownerPid === successor.child.pid) return; // handed over: this VMM is done
    if (successor.hasExited()) break;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  // The successor is gone without taking over: take the handover back and resume the guest here.
  const again = mount(pool);
  const { vmm: resumed } = Vmm.resume(again, { ...CONFIG, ramSize: plan.ramBytes });
  emit({ event: 'update-failed', pid: process.pid, error: `successor pid ${successor.child.pid} exited without taking over`, resumedAfterMs: ms(stoppedAtNs, process.hrtime.bigint()) });
  await drive(poolPath, pool, resumed, { ...plan, updatesLeft: plan.updatesLeft - 1 }, frames);
}

async function main(): Promise<void> {
  const [mode, poolPath, ramText, stepsText, seedText, updatesText, delayText] = process.argv.slice(2) as string[];
  const pool = Pool.open(poolPath!);
  if (mode === 'boot') {
    const ramBytes = Number(ramText);
    mkfs(pool, { force: true });
    const gfs = mount(pool);
    gfs.mkdir('/vm0');
    const vmm = Vmm.boot(gfs, { ...CONFIG, ramSize: ramBytes }, { steps: Number(stepsText), seed: BigInt(seedText!) });
    let frames: string[] | null = null;
    try {
      frames = vmm.ram.physicalFrames().map(String);
    } catch {
      frames = null;
    }
    emit({ event: 'boot', pid: process.pid });
    await drive(poolPath!, pool, vmm, { ramBytes, updatesLeft: Number(updatesText), maxDelayMs: Number(delayText), seed: Number(seedText) }, frames);
    return;
  }
  // successor: started ahead of time, waits for the handover.
  if (process.env.GUESTMEMFS_TRANSFER_REFUSE === '1') {
    emit({ event: 'successor-refused', pid: process.pid });
    return;
  }
  const gfs = await waitForHandover(pool, { timeoutMs: 60_000 });
  const restored = process.hrtime.bigint();
  const { saved } = Vmm.readState(gfs, CONFIG.statePath);
  const plan = saved.extra.plan as Plan;
  const { vmm, timings } = Vmm.resume(gfs, { ...CONFIG, ramSize: plan.ramBytes });
  const running = process.hrtime.bigint();
  emit({
    event: 'update',
    mode: 'transfer',
    pid: process.pid,
    blackoutMs: ms(BigInt(saved.stoppedAtNs), running),
    breakdown: { restoreAndMountMs: gfs.restored?.ms ?? null, sinceRestoredMs: ms(restored, running), mapMs: timings.mapMs, vcpuRestoreMs: timings.vcpuMs },
  });
  await drive(poolPath!, pool, vmm, plan, (saved.extra.frames as string[] | null) ?? null);
}

main().catch((error: Error) => {
  process.stderr.write(`transfer-update failed: ${error.stack ?? error.message}\n`);
  process.exit(1);
});

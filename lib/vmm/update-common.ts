// What the exec-mode and transfer-mode update programs share: the plan, event output, booting the guest, the update
// delay, and the end of a run (the guest halted, or a benchmark stopped it).
import * as fs from 'node:fs';
import { mkfs, mount } from '../fs/filesystem';
import type { Pool } from '../pool/pool';
import { Vmm, type VmmFiles } from './vmm';

export const CONFIG: VmmFiles = { ramPath: '/vm0/ram', statePath: '/vm0/state' };

/** Carried from one VMM process to the next in the state file. */
export interface Plan {
  ramBytes: number;
  updatesLeft: number;
  maxDelayMs: number;
  seed: number;
}

/** One JSON line per event on stdout, written synchronously so nothing is lost at execve. */
export function emit(record: Record<string, unknown>): void {
  fs.writeSync(1, `${JSON.stringify(record)}\n`);
}

export const ms = (from: bigint, to: bigint): number => Number(to - from) / 1e6;

/** Guest RAM's physical frames, or null where the kernel hides them (not root). */
export function framesOf(vmm: Vmm): string[] | null {
  try {
    return vmm.ram.physicalFrames().map(String);
  } catch {
    return null;
  }
}

/** Formats the pool, boots the demo guest and reports it; returns the VMM, the plan and the guest RAM's frames. */
export function bootGuest(pool: Pool, args: string[]): { vmm: Vmm; plan: Plan; frames: string[] | null } {
  const [ramText, stepsText, seedText, updatesText, delayText] = args;
  const ramBytes = Number(ramText);
  mkfs(pool, { force: true });
  const gfs = mount(pool);
  gfs.mkdir('/vm0');
  const vmm = Vmm.boot(gfs, { ...CONFIG, ramSize: ramBytes }, { steps: Number(stepsText), seed: BigInt(seedText!) });
  emit({ event: 'boot', pid: process.pid });
  return { vmm, plan: { ramBytes, updatesLeft: Number(updatesText), maxDelayMs: Number(delayText), seed: Number(seedText) }, frames: framesOf(vmm) };
}

/** A deterministic pseudo-random delay before the next update, so a run can be repeated. */
export function updateDelay(plan: Plan): Promise<void> {
  const delay = ((plan.seed * 2654435761 + plan.updatesLeft * 40503) >>> 0) % Math.max(1, plan.maxDelayMs);
  return new Promise((resolve) => setTimeout(resolve, delay));
}

/**
 * Ends a run with no updates left: waits for the guest's halt (a benchmark runs it without end and stops it instead),
 * reports its console output and whether guest RAM kept its physical frames, and lets go.
 */
export async function finishRun(vmm: Vmm, running: Promise<string>, frames: string[] | null): Promise<void> {
  let reason: string;
  if (process.env.GUESTMEMFS_UPDATE_STOP_AFTER === '1') {
    await vmm.pause();
    reason = 'stopped';
  } else {
    reason = await running;
  }
  reportDone(vmm, reason, frames);
}

export function reportDone(vmm: Vmm, reason: string, frames: string[] | null, extra: Record<string, unknown> = {}): void {
  const now = framesOf(vmm);
  const sameFrames = frames && now ? JSON.stringify(now) === JSON.stringify(frames) : null;
  emit({ event: 'done', pid: process.pid, reason, serial: vmm.serial(), sameFrames, ...extra });
  vmm.close();
  vmm.fs.unmount();
}

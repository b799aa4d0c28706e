// Live update of a running KVM guest, in exec mode (execve of the VMM, same PID) and in transfer mode (a successor
// started ahead of time): the guest resumed each time from its state file on the same guest RAM, finishing with the
// checksum of an uninterrupted run on the same frames; a failed update loses nothing.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB, Pool } from '../lib/index';
import { runUpdatesAsync, type UpdateMode } from '../lib/vmm/launch';
import { demoGuestChecksum, kvmUnavailableReason } from '../lib/vmm/machine';
import { machine, skipReason, uniquePath } from './helpers';

const m = machine();
const ramBytes = 32 * MiB;

/**
 * Boots the demo guest in a fresh pool and live-updates it in `mode`; checks that the run ended cleanly with the
 * guest halted on its uninterrupted checksum and on the same physical frames, and returns the events.
 */
async function runGuest(
  mode: UpdateMode,
  guest: { steps: number; seed: number; updates: number; maxDelayMs: number; vcpus?: number },
  env: NodeJS.ProcessEnv = process.env,
) {
  const poolPath = uniquePath(m.hugetlbfs2M!, 'vmm');
  Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
  try {
    // A few rehearsal rounds suffice here (speed is bench:vmm's business), and keep every update well inside the
    // guest's run also in slow builds (ASan).
    const run = await runUpdatesAsync(
      { mode, poolPath, ramBytes, ...guest },
      { env: { GUESTMEMFS_REHEARSAL_ROUNDS: '3', ...env }, timeoutMs: 120_000 },
    );
    expect(run.stderr).toBe('');
    expect(run.events.at(-1)).toMatchObject({
      event: 'done',
      reason: 'halted',
      sameFrames: true,
      serial: `${demoGuestChecksum(ramBytes, { steps: guest.steps, seed: BigInt(guest.seed) }, guest.vcpus ?? 1)}\n`,
    });
    return run.events;
  } finally {
    fs.rmSync(poolPath, { force: true });
  }
}

/** Symlinks and foreign files under every name the exec-mode code cache was once written to, for the next pids. */
function plantCodeCacheNames(): { expectUntouched(): void; remove(): void } {
  const victimDir = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-victim-'));
  const victim = path.join(victimDir, 'precious');
  fs.writeFileSync(victim, 'the planter chose this file');
  const foreign = Buffer.from('bytecode of the planter');
  const lastPid = Number(fs.readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'));
  const names: string[] = [];
  for (const dir of ['/dev/shm', os.tmpdir()]) {
    for (let pid = lastPid + 1; pid <= lastPid + 1500; pid++) {
      const name = path.join(dir, `guestmemfs-code-cache-${pid}`);
      if (fs.existsSync(name)) continue;
      if (pid % 2 === 0) fs.symlinkSync(victim, name);
      else fs.writeFileSync(name, foreign, { flag: 'wx' });
      names.push(name);
    }
  }
  return {
    expectUntouched() {
      expect(fs.readFileSync(victim, 'utf8')).toBe('the planter chose this file');
      for (const name of names) {
        if (fs.lstatSync(name).isSymbolicLink()) expect(fs.readlinkSync(name)).toBe(victim);
        else expect(fs.readFileSync(name).equals(foreign)).toBe(true);
      }
    },
    remove() {
      for (const name of names) fs.rmSync(name, { force: true });
      fs.rmSync(victimDir, { recursive: true, force: true });
    },
  };
}

describe.skipIf(skipReason(m.skip2M || kvmUnavailableReason()))('live update of a KVM guest', () => {
  it('three updates at random points: same pid, same checksum as an uninterrupted run, same physical frames', async () => {
    // The names earlier releases wrote the code cache under, planted for the pids the VMM may get, as an unprivileged
    // user could: a symlink to a file of the planter's choosing, or a file of the planter's bytes. None may be touched.
    const planted = plantCodeCacheNames();
    // kvm-pvm runs this guest at ~6 µs a step: 500k steps give the three updates (<= 400 ms apart) time to happen.
    let events: Array<Record<string, unknown>>;
    try {
      events = await runGuest('exec', { steps: 500_000, seed: 11, updates: 3, maxDelayMs: 400 });
      planted.expectUntouched();
    } finally {
      planted.remove();
    }
    const updates = events.filter((event) => event.event === 'update');
    expect(updates).toHaveLength(3);
    expect(new Set(events.map((event) => event.pid)).size).toBe(1); // execve in place: one pid throughout
    for (const update of updates) {
      const breakdown = update.breakdown as Record<string, number>;
      expect(update.blackoutMs).toBeGreaterThan(0);
      expect(update.sameFrames).toBe(true); // checked by the new process right after each update
      expect(update.ramPinnedBy).toEqual([update.pid]); // the kernel's view: the new VMM's mapping pins guest RAM
      // The launcher resumed the guest before it loaded the VMM: only the addon, two mappings and the VM are inside.
      expect(update.earlyResume).toBe(true);
      expect(Object.keys(breakdown).sort()).toEqual(['addonMs', 'closeMs', 'execAndStartupMs', 'mapMs', 'saveMs', 'vcpuRestoreMs', 'vmMs']);
      // Serialised, and the code cache written, while the guest still ran; the new process took the cache, and loaded
      // the VMM, mounted and adopted the running guest after the blackout.
      expect(update.beforePause).toEqual({ serialiseMs: expect.any(Number), codeCacheMs: expect.any(Number) });
      expect(update.afterResume).toEqual({ loadMs: expect.any(Number), mountMs: expect.any(Number), adoptMs: expect.any(Number) });
      expect(update.codeCache).toBe('accepted');
      expect(update.earlyResumeCodeCache).toBe('accepted');
      for (const part of Object.values(breakdown)) expect(part).toBeGreaterThanOrEqual(0);
      expect(Object.values(breakdown).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual((update.blackoutMs as number) + 0.01);
      process.stdout.write(`[vmm] exec update: blackout ${(update.blackoutMs as number).toFixed(1)} ms ${JSON.stringify(breakdown)}\n`);
    }
  }, 180_000);

  it('without the early-resume recipe, the new process resumes the guest once it has mounted, with nothing lost', async () => {
    const events = await runGuest(
      'exec',
      { steps: 300_000, seed: 3, updates: 2, maxDelayMs: 300 },
      { ...process.env, GUESTMEMFS_UPDATE_NO_EARLY_RESUME: '1' },
    );
    const updates = events.filter((event) => event.event === 'update');
    expect(updates).toHaveLength(2);
    for (const update of updates) {
      expect(update).toMatchObject({ earlyResume: false, sameFrames: true, codeCache: 'accepted', earlyResumeCodeCache: 'accepted' });
      expect(Object.keys(update.breakdown as object).sort()).toEqual([
        'execAndStartupMs',
        'loadMs',
        'mapMs',
        'otherMs',
        'readStateMs',
        'restoreMs',
        'saveMs',
        'vcpuRestoreMs',
      ]);
    }
  }, 180_000);

  it('an update whose execve fails is aborted, and the guest resumes in the same process with nothing lost', async () => {
    const events = await runGuest(
      'exec',
      { steps: 400_000, seed: 5, updates: 2, maxDelayMs: 300 },
      { ...process.env, GUESTMEMFS_UPDATE_FAIL_FIRST_EXEC: '1' },
    );
    expect(events.map((event) => event.event)).toEqual(['boot', 'update-failed', 'update', 'done']);
    expect(events[1]!.error).toMatch(/^ENOENT: .*execve '\/nonexistent\/guestmemfs-vmm'/);
  }, 180_000);

  const runTransfer = (updates: number, env: NodeJS.ProcessEnv = process.env) =>
    runGuest('transfer', { steps: 500_000, seed: 7, updates, maxDelayMs: 300 }, env);

  it('transfer mode: three successors started ahead of time take over in turn, same checksum, same frames', async () => {
    const events = await runTransfer(3);
    const updates = events.filter((event) => event.event === 'update');
    expect(updates).toHaveLength(3);
    expect(updates.every((update) => update.mode === 'transfer')).toBe(true);
    expect(new Set(events.map((event) => event.pid)).size).toBe(4); // the booting VMM and three successors
    for (const update of updates) {
      const breakdown = update.breakdown as Record<string, number>;
      expect(update).toMatchObject({ sameFrames: true, premapped: true }); // guest RAM mapped and registered before the pause
      // Pinned by the successor's premapping, taken before the old VMM let go (and the old VMM has exited since).
      expect(update.ramPinnedBy).toContain(update.pid);
      // The filesystem changed hands while the guest still ran: only the vCPU state crosses inside the blackout.
      const beforePause = update.beforePause as Record<string, number>;
      expect(Object.keys(beforePause).sort()).toEqual(['mapMs', 'restoreMs', 'serialiseMs']);
      for (const part of Object.values(beforePause)) expect(part).toBeGreaterThan(0);
      // Stopped, saved on the sender's vCPU threads, noticed and loaded on the successor's: no JavaScript inside it.
      expect(Object.keys(breakdown).sort()).toEqual(['resumeMs', 'saveMs', 'signalMs', 'stopSkewMs']);
      expect(breakdown.stopSkewMs).toBe(0); // one vCPU: its stop is the first and the last
      // Every part is measured (the sender's half arrives on the successor's stdin) and together they fit the blackout.
      for (const part of Object.values(breakdown)) expect(part).toBeGreaterThanOrEqual(0);
      const sum = Object.values(breakdown).reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual((update.blackoutMs as number) + 0.01);
      process.stdout.write(`[vmm] transfer update: blackout ${(update.blackoutMs as number).toFixed(1)} ms ${JSON.stringify(breakdown)}\n`);
    }
  }, 180_000);

  it.each(['exec', 'transfer'] as const)(
    'an SMP guest (2 vCPUs), %s mode: all vCPUs paused, saved and resumed together, both checksums intact, same frames',
    async (mode) => {
      const events = await runGuest(mode, { steps: 400_000, seed: 13, updates: 2, maxDelayMs: 300, vcpus: 2 });
      const updates = events.filter((event) => event.event === 'update');
      expect(updates).toHaveLength(2);
      for (const update of updates) {
        expect(update).toMatchObject({ mode, sameFrames: true, vcpus: 2, ...(mode === 'exec' ? { earlyResume: true } : {}) });
        process.stdout.write(`[vmm] ${mode} update, 2 vCPUs: blackout ${(update.blackoutMs as number).toFixed(2)} ms\n`);
      }
    },
    180_000,
  );

  it('transfer mode: a successor that refuses the handover leaves the guest running in the original VMM, never paused for it', async () => {
    const events = await runTransfer(2, { ...process.env, GUESTMEMFS_TRANSFER_REFUSE_FIRST: '1' });
    expect(events.map((event) => event.event)).toEqual(['boot', 'successor-refused', 'update-failed', 'update', 'done']);
    expect(events[2]).toMatchObject({ pid: events[0]!.pid, pausedBeforeFailure: false });
  }, 180_000);

  it('transfer mode: a successor that dies inside the blackout, holding the pool, leaves the guest running in the original', async () => {
    const events = await runTransfer(2, { ...process.env, GUESTMEMFS_TRANSFER_DIE_FIRST: '1' });
    expect(events.map((event) => event.event)).toEqual(['boot', 'update-failed', 'update', 'done']);
    // The original recovered the pool from the dead successor's mount and resumed the guest from the state it saved.
    expect(events[1]).toMatchObject({ pid: events[0]!.pid, pausedBeforeFailure: true });
  }, 180_000);
});

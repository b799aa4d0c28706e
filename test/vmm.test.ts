// Live update of a running KVM guest, in exec mode (execve of the VMM, same PID) and in transfer mode (a successor
// started ahead of time): the guest resumed each time from its state file on the same guest RAM, finishing with the
// checksum of an uninterrupted run on the same frames; a failed update loses nothing.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MiB, Pool } from '../lib/index';
import { demoGuestChecksum, kvmAvailable } from '../lib/vmm/machine';
import { machine, repoRoot, skipReason, uniquePath } from './helpers';

const m = machine();

describe.skipIf(skipReason(m.skip2M || kvmAvailable()))('live update of a KVM guest', () => {
  it('three updates at random points: same pid, same checksum as an uninterrupted run, same physical frames', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'vmm');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
    const ramBytes = 32 * MiB;
    // kvm-pvm runs this guest at ~6 µs a step: 500k steps give the three updates (<= 400 ms apart) time to happen.
    const steps = 500_000;
    const seed = 11;
    try {
      const run = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'lib', 'vmm', 'exec-update.js'), 'boot', poolPath, String(ramBytes), String(steps), String(seed), '3', '400'], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      expect(run.stderr).toBe('');
      const events = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      const updates = events.filter((event) => event.event === 'update');
      const done = events.at(-1)!;
      expect(updates).toHaveLength(3);
      expect(new Set(events.map((event) => event.pid)).size).toBe(1); // execve in place: one pid throughout
      expect(done).toMatchObject({ event: 'done', reason: 'halted', sameFrames: true });
      expect(done.serial).toBe(`${demoGuestChecksum(ramBytes, { steps, seed: BigInt(seed) })}\n`);
      for (const update of updates) {
        const breakdown = update.breakdown as Record<string, number>;
        expect(update.blackoutMs).toBeGreaterThan(0);
        expect(Object.keys(breakdown).sort()).toEqual(['execAndStartupMs', 'mapMs', 'restoreMs', 'saveMs', 'serialiseMs', 'vcpuRestoreMs']);
        process.stdout.write(`[vmm] exec update: blackout ${(update.blackoutMs as number).toFixed(1)} ms ${JSON.stringify(breakdown)}\n`);
      }
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  }, 180_000);

  it('an update whose execve fails is aborted, and the guest resumes in the same process with nothing lost', () => {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'vmm');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
    const ramBytes = 32 * MiB;
    const steps = 400_000;
    const seed = 5;
    try {
      const run = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'lib', 'vmm', 'exec-update.js'), 'boot', poolPath, String(ramBytes), String(steps), String(seed), '2', '300'], {
        encoding: 'utf8',
        timeout: 120_000,
        env: { ...process.env, GUESTMEMFS_UPDATE_FAIL_FIRST_EXEC: '1' },
      });
      expect(run.stderr).toBe('');
      const events = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(events.map((event) => event.event)).toEqual(['boot', 'update-failed', 'update', 'done']);
      expect(events[1]!.error).toMatch(/^ENOENT: .*execve '\/nonexistent\/guestmemfs-vmm'/);
      expect(events.at(-1)).toMatchObject({ reason: 'halted', sameFrames: true, serial: `${demoGuestChecksum(ramBytes, { steps, seed: BigInt(seed) })}\n` });
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  }, 180_000);

  function runTransfer(updates: number, env: NodeJS.ProcessEnv = process.env) {
    const poolPath = uniquePath(m.hugetlbfs2M!, 'vmm');
    Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 96 * MiB }).close();
    const ramBytes = 32 * MiB;
    const steps = 500_000;
    const seed = 7;
    try {
      const run = spawnSync(process.execPath, [path.join(repoRoot, 'dist', 'lib', 'vmm', 'transfer-update.js'), 'boot', poolPath, String(ramBytes), String(steps), String(seed), String(updates), '300'], {
        encoding: 'utf8',
        timeout: 120_000,
        env,
      });
      expect(run.stderr).toBe('');
      const events = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(events.at(-1)).toMatchObject({ event: 'done', reason: 'halted', sameFrames: true, serial: `${demoGuestChecksum(ramBytes, { steps, seed: BigInt(seed) })}\n` });
      return events;
    } finally {
      fs.rmSync(poolPath, { force: true });
    }
  }

  it('transfer mode: three successors started ahead of time take over in turn, same checksum, same frames', () => {
    const events = runTransfer(3);
    const updates = events.filter((event) => event.event === 'update');
    expect(updates).toHaveLength(3);
    expect(updates.every((update) => update.mode === 'transfer')).toBe(true);
    expect(new Set(events.map((event) => event.pid)).size).toBe(4); // the booting VMM and three successors
    for (const update of updates) {
      const breakdown = update.breakdown as Record<string, number>;
      expect(Object.keys(breakdown).sort()).toEqual(['mapMs', 'otherMs', 'restoreMs', 'saveMs', 'serialiseMs', 'signalMs', 'vcpuRestoreMs']);
      // Every part is measured (the sender's half arrives on the successor's stdin) and together they fit the blackout.
      for (const part of Object.values(breakdown)) expect(part).toBeGreaterThanOrEqual(0);
      const sum = Object.values(breakdown).reduce((a, b) => a + b, 0);
      expect(sum).toBeLessThanOrEqual((update.blackoutMs as number) + 0.01);
      process.stdout.write(`[vmm] transfer update: blackout ${(update.blackoutMs as number).toFixed(1)} ms ${JSON.stringify(breakdown)}\n`);
    }
  }, 180_000);

  it('transfer mode: a successor that dies without taking over leaves the guest running in the original VMM', () => {
    const events = runTransfer(2, { ...process.env, GUESTMEMFS_TRANSFER_REFUSE_FIRST: '1' });
    expect(events.map((event) => event.event)).toEqual(['boot', 'successor-refused', 'update-failed', 'update', 'done']);
    expect(events[2]!.pid).toBe(events[0]!.pid);
  }, 180_000);
});

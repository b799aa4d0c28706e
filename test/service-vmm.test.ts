// Two of this project's VMMs on one pool that `guestmemfs mount` serves: each is live-updated in both modes while the
// other runs, the service live-updates itself under them, the CLI works on the pool throughout, and both guests end
// on their uninterrupted checksums and frames.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB, mkfs, Pool } from '../lib/index';
import { demoGuestChecksum, kvmUnavailableReason } from '../lib/vmm/machine';
import { repoRoot, runAsync, skipReason, uniquePath } from './helpers';
import { CLI, Lines, runtimeDirectory, type RunningService, startService } from './service-helpers';

const RAM = 16 * MiB;
const PROGRAM = path.join(repoRoot, 'dist', 'lib', 'vmm', 'served-update.js');
let poolPath: string | undefined;
let runtime: string | undefined;
let service: RunningService | undefined;

afterEach(async () => {
  if (service && service.child.exitCode === null) {
    service.child.kill('SIGKILL');
    await service.exited;
  }
  if (poolPath) fs.rmSync(poolPath, { force: true });
  if (runtime) fs.rmSync(runtime, { recursive: true, force: true });
});

/** A VMM run on the served pool: its events, read until the process chain that carries the guest closes stdout. */
function startVm(socket: string, name: string, steps: number, seed: number, modes: string[]) {
  const child = spawn(process.execPath, [PROGRAM, 'boot', socket, name, String(RAM), String(steps), String(seed), modes.join(','), '300'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = new Lines(child.stdout);
  // Successors inherit stdout: it ends when the last VMM process of this guest exits.
  const ended = new Promise<Array<Record<string, unknown>>>((resolve) =>
    child.stdout.on('close', () => resolve(lines.lines.map((line) => JSON.parse(line) as Record<string, unknown>))),
  );
  return { lines, ended, stderr: () => stderr };
}

describe.skipIf(skipReason(kvmUnavailableReason()))('two VMMs on one served pool', () => {
  it('each is live-updated in exec and transfer mode while the other runs; checksums and frames stay intact', async () => {
    poolPath = uniquePath('/dev/shm', 'guestmemfs-served-vmm');
    const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 64 * MiB });
    mkfs(pool, {});
    pool.close();
    runtime = runtimeDirectory();
    service = await startService(poolPath, runtime);
    // kvm-pvm runs the demo guest at 6-16 us a step: enough steps for two updates each, with two guests on two CPUs.
    const guests = [
      { name: 'vm0', steps: 700_000, seed: 3, modes: ['exec', 'transfer'] },
      { name: 'vm1', steps: 700_000, seed: 4, modes: ['transfer', 'exec'] },
    ];
    const runs = guests.map((guest) => startVm(service!.socket, guest.name, guest.steps, guest.seed, guest.modes));
    await Promise.all(runs.map((run) => run.lines.next((line) => line.includes('"boot"'))));
    // The CLI works on the served pool while both guests run and update.
    const env = { ...process.env, GUESTMEMFS_RUNTIME_DIR: runtime };
    const cli = (...args: string[]) => runAsync(process.execPath, [CLI, ...args], { env });
    expect((await cli('touch', poolPath, '/note')).status).toBe(0);
    expect((await cli('ls', poolPath, '/')).stdout.split('\n').filter(Boolean)).toEqual(['note', 'vm0', 'vm1']);
    const stat = JSON.parse((await cli('stat', '--json', poolPath, '/vm0/ram')).stdout) as { pins: Array<{ pids: number[] }> };
    expect(stat.pins.length).toBeGreaterThan(0);
    expect((await cli('rm', poolPath, '/note')).status).toBe(0);
    // The service updates itself meanwhile: the guests run on, their VMMs' mappings and pins do not depend on it.
    service.child.kill('SIGHUP');
    await service.stdout.next((line) => line.includes('live-updated'));
    expect((await cli('ls', poolPath, '/vm1')).stdout.split('\n').filter(Boolean)).toEqual(['ram', 'state']);
    const events = await Promise.all(runs.map((run) => run.ended));
    for (const [index, guest] of guests.entries()) {
      expect(runs[index]!.stderr()).toBe('');
      const updates = events[index]!.filter((event) => event.event === 'update');
      expect(updates.map((event) => event.mode)).toEqual(guest.modes);
      const done = events[index]!.at(-1)!;
      expect(done).toMatchObject({ event: 'done', name: guest.name, reason: 'halted', sameFrames: true });
      expect(done.serial).toMatch(new RegExp(`${demoGuestChecksum(RAM, { steps: guest.steps, seed: BigInt(guest.seed) })}\\n$`));
      process.stdout.write(
        `[served-vmm] ${guest.name}: ${updates.map((event) => `${String(event.mode)} ${(event.ms as number).toFixed(1)} ms`).join(', ')}\n`,
      );
    }
    // Both guests' memory is still there, and the pool is consistent under the service.
    expect((await cli('ls', poolPath, '/vm0')).stdout.split('\n').filter(Boolean)).toEqual(['ram', 'state']);
    service.child.kill('SIGTERM');
    expect((await service.exited).code).toBe(0);
    expect((await cli('check', poolPath)).stdout.trim()).toBe(`${poolPath}: consistent`);
  }, 240_000);
});

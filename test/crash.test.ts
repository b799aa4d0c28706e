// Crash safety with real processes and real SIGKILL: 300 kills at random instants, most of them inside operations.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, Pool } from '../lib/index';
import { runCrashes } from './crash/harness';
import { uniquePath } from './helpers';

const B = 64 * KiB;
let pool: Pool;
beforeAll(() => {
  pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-crash'), size: 4 * MiB });
  // Room to grow: the child resizes the pool between 1 and 6 MiB.
  mkfs(pool, { blockSize: B, inodes: 24, maxSize: 6 * MiB });
});
afterAll(() => pool.destroy());

describe('kill the owner at any instant, lose nothing', () => {
  it('300 SIGKILLs: every acknowledged operation survives, nothing unacknowledged appears, blocks are exact', async () => {
    const stats = await runCrashes({ pool, blockSize: B, kills: 300, seed: Number(process.env.GUESTMEMFS_CRASH_SEED ?? 1) });
    process.stdout.write(`[crash] ${JSON.stringify(stats)}\n`);
    expect(stats.kills).toBe(300);
    // The kills must really land inside updates, across the operation mix.
    expect(stats.insideOperation).toBeGreaterThan(60);
    expect(Object.keys(stats.insideByOperation).length).toBeGreaterThanOrEqual(5);
    expect(stats.acknowledged).toBeGreaterThan(1000);
    expect(stats.repaired).toBeGreaterThan(50);
  }, 300_000);
});

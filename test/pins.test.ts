// Pins: memory some process maps is never freed, zeroed or given to another file, whoever maps it and whatever
// happens to the owner; the kernel ends a pin with its holder.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { check, type Filesystem, KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, killChild, repoRoot, startPinner, type StartedPinner, uniquePath } from './helpers';

const B = 64 * KiB;
let pool: Pool;
let gfs: Filesystem;
const pinners: ChildProcessWithoutNullStreams[] = [];

/** A pinner of `file` of this test's pool, killed after the test if it is still running. */
async function pinner(file: string, mode?: 'exec' | 'exec-child'): Promise<StartedPinner> {
  const started = await startPinner(pool.path!, file, mode);
  pinners.push(started.child);
  return started;
}

/** A next owner mounts the (unmounted) pool and is SIGKILLed with it mounted: what recovery then finds. */
async function ownerDiesHoldingThePool(): Promise<void> {
  const lib = JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'));
  const script =
    `const g=require(${lib});g.mount(g.Pool.open(${JSON.stringify(pool.path)}));` +
    `process.stdout.write('up\\n');setInterval(()=>{},1000);`;
  const owner = spawn(process.execPath, ['-e', script]);
  await new Promise<void>((resolve) => owner.stdout.once('data', () => resolve()));
  const exited = new Promise((resolve) => owner.once('exit', resolve));
  owner.kill('SIGKILL');
  await exited;
}

beforeEach(() => {
  pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-pins'), size: 4 * MiB });
  mkfs(pool, { blockSize: B });
  gfs = mount(pool);
  gfs.create('/ram', { type: 'guest' });
  gfs.truncate('/ram', 3 * B);
});

afterEach(async () => {
  for (const child of pinners.splice(0)) if (child.exitCode === null && child.signalCode === null) await killChild(child);
  if (gfs.mounted) gfs.unmount();
  pool.destroy();
});

describe('pins held by another process', () => {
  it('unlink keeps the blocks while pinned; nothing else gets them; they come back when the pinner dies', async () => {
    const { child, pinned } = await pinner('/ram');
    expect(gfs.pins('/ram')).toEqual([expect.objectContaining({ pids: [pinned.pid] })]);
    const free = gfs.statfs().freeBlocks;
    gfs.unlink('/ram');
    expect(gfs.exists('/ram')).toBe(false);
    expect(gfs.statfs().freeBlocks).toBe(free); // the name went, the blocks stay
    expect(gfs.pinnedOrphans()).toEqual([{ ino: expect.any(Number), blocks: 3, pins: [expect.objectContaining({ pids: [pinned.pid] })] }]);
    // Fill the pool: no new file may be given the pinned blocks.
    gfs.create('/other', { type: 'guest' });
    gfs.truncate('/other', free * B);
    const taken = gfs.extents('/other');
    for (const pinnedExtent of pinned.extents) {
      for (const extent of taken)
        expect(extent.offset + extent.length <= pinnedExtent.offset || pinnedExtent.offset + pinnedExtent.length <= extent.offset).toBe(
          true,
        );
    }
    expect(captureError(() => gfs.truncate('/other', (free + 1) * B))).toMatchObject({ code: 'ENOSPC' });
    gfs.unlink('/other');
    await killChild(child); // SIGKILL: the kernel drops the pin with the process
    expect(gfs.reclaim()).toBe(1);
    expect(gfs.statfs().freeBlocks).toBe(free + 3);
    expect(gfs.pinnedOrphans()).toEqual([]);
    expect(gfs.audit().problems).toEqual([]);
  });

  it('a shrink that would free pinned blocks fails with EBUSY naming the pid; growing is fine', async () => {
    const { pinned } = await pinner('/ram');
    const error = captureError(() => gfs.truncate('/ram', B));
    expect(error).toMatchObject({ code: 'EBUSY', syscall: 'ftruncate', path: '/ram' });
    expect(error.message).toContain(`pinned by pid ${pinned.pid}`);
    expect(gfs.stat('/ram').size).toBe(3 * B); // nothing changed
    gfs.truncate('/ram', 4 * B);
  });

  it('survives the pinner exec-ing another program that inherits the pin fd, and ends with that program', async () => {
    const { child, pinned } = await pinner('/ram', 'exec');
    gfs.unlink('/ram');
    expect(gfs.reclaim()).toBe(0);
    expect(gfs.pinnedOrphans()[0]!.pins[0]!.pids).toEqual([pinned.pid]); // the same pid after execve
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin.write('exit\n');
    await exited;
    expect(gfs.reclaim()).toBe(1);
  });

  it('is held by every process the descriptor was passed to: a child keeps it after its parent exits', async () => {
    const { child, lines } = await pinner('/ram', 'exec-child');
    const holder = Number(lines[1]!.split(' ')[1]);
    const outputClosed = new Promise((resolve) => child.stdout.once('end', resolve));
    await new Promise((resolve) => (child.exitCode === null ? child.once('exit', resolve) : resolve(undefined)));
    gfs.unlink('/ram');
    expect(gfs.reclaim()).toBe(0);
    expect(gfs.pinnedOrphans()[0]!.pins[0]!.pids).toEqual([holder]); // the parent is gone, its child still pins
    process.kill(holder, 'SIGKILL'); // with it goes the last fd on the pin's description
    await outputClosed;
    expect(gfs.reclaim()).toBe(1);
  });

  it('survives a restart of the metadata owner: the unlinked file stays held across unmount and mount', async () => {
    const { child } = await pinner('/ram');
    gfs.unlink('/ram');
    gfs.unmount();
    gfs = mount(pool);
    expect(gfs.pinnedOrphans()).toHaveLength(1);
    expect(gfs.audit().problems).toEqual([]);
    await killChild(child);
    expect(gfs.reclaim()).toBe(1);
  });

  it('mkfs refuses a pool whose memory is pinned, naming the pinner', async () => {
    const { pinned } = await pinner('/ram');
    gfs.unmount();
    const error = captureError(() => mkfs(pool, { blockSize: B, force: true }));
    expect(error).toMatchObject({ code: 'EBUSY', syscall: 'mkfs' });
    expect(error.message).toContain(`pid ${pinned.pid}`);
    gfs = mount(pool);
    expect(gfs.exists('/ram')).toBe(true); // the pool was left as it was
  });

  it('recovery and check --repair keep an unlinked file a live process pins, and free it once it is gone', async () => {
    const { child } = await pinner('/ram');
    gfs.unlink('/ram');
    // The next owner dies with the orphan in its pool: check and recovery then meet a pinned orphan in an unclean pool.
    gfs.unmount();
    await ownerDiesHoldingThePool();
    const repaired = check(pool, { repair: true });
    expect(repaired.state).toBe('repaired');
    expect(repaired.fixes.join('\n')).toMatch(/kept unlinked inode \d+ \(3 blocks\): a live process still pins it/);
    gfs = mount(pool);
    expect(gfs.pinnedOrphans()).toHaveLength(1);
    await killChild(child);
    expect(gfs.reclaim()).toBe(1);
    expect(gfs.audit().problems).toEqual([]);
  });
});

describe('recovery by mount', () => {
  it('a mount recovering a dead owner keeps an unlinked file a live process pins', async () => {
    const { child } = await pinner('/ram');
    gfs.unlink('/ram');
    gfs.unmount();
    await ownerDiesHoldingThePool();
    gfs = mount(pool);
    expect(gfs.recovery?.fixes.join('\n')).toMatch(/kept unlinked inode \d+ \(3 blocks\): a live process still pins it/);
    expect(gfs.pinnedOrphans()).toHaveLength(1);
    expect(gfs.audit().problems).toEqual([]);
    await killChild(child);
    expect(gfs.reclaim()).toBe(1);
  });
});

describe('pins of this process', () => {
  it('map() pins, and the pin goes with the unmap', () => {
    const mapping = gfs.map('/ram');
    expect(mapping.pinned).toBe(true);
    expect(gfs.pins('/ram')).toEqual([expect.objectContaining({ pids: [process.pid] })]);
    mapping.unmap();
    expect(gfs.pins('/ram')).toEqual([]);
  });
});

// Online resize: a mounted pool grows into fresh pages and gives free blocks at its end back while its files stay
// mapped here and pinned by other processes; a kill part-way is recovered; a handover after a resize works; pools
// share a finite reservation by growing and shrinking; what cannot be done is refused and changes nothing.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { readPoolSuperblock } from '../lib/fs/format';
import { INCOMPAT_RESIZABLE } from '../lib/fs/layout';
import { check, decodeHandoverBlob, type Filesystem, KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { native } from '../lib/native';
import { rewriteSuperblock, smallFs } from './fs-helpers';
import { captureError, killChild, machine, repoRoot, skipReason, startPinner, type StartedPinner, uniquePath } from './helpers';

const m = machine();
const B = 64 * KiB;
const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const pinners: StartedPinner[] = [];
afterEach(async () => {
  for (const { child } of pinners.splice(0)) await killChild(child);
});

/** Bytes of huge pages the file holds (hugetlbfs counts them in st_blocks, as the pages are allocated and freed). */
function hugePageBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

/** A recognisable pattern for `length` bytes. */
function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed) & 0xff;
  return bytes;
}

describe('resizing a mounted pool', () => {
  it.skipIf(skipReason(m.skip2M))(
    'hugetlbfs: grows and shrinks under a file mapped here and pinned by another process; a handover after it restores',
    async () => {
      const poolPath = uniquePath(m.hugetlbfs2M!, 'resize');
      const pool = Pool.create({ backend: 'hugetlbfs', path: poolPath, size: 32 * MiB });
      const huge = 2 * MiB;
      try {
        mkfs(pool, { maxSize: 128 * MiB, inodes: 64 });
        let gfs: Filesystem = mount(pool);
        gfs.create('/ram', { type: 'guest' });
        gfs.truncate('/ram', 8 * MiB);
        const ram = gfs.map('/ram');
        ram.bytes(0, 8 * MiB).set(pattern(8 * MiB, 7));
        pinners.push(await startPinner(poolPath, '/ram'));
        // Opened before the grow: this object learns the new size when it maps memory past the old end.
        const early = Pool.open(poolPath);
        expect(hugePageBytes(poolPath)).toBe(32 * MiB);

        const grown = gfs.resize(96 * MiB);
        expect(grown).toMatchObject({ from: 32 * MiB, to: 96 * MiB, blocks: 32 });
        expect(fs.statSync(poolPath).size).toBe(96 * MiB);
        expect(hugePageBytes(poolPath)).toBe(96 * MiB); // every new page allocated now, not at a later fault
        expect(gfs.statfs()).toMatchObject({ totalBlocks: 48, maxBlocks: 64 });
        gfs.create('/big', { type: 'guest' });
        gfs.truncate('/big', 60 * MiB);
        expect(gfs.extents('/big').some((extent) => extent.offset + extent.length > 32 * MiB)).toBe(true);
        const big = early.map(gfs.extents('/big'));
        expect(big.bytes(60 * MiB - huge, huge).every((byte) => byte === 0)).toBe(true); // fresh pages are zero
        big.unmap();
        early.close();

        const refused = captureError(() => gfs.resize(32 * MiB));
        expect(refused).toMatchObject({ code: 'EBUSY', errno: -16, syscall: 'resize', path: poolPath });
        expect(refused.message).toMatch(/block \d+ is held by '\/big': the pool can shrink to \d+ MiB now, not 32 MiB/);
        expect(fs.statSync(poolPath).size).toBe(96 * MiB);
        gfs.unlink('/big');
        expect(gfs.resize(32 * MiB)).toMatchObject({ from: 96 * MiB, to: 32 * MiB, blocks: -32 });
        expect(fs.statSync(poolPath).size).toBe(32 * MiB);
        expect(hugePageBytes(poolPath)).toBe(32 * MiB); // the tail's pages went back to the kernel
        expect(gfs.audit().problems).toEqual([]);

        // The file stayed mapped and pinned throughout: the same bytes, and the same pin.
        expect(Buffer.from(ram.bytes(0, 8 * MiB)).equals(Buffer.from(pattern(8 * MiB, 7)))).toBe(true);
        expect(
          gfs
            .pins('/ram')
            .map((holder) => holder.pids)
            .flat(),
        ).toContain(pinners[0]!.pinned.pid);
        gfs.resize(64 * MiB);
        ram.unmap();

        const { blob } = gfs.serialise();
        expect(decodeHandoverBlob(blob).fsMem).toMatchObject({ blockCount: 32, maxBlockCount: 64, size: 64 * MiB });
        gfs.unmount();
        gfs = mount(pool, { requireHandover: true });
        expect(gfs.restored).toBeTruthy();
        expect(gfs.statfs()).toMatchObject({ totalBlocks: 32, maxBlocks: 64 });
        const again = gfs.map('/ram', { writable: false });
        expect(Buffer.from(again.bytes(0, 8 * MiB)).equals(Buffer.from(pattern(8 * MiB, 7)))).toBe(true);
        again.unmap();
        gfs.unmount();
        expect(check(pool).state).toBe('consistent');
      } finally {
        pool.close();
        fs.rmSync(poolPath, { force: true });
      }
    },
  );

  it.skipIf(skipReason(m.isRoot ? m.skip2M : 'not root: cannot mount a hugetlbfs'))(
    'pools dividing a finite reservation: one gives pages back, the other grows into them; short of pages, nothing changes',
    () => {
      // A hugetlbfs limited to 64 MiB: the tenants' share of the host's huge pages.
      const mountpoint = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-budget-'));
      native.mount('none', mountpoint, 'hugetlbfs', 'pagesize=2M,size=64M,mode=0700');
      const pools: Pool[] = [];
      try {
        const a = Pool.create({ backend: 'hugetlbfs', path: path.join(mountpoint, 'a'), size: 48 * MiB });
        pools.push(a);
        const b = Pool.create({ backend: 'hugetlbfs', path: path.join(mountpoint, 'b'), size: 16 * MiB });
        pools.push(b);
        for (const pool of pools) mkfs(pool, { maxSize: 64 * MiB, inodes: 64 });
        const fsA = mount(a);
        const fsB = mount(b);
        try {
          const short = captureError(() => fsB.resize(32 * MiB));
          expect(short).toMatchObject({ code: 'ENOSPC', syscall: 'fallocate' });
          expect(short.message).toContain('raise nr_hugepages or the mount limit');
          expect(fs.statSync(b.path!).size).toBe(16 * MiB);
          expect(fsB.statfs().totalBlocks).toBe(8);
          expect(fsB.audit().problems).toEqual([]);
          fsA.resize(32 * MiB);
          fsB.resize(32 * MiB);
          expect(fs.statfsSync(mountpoint).bfree).toBe(0);
          expect([hugePageBytes(a.path!), hugePageBytes(b.path!)]).toEqual([32 * MiB, 32 * MiB]);
          for (const gfs of [fsA, fsB]) expect(gfs.audit().problems).toEqual([]);
        } finally {
          fsA.unmount();
          fsB.unmount();
        }
      } finally {
        for (const pool of pools) pool.destroy();
        native.umount(mountpoint);
        fs.rmdirSync(mountpoint);
      }
    },
  );

  it('a kill after a grow allocated its pages, before its commit, is recovered: the excess goes back, the next grow is clean', async () => {
    const poolPath = uniquePath('/dev/shm', 'guestmemfs-resize-kill');
    const pool = Pool.create({ backend: 'shm-4k', path: poolPath, size: 4 * MiB });
    try {
      mkfs(pool, { blockSize: B, maxSize: 16 * MiB });
      const before = mount(pool);
      before.create('/keep');
      before.write('/keep', pattern(3 * B, 1));
      before.unmount();
      // The owner dies where the grow's progress report runs: every new page allocated, the superblock not yet changed.
      const lib = JSON.stringify(path.join(repoRoot, 'dist', 'lib', 'index.js'));
      const script =
        `const g = require(${lib}); const fs = g.mount(g.Pool.open(${JSON.stringify(poolPath)}));` +
        `fs.resize(12 * 1024 * 1024, { onProgress: () => {` +
        ` require('fs').writeSync(1, 'allocated\\n'); process.kill(process.pid, 'SIGKILL'); } });`;
      const owner = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let said = '';
      owner.stdout.on('data', (chunk: Buffer) => (said += chunk.toString()));
      const signal = await new Promise((resolve) => owner.once('exit', (_code, killedBy) => resolve(killedBy)));
      expect([signal, said]).toEqual(['SIGKILL', 'allocated\n']);
      expect(fs.statSync(poolPath).size).toBe(12 * MiB);
      // Stale bytes in the excess must never reach a file once the pool grows over it again.
      const excess = Pool.open(poolPath);
      const stale = excess.map([{ offset: 8 * MiB, length: 4 * MiB }]);
      stale.bytes(0, 4 * MiB).fill(0xee);
      stale.unmap();
      excess.close();

      const found = check(pool);
      expect(found.state).toBe('inconsistent');
      expect(found.problems).toContain('the pool file is 8 MiB larger than the filesystem: a resize was interrupted');
      const gfs = mount(pool);
      expect(gfs.recovery?.fixes).toContain('gave back 8 MiB past the end of the filesystem (a resize was interrupted)');
      expect(fs.statSync(poolPath).size).toBe(4 * MiB);
      expect(gfs.statfs().totalBlocks).toBe(64);
      gfs.resize(16 * MiB);
      gfs.create('/new');
      gfs.truncate('/new', gfs.statfs().freeBlocks * B);
      expect(gfs.read('/new').every((byte) => byte === 0)).toBe(true);
      expect(Buffer.from(gfs.read('/keep')).equals(Buffer.from(pattern(3 * B, 1)))).toBe(true);
      expect(gfs.audit().problems).toEqual([]);
      gfs.unmount();
      expect(check(pool).state).toBe('consistent');
      // The checker's repair gives the excess back too, for a pool nobody mounts (a shrink that stopped after its commit).
      const shrunk = mount(pool);
      shrunk.unlink('/new');
      shrunk.resize(12 * MiB);
      shrunk.unmount();
      const extended = Pool.open(poolPath);
      extended.resize(16 * MiB);
      extended.close();
      const repaired = check(pool, { repair: true });
      expect(repaired).toMatchObject({ state: 'repaired' });
      expect(repaired.fixes).toContain('gave back 4 MiB past the end of the filesystem (a resize was interrupted)');
      expect(fs.statSync(poolPath).size).toBe(12 * MiB);
      expect(check(pool).state).toBe('consistent');
    } finally {
      pool.destroy();
    }
  });

  it('resizeAsync grows off the JS thread: other calls are served meanwhile, and what would race it is refused', async () => {
    const t = smallFs({ size: 4 * MiB, blockSize: B, maxSize: 16 * MiB });
    try {
      const gfs = t.fs;
      // Blocks a file let go of are dirty: a truncate onto them zeroes off the thread too, and both are in flight at once.
      gfs.create('/old');
      gfs.truncate('/old', 2 * MiB);
      gfs.unlink('/old');
      gfs.create('/served');
      // Written before the grow: the mapping of the whole pool that data goes through is of the 4 MiB pool.
      gfs.write('/served', pattern(B, 3), 0);
      let zeroing: Promise<void> | undefined;
      let duringGrow: Record<string, string> | undefined;
      const grown = gfs.resizeAsync(16 * MiB, {
        onProgress: () => {
          if (duringGrow) return;
          // The grow is not committed yet: the pool is still 4 MiB, and only what cannot race it is refused.
          duringGrow = {
            totalBlocks: String(gfs.statfs().totalBlocks),
            resize: captureError(() => gfs.resize(8 * MiB)).code!,
            serialise: captureError(() => gfs.serialise()).code!,
            unmount: captureError(() => gfs.unmount()).code!,
          };
          zeroing = gfs.truncateAsync('/served', 2 * MiB);
        },
      });
      const result = await grown;
      await zeroing;
      expect(duringGrow).toEqual({ totalBlocks: '64', resize: 'EBUSY', serialise: 'EBUSY', unmount: 'EBUSY' });
      expect(result).toMatchObject({ from: 4 * MiB, to: 16 * MiB, blocks: 192 });
      expect(t.pool.size).toBe(16 * MiB);
      expect(gfs.statfs().totalBlocks).toBe(256);
      // The new blocks are usable at once, through a mapping of the whole pool made anew for them.
      gfs.create('/new');
      gfs.truncate('/new', gfs.statfs().freeBlocks * B);
      gfs.write('/new', pattern(B, 9), gfs.stat('/new').size - B);
      expect(Buffer.from(gfs.read('/new', gfs.stat('/new').size - B, B)).equals(Buffer.from(pattern(B, 9)))).toBe(true);
      expect(Buffer.from(gfs.read('/served', 0, B)).equals(Buffer.from(pattern(B, 3)))).toBe(true);
      expect(gfs.read('/served', B, 2 * MiB - B).every((byte) => byte === 0)).toBe(true);
      expect(gfs.audit().problems).toEqual([]);
      // A shrink or no change takes the synchronous path, and its refusals are the same.
      expect(await gfs.resizeAsync(16 * MiB)).toMatchObject({ blocks: 0 });
      await expect(gfs.resizeAsync(16 * MiB + B)).rejects.toMatchObject({ code: 'EFBIG' });
    } finally {
      t.close();
    }
  });

  it('a grow over memory past the filesystem that a process still maps is refused, and that memory stays', () => {
    const t = smallFs({ size: 4 * MiB, blockSize: B, maxSize: 16 * MiB });
    try {
      // What an interrupted resize leaves (a pool file larger than the filesystem), with part of it mapped and pinned.
      t.pool.resize(8 * MiB);
      const held = t.pool.map([{ offset: 6 * MiB, length: B }], { pin: true });
      held.bytes(0, B).fill(0x5c);
      const refused = captureError(() => t.fs.resize(12 * MiB));
      expect(refused).toMatchObject({ code: 'EBUSY', syscall: 'resize' });
      expect(refused.message).toMatch(/cannot grow over it: left 4 MiB past the end of the filesystem: it is pinned by pid \d+/);
      expect(t.pool.refreshSize()).toBe(8 * MiB);
      expect(held.bytes(0, B).every((byte) => byte === 0x5c)).toBe(true);
      expect(t.fs.statfs().totalBlocks).toBe(64);
      held.unmap();
      expect(t.fs.resize(12 * MiB)).toMatchObject({ from: 4 * MiB, to: 12 * MiB });
      expect(t.fs.audit().problems).toEqual([]);
    } finally {
      t.close();
    }
  });

  it('a pool formatted without room to grow may shrink and grow back to its size; the first resize marks the format', () => {
    const t = smallFs({ size: 4 * MiB, blockSize: B });
    try {
      expect(readPoolSuperblock(t.pool).incompat & INCOMPAT_RESIZABLE).toBe(0);
      expect(t.fs.resizeLimits()).toEqual({ minSize: (t.fs.geometry.metadataBlocks + 1) * B, maxSize: 4 * MiB });
      t.fs.resize(2 * MiB);
      expect(readPoolSuperblock(t.pool).incompat & INCOMPAT_RESIZABLE).toBe(INCOMPAT_RESIZABLE);
      expect(t.pool.size).toBe(2 * MiB);
      expect(captureError(() => t.fs.resize(4 * MiB + B))).toMatchObject({ code: 'EFBIG' });
      t.fs.resize(4 * MiB);
      t.fs.resize(2 * MiB);
      t.fs.unmount();
      // Without the flag, a superblock whose capacity and size differ is not this format's: refused, not misread.
      rewriteSuperblock(t.pool, { incompat: 0, state: 0 });
      const refused = captureError(() => mount(t.pool));
      expect(refused).toMatchObject({ code: 'EUCLEAN', syscall: 'mount' });
      expect(refused.message).toContain('it records 64 blocks for a 2097152-byte pool');
    } finally {
      t.close();
    }
  });

  it('refuses what it cannot do, and changes nothing', async () => {
    const t = smallFs({ size: 4 * MiB, blockSize: B, maxSize: 8 * MiB });
    try {
      const gfs = t.fs;
      const statBefore = gfs.statfs();
      const unchanged = () => {
        expect(gfs.statfs()).toEqual(statBefore);
        expect(t.pool.refreshSize()).toBe(4 * MiB);
        expect(gfs.audit().problems).toEqual([]);
      };
      expect(captureError(() => gfs.resize('8M' as unknown as number))).toBeInstanceOf(TypeError);
      for (const size of [0, -B, B + 1, Number.NaN, 1.5 * B]) expect(captureError(() => gfs.resize(size))).toBeInstanceOf(RangeError);
      const tooBig = captureError(() => gfs.resize(8 * MiB + B));
      expect(tooBig).toMatchObject({ code: 'EFBIG', errno: -27, syscall: 'resize' });
      expect(tooBig.message).toContain('formatted for at most 8 MiB: reformat it with a larger maxSize (mkfs --max-size)');
      const noData = captureError(() => gfs.resize(gfs.geometry.metadataBlocks * B));
      expect(noData).toMatchObject({ code: 'EINVAL', syscall: 'resize' });
      expect(noData.message).toContain('would leave no data block');
      expect(captureError(() => gfs.actingAs({ uid: 1000, gid: 1000 }, () => gfs.resize(8 * MiB)))).toMatchObject({
        code: 'EPERM',
        syscall: 'resize',
      });
      unchanged();
      // Zeroing off the JS thread (blocks a file let go of, given to another) uses the mapping a resize replaces.
      gfs.create('/old');
      gfs.truncate('/old', 2 * MiB);
      gfs.unlink('/old');
      gfs.create('/f');
      const pending = gfs.truncateAsync('/f', 2 * MiB);
      expect(captureError(() => gfs.resize(8 * MiB))).toMatchObject({ code: 'EBUSY' });
      await pending;
      gfs.truncate('/f', 0);
      gfs.unlink('/f');
      gfs.serialise();
      expect(captureError(() => gfs.resize(8 * MiB))).toMatchObject({ code: 'EBUSY' });
      gfs.abort();
      const view = mount(t.pool, { readOnly: true });
      expect(captureError(() => view.resize(8 * MiB))).toMatchObject({ code: 'EROFS' });
      view.unmount();
      // A quarantined block at the end is bad memory: it is never handed back to the kernel.
      gfs.quarantineBlock(gfs.geometry.blockCount - 1);
      const bad = captureError(() => gfs.resize(2 * MiB));
      expect(bad).toMatchObject({ code: 'EBUSY' });
      expect(bad.message).toContain('is quarantined (bad memory is never given back to the kernel)');
      expect(t.pool.refreshSize()).toBe(4 * MiB);
      expect(gfs.audit().problems).toEqual([]);
    } finally {
      t.close();
    }
  });
});

describe('guestmemfs resize', () => {
  it('mkfs --max-size, then resize by a change or to a size; df and status show the room to grow', () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-resize-cli');
    try {
      const made = run('mkfs', pool, '--size', '16M', '--max-size', '64M');
      expect(made.stdout).toContain('may grow to 64 MiB');
      expect(run('resize', pool, '+16M').stdout).toMatch(new RegExp(`^${pool}: 16 MiB -> 32 MiB \\(8 blocks added, [\\d.]+ ms\\)\\n$`));
      expect(fs.statSync(pool).size).toBe(32 * MiB);
      expect(run('df', '-h', pool).stdout).toContain('Growth:     up to 64M (guestmemfs resize)');
      expect(run('status', pool).stdout).toContain('32 MiB (may grow to 64 MiB)');
      const json = JSON.parse(run('resize', '--json', pool, '24M').stdout) as { from: number; to: number; blocks: number };
      expect(json).toMatchObject({ pool, from: 32 * MiB, to: 24 * MiB, blocks: -4 });
      const refused = run('resize', pool, '+1G');
      expect(refused.status).not.toBe(0);
      expect(refused.stderr).toContain('EFBIG');
      expect(run('resize', pool, 'lots').stderr).toContain('"lots" is not a size (8G) or a change to one (+4G, -2G)');
      expect(fs.statSync(pool).size).toBe(24 * MiB);
      expect(run('check', pool).stdout).toBe(`${pool}: consistent\n`);
    } finally {
      fs.rmSync(pool, { force: true });
    }
  });
});

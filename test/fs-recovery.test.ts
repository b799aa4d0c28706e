// Recovery at mount after the owner died: orphans left by a killed process are freed, derived state is rebuilt.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, repoRoot, uniquePath } from './helpers';

const B = 64 * KiB;
const pools: Pool[] = [];
afterEach(() => {
  while (pools.length) pools.pop()!.destroy();
});

/** Runs `body` (JS source using `g` = guestmemfs and `fs` = the mounted filesystem) in a child, then SIGKILLs it. */
async function runAndKill(poolPath: string, body: string): Promise<number> {
  const script = `
    const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
    const fs = g.mount(g.Pool.open(${JSON.stringify(poolPath)}));
    ${body}
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`child exited ${code} before it was ready`)));
  });
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

describe('mount after the owner was killed', () => {
  it('frees the blocks of a file that was unlinked while mapped, and rebuilds everything derived', async () => {
    const pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-recover'), size: 4 * MiB });
    pools.push(pool);
    mkfs(pool, { blockSize: B });
    const setup = mount(pool);
    setup.create('/keep', { type: 'state' });
    setup.write('/keep', new TextEncoder().encode('kept'));
    setup.unmount();
    const pid = await runAndKill(
      pool.path!,
      `fs.create('/ram', { type: 'guest' }); fs.truncate('/ram', ${5 * B});
       const m = fs.map('/ram'); m.bytes()[0] = 1; fs.unlink('/ram'); globalThis.keep = m;`,
    );
    const refused = captureError(() => mount(pool, { repair: false }));
    expect(refused).toMatchObject({ code: 'EUCLEAN', syscall: 'mount' });
    const fs = mount(pool);
    expect(fs.recovery?.previousOwnerPid).toBe(pid);
    expect(fs.recovery?.fixes.some((fix) => /freed unlinked inode \d+ \(5 blocks\)/.test(fix))).toBe(true);
    expect(fs.readdir('/')).toEqual(['keep']);
    expect(new TextDecoder().decode(fs.read('/keep'))).toBe('kept');
    const statfs = fs.statfs();
    expect(statfs.freeBlocks).toBe(statfs.dataBlocks - 1);
    expect(statfs.dirtyFreeBlocks).toBe(5);
    expect(statfs.freeInodes).toBe(statfs.totalInodes - 2);
    expect(fs.audit().problems).toEqual([]);
    fs.unmount();
  });

  it('a pool killed in the middle of many operations always comes back consistent', async () => {
    const pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-busy'), size: 4 * MiB });
    pools.push(pool);
    mkfs(pool, { blockSize: B });
    mount(pool).unmount();
    for (let round = 0; round < 5; round++) {
      // A child busy renaming, resizing and unlinking in a loop, killed at an arbitrary moment.
      const script = `
        const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
        const fs = g.mount(g.Pool.open(${JSON.stringify(pool.path)}));
        process.stdout.write('ready\\n');
        for (let i = 0; ; i++) {
          require('fs').writeSync(1, i + '\\n');
          const name = '/f' + (i % 7);
          try { fs.create(name, { type: 'state' }); } catch {}
          try { fs.truncate(name, (i * 7919) % ${12 * B}); } catch {}
          try { fs.rename(name, '/f' + ((i * 3) % 7)); } catch {}
          if (i % 5 === 0) try { fs.unlink('/f' + ((i * 5) % 7)); } catch {}
        }`;
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      // Killed when the child reports reaching its Nth round, wherever it is in that round when the signal lands.
      const killAt = String(20 + round * 37);
      let pending = '';
      child.stdout.on('data', (chunk: Buffer) => {
        pending += chunk.toString();
        const lines = pending.split('\n');
        pending = lines.pop()!;
        if (lines.includes(killAt)) child.kill('SIGKILL');
      });
      await exited;
      const fs = mount(pool);
      expect(fs.recovery).toBeDefined();
      expect(fs.audit().problems).toEqual([]);
      fs.unmount();
    }
  });
});

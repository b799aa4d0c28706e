// Read-only views: inspect a pool that another process has mounted, or that is serialised for handover, without a
// lock and without changing a byte; a snapshot is trusted only when it is consistent.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, mkfs, mount, Pool } from '../lib/index';
import { captureError, repoRoot, uniquePath } from './helpers';

const B = 64 * KiB;
let pool: Pool;
beforeEach(() => {
  pool = Pool.create({ backend: 'shm-4k', path: uniquePath('/dev/shm', 'guestmemfs-ro'), size: 4 * MiB });
  mkfs(pool, { blockSize: B });
  const gfs = mount(pool);
  gfs.mkdir('/vm');
  gfs.create('/vm/state', { type: 'state' });
  gfs.write('/vm/state', new TextEncoder().encode('saved'));
  gfs.create('/vm/ram', { type: 'guest' });
  gfs.truncate('/vm/ram', 2 * B);
  gfs.unmount();
});
afterEach(() => pool.destroy());

function digest(): string {
  const mapping = pool.map([{ offset: 0, length: pool.size }], { populate: false, writable: false });
  const hash = crypto.createHash('sha256').update(mapping.bytes()).digest('hex');
  mapping.unmap();
  return hash;
}

describe('read-only views', () => {
  it('read a serialised pool without adopting its handover, and refuse every change with EROFS', () => {
    const gfs = mount(pool);
    gfs.serialise();
    gfs.unmount();
    const before = digest();
    const view = mount(pool, { readOnly: true });
    expect(view.readOnly).toBe(true);
    expect(view.readdir('/vm').sort()).toEqual(['ram', 'state']);
    expect(new TextDecoder().decode(view.read('/vm/state'))).toBe('saved');
    const ram = view.map('/vm/ram');
    expect(ram.length).toBe(2 * B);
    ram.unmap();
    for (const change of [
      () => view.create('/x'),
      () => view.truncate('/vm/ram', B),
      () => view.serialise(),
      () => view.abort(),
      () => view.map('/vm/ram', { writable: true }),
    ]) {
      expect(captureError(change)).toMatchObject({ code: 'EROFS', errno: -30 });
    }
    view.unmount();
    expect(digest()).toBe(before);
    expect(mount(pool).restored).toBeDefined(); // the handover is still there for the real successor
  });

  it('read a pool that another live process has mounted, while a normal mount is refused with its pid', async () => {
    const script = `
      const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
      const fs = g.mount(g.Pool.open(${JSON.stringify(pool.path)}));
      fs.create('/vm/more', { type: 'state' });
      process.stdout.write('ready\\n'); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      expect(captureError(() => mount(pool)).message).toContain(`pid ${child.pid}`);
      const view = mount(pool, { readOnly: true });
      expect(view.readdir('/vm').sort()).toEqual(['more', 'ram', 'state']);
      expect(view.statfs().freeInodes).toBe(view.statfs().totalInodes - 5);
      view.unmount();
    } finally {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });

  it('refuse a snapshot that is not consistent when nobody is changing it', () => {
    const header = pool.map([{ offset: 0, length: 16 * KiB }]);
    new Uint32Array(header.buffer, 12288, 4)[1] = 12345; // the free inode counter
    header.unmap();
    expect(captureError(() => mount(pool, { readOnly: true }))).toMatchObject({ code: 'EUCLEAN' });
  });
});

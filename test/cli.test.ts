// The guestmemfs command as an operator runs it: detect, the restart demo behind `npm start`, and error exits.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { machine, repoRoot, uniquePath } from './helpers';

const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
const m = machine();

describe('guestmemfs CLI', () => {
  it('detect --json reports page sizes, mounts and KVM as JSON', () => {
    const result = run('detect', '--json');
    expect(result.status).toBe(0);
    const report = JSON.parse(result.stdout);
    expect(report.hugePageSizes.map((size: { pageSize: number }) => size.pageSize)).toContain(2 * 1024 * 1024);
    expect(typeof report.kvm).toBe('boolean');
    if (m.hugetlbfs2M) expect(report.hugetlbfsMounts.map((mount: { mountpoint: string }) => mount.mountpoint)).toContain(m.hugetlbfs2M);
  });

  it('demo writes guest RAM, kexecs into a new process (same pid) that restores it on the same physical pages', () => {
    const result = run('demo', '--size', '16M');
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const pids = [...result.stdout.matchAll(/pid (\d+):/g)].map((match) => match[1]);
    expect(pids).toHaveLength(2);
    expect(pids[1]).toBe(pids[0]);
    expect(result.stdout).toMatch(/restored \d+ inodes from the handover/);
    expect(result.stdout).toMatch(/\/vm0\/ram checksum [0-9a-f]+ matches/);
    if (m.isRoot) expect(result.stdout).toContain('all 8 physical frames identical');
    if (!m.hugetlbfs2M) expect(result.stdout).toContain('4 KiB fallback');
  });

  it('expected errors exit 1 with the message and no stack trace; --debug shows the stack', () => {
    const result = run('demo', '--size', '3M');
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('guestmemfs: EINVAL: demo size must be a positive multiple of 2 MiB, got 3M\n');
    const debug = run('--debug', 'demo', '--size', 'lots');
    expect(debug.status).not.toBe(0);
    expect(debug.stderr).toContain('at ');
  });
});

describe('the RFC usage flow through the CLI (4 KiB fallback pool under /dev/shm)', () => {
  it('mkfs, touch, truncate, ls -l, df, status, serialise, frozen, inspect, check, kexec, abort', () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-cli');
    const blob = `${pool}.dtb`;
    try {
      const made = run('mkfs', pool, '--size', '64M', '--json');
      expect(made.status).toBe(0);
      expect(JSON.parse(made.stdout)).toMatchObject({ backend: 'shm-4k', geometry: { blockSize: 2 * 1024 * 1024 } });
      expect(run('touch', '--type', 'guest', pool, '/ram').status).toBe(0);
      expect(run('truncate', '-s', '20M', pool, '/ram').status).toBe(0);
      expect(run('mkdir', '-p', pool, '/vms/vm0').status).toBe(0);
      const listing = run('ls', '-l', pool, '/');
      expect(listing.stdout).toMatch(/^-rw------- +1 +\d+ +\d+ +20971520 guest .* ram$/m);
      expect(listing.stdout).toMatch(/^drwxr-xr-x .* vms$/m);
      expect(JSON.parse(run('df', '--json', pool).stdout)).toMatchObject({ freeInodes: expect.any(Number), blockSize: 2 * 1024 * 1024 });
      expect(JSON.parse(run('status', '--json', pool).stdout)).toMatchObject({ backend: 'shm-4k', state: 'Clean' });
      const serialised = run('serialise', pool, '--out', blob);
      expect(serialised.stdout).toMatch(/serialised at generation \d+/);
      const frozen = run('touch', pool, '/x');
      expect(frozen.status).toBe(1);
      expect(frozen.stderr).toMatch(/^guestmemfs: EBUSY: pool is serialised for handover .*run `guestmemfs abort/);
      expect(run('ls', pool, '/vms').stdout.trim()).toBe('vm0'); // read-only commands still work
      expect(JSON.parse(run('inspect', blob).stdout)).toMatchObject({ compatible: 'guestmemfs-v1', fsMem: { backend: 'shm-4k' } });
      expect(run('inspect', '--dts', pool).stdout).toContain('compatible = "guestmemfs-v1";');
      const checked = run('check', pool);
      expect([checked.status, checked.stdout.trim()]).toEqual([0, `${pool}: consistent`]);
      const kexec = run('kexec', pool, '--', process.execPath, cli, 'ls', pool, '/');
      expect(kexec.status).toBe(0);
      expect(kexec.stdout.split('\n').filter(Boolean).sort()).toEqual(['ram', 'vms']);
      expect(run('abort', pool).status).toBe(0);
      expect(run('touch', pool, '/x').status).toBe(0);
      expect(run('rm', '-r', pool, '/vms').status).toBe(0);
      expect(run('ls', pool).stdout.split('\n').filter(Boolean).sort()).toEqual(['ram', 'x']);
    } finally {
      fs.rmSync(pool, { force: true });
      fs.rmSync(blob, { force: true });
    }
  });

  it('exit codes: 1 with the cause and remedy on stderr, 2 for usage, and check answers 4 when inconsistent', () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-cli');
    try {
      run('mkfs', pool, '--size', '16M', '-q');
      run('touch', pool, '/f');
      const nospc = run('truncate', '-s', '1G', pool, '/f');
      expect(nospc.status).toBe(1);
      expect(nospc.stderr).toMatch(/^guestmemfs: ENOSPC: pool has \d+ free 2 MiB blocks, truncate needs \d+/);
      expect(nospc.stderr).not.toContain('    at ');
      expect(run('ls', pool, '/missing').status).toBe(1);
      expect(run('truncate', pool, '/f').status).toBe(2); // -s missing
      expect(run('frobnicate').status).toBe(2);
      expect(run('check', '--repair', '--dry-run', pool).status).toBe(2);
      // Damage the free inode counter: check says inconsistent (4), repair says repaired (3), then consistent (0).
      const fd = fs.openSync(pool, 'r+');
      fs.writeSync(fd, Buffer.from([0x7b, 0, 0, 0]), 0, 4, 12288 + 4);
      fs.closeSync(fd);
      expect(run('check', pool).status).toBe(4);
      const repaired = run('check', '--repair', pool);
      expect([repaired.status, repaired.stdout.split('\n')[0]]).toEqual([3, `${pool}: repaired`]);
      expect(run('check', pool).status).toBe(0);
    } finally {
      fs.rmSync(pool, { force: true });
    }
  });
});

// The guestmemfs command as an operator runs it: detect, the restart demo behind `npm start`, and error exits.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { machine, repoRoot } from './helpers';

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

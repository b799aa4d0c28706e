// The guestmemfs command as an operator runs it: detect, the restart demo behind `npm start`, and error exits.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { machine, repoRoot, skipReason, uniquePath } from './helpers';

const cli = path.join(repoRoot, 'dist', 'cli', 'guestmemfs.js');
// Run it as an operator would: the `guestmemfs` command found on PATH (what npm's bin link installs).
const binDir = fs.mkdtempSync(path.join(os.tmpdir(), 'guestmemfs-bin-'));
fs.symlinkSync(cli, path.join(binDir, 'guestmemfs'));
const env = { ...process.env, PATH: `${binDir}:${process.env.PATH}` };
const run = (...args: string[]) => spawnSync('guestmemfs', args, { encoding: 'utf8', env });
afterAll(() => fs.rmSync(binDir, { recursive: true, force: true }));
const m = machine();

/** Runs fn on a fresh 16 MiB 4 KiB-fallback pool holding an empty file /f, and removes the pool afterwards. */
function withPoolFile(fn: (pool: string) => void): void {
  const pool = uniquePath('/dev/shm', 'guestmemfs-cli');
  try {
    run('mkfs', pool, '--size', '16M', '-q');
    run('touch', pool, '/f');
    fn(pool);
  } finally {
    fs.rmSync(pool, { force: true });
  }
}

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
    const result = run('demo', '--no-vm', '--size', '16M');
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
      const usage = JSON.parse(run('df', '--json', pool).stdout) as { freeBlocks: number; largestFreeRun: number };
      expect(usage).toMatchObject({ freeInodes: expect.any(Number), blockSize: 2 * 1024 * 1024, freeRuns: 1 });
      // One file at the start of the data blocks: free space is the rest, in one piece.
      expect(usage.largestFreeRun).toBe(usage.freeBlocks);
      expect(run('df', '-h', pool).stdout).toContain(
        `Free space: 1 free run, the largest ${usage.freeBlocks * 2}M (${usage.freeBlocks} blocks)`,
      );
      expect(run('status', pool).stdout).toMatch(/^free space: 1 free run, the largest \d+M \(\d+ blocks\)$/m);
      expect(JSON.parse(run('status', '--json', pool).stdout)).toMatchObject({ backend: 'shm-4k', state: 'Clean' });
      expect(run('serialise', pool, '--handover-version', '3').status).toBe(2); // and nothing serialised
      const serialised = run('serialise', pool, '--out', blob);
      expect(serialised.stdout).toMatch(/serialised at generation \d+ \(handover version 2,/);
      // A rollback's handover: this command restores the pool and serialises it again, as version 1.
      expect(run('serialise', pool, '--handover-version', '1').stdout).toMatch(/serialised at generation \d+ \(handover version 1,/);
      expect(JSON.parse(run('inspect', pool).stdout)).toMatchObject({ handoverVersion: 1 });
      const frozen = run('touch', pool, '/x');
      expect(frozen.status).toBe(1);
      expect(frozen.stderr).toMatch(/^guestmemfs: EBUSY: pool is serialised for handover .*run `guestmemfs abort/);
      expect(run('ls', pool, '/vms').stdout.trim()).toBe('vm0'); // read-only commands still work
      expect(JSON.parse(run('inspect', blob).stdout)).toMatchObject({ compatible: 'guestmemfs-v1', fsMem: { backend: 'shm-4k' } });
      expect(run('inspect', '--dts', pool).stdout).toContain('compatible = "guestmemfs-v1";');
      const checked = run('check', pool);
      expect([checked.status, checked.stdout.trim()]).toEqual([0, `${pool}: consistent`]);
      const kexec = run('kexec', pool, '--', 'guestmemfs', 'ls', pool, '/');
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

  it('mkfs memfd: formats a memfd pool and hands it to a command through an inherited fd', () => {
    const handed = run(
      'mkfs',
      'memfd:vm',
      '--size',
      '16M',
      '--page-size',
      '4K',
      '--',
      'sh',
      '-c',
      'guestmemfs status "fd:$GUESTMEMFS_POOL_FD" --json',
    );
    expect(handed.stderr).toBe('');
    expect(JSON.parse(handed.stdout)).toMatchObject({ backend: 'memfd-4k', state: 'Serialised' });
    expect(run('mkfs', 'memfd:vm', '--size', '16M').status).toBe(2);
  });

  it('exit codes: 1 with the cause and remedy on stderr, 2 for usage, and check answers 4 when inconsistent', () => {
    withPoolFile((pool) => {
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
    });
  });
});

describe('what a new user hit', () => {
  it('mkfs into a directory that does not exist: one line naming the fix, no stack trace', () => {
    const result = run('mkfs', '/no/such/dir/pool', '--size', '1G');
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(
      "guestmemfs: ENOENT: no such file or directory, statfs '/no/such/dir': the pool's directory must exist: create /no/such/dir (or " +
        'mount a hugetlbfs there) first\n',
    );
  });

  it('a truncate the pool cannot hold says how much it asked for and how much is free, in units', () => {
    withPoolFile((pool) => {
      const result = run('truncate', '-s', '100T', pool, '/f');
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/truncate needs 52428800 of them \(100 TiB, \d+ MiB free\)/);
    });
  });

  it('abort thaws a handover left by a process that exited: the blob goes stale and the pool can change again', () => {
    withPoolFile((pool) => {
      expect(run('serialise', pool, '-q').status).toBe(0);
      expect(JSON.parse(run('status', pool, '--json').stdout).state).toBe('Serialised');
      const aborted = run('abort', pool);
      expect([aborted.status, aborted.stderr]).toEqual([0, expect.stringMatching(/handover of generation \d+ aborted/)]);
      expect(JSON.parse(run('status', pool, '--json').stdout).state).toBe('Clean');
      expect(run('inspect', pool).status).toBe(1); // no handover any more
      expect(run('touch', pool, '/g').status).toBe(0);
      expect(run('abort', pool).stderr).toContain('was not serialised');
    });
  });

  it('inspect tells a pool from a blob by its first bytes: a 64 GiB pool is not read whole', () => {
    const dir = fs.mkdtempSync(path.join('/dev/shm', 'guestmemfs-inspect-'));
    const pool = path.join(dir, 'pool');
    try {
      // Sparse: the pool describes 64 GiB and owns only its metadata pages. Reading it whole would fail (over 2 GiB).
      const script = `
        const g = require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});
        const pool = g.Pool.create({ backend: 'shm-4k', path: ${JSON.stringify(pool)}, size: 64 * g.GiB, sparse: true });
        g.mkfs(pool, { inodes: 64 }); const fs = g.mount(pool); fs.create('/ram', { type: 'guest' }); fs.serialise(); fs.unmount();`;
      const made = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
      expect(made.stderr).toBe('');
      const result = run('inspect', pool);
      expect(result.stderr).toBe('');
      expect(JSON.parse(result.stdout)).toMatchObject({ compatible: 'guestmemfs-v1', fsMem: { size: 64 * 1024 ** 3 } });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('operator conveniences', () => {
  it('every subcommand has --help with an example', () => {
    const commands = [
      'detect',
      'mkfs',
      'status',
      'ls',
      'stat',
      'df',
      'mkdir',
      'touch',
      'truncate',
      'rm',
      'mv',
      'chmod',
      'chown',
      'pin',
      'qemu-args',
      'serialise',
      'abort',
      'check',
      'inspect',
      'kexec',
      'demo',
      'vmm',
    ];
    const top = run('--help').stdout;
    for (const name of commands) {
      expect(top, name).toMatch(new RegExp(`^  ${name}\\b.* {2,}\\S`, 'm'));
      const help = run(name, '--help');
      expect(help.status, name).toBe(0);
      expect(help.stdout, name).toMatch(/Example:\n {2}\$ (sudo )?guestmemfs /);
    }
  });

  it('vmm refuses a vCPU count it cannot run, before touching the pool', () => {
    for (const vcpus of ['0', '65', '1.5', 'two']) {
      const result = run('vmm', '/nonexistent/pool', '--ram', '64M', '--vcpus', vcpus);
      expect(result.status, vcpus).not.toBe(0);
      expect(result.stderr, vcpus).toMatch(/EINVAL: --vcpus .* must be an integer from 1 to 64/);
    }
  });

  it.skipIf(
    skipReason(
      spawnSync('sh', ['-c', 'command -v script']).status === 0 ? '' : 'script(1) from util-linux is needed for a pseudo-terminal',
    ),
  )('mkfs shows a progress bar on a terminal and stays quiet when piped', () => {
    const onTty = uniquePath('/dev/shm', 'guestmemfs-tty');
    const piped = uniquePath('/dev/shm', 'guestmemfs-pipe');
    try {
      const tty = spawnSync('script', ['-qec', `guestmemfs mkfs ${onTty} --size 64M`, '/dev/null'], { encoding: 'utf8', env });
      expect(tty.status).toBe(0);
      expect(tty.stdout).toMatch(/reserving pages \[#+\] 64 MiB \/ 64 MiB/);
      const pipe = run('mkfs', piped, '--size', '64M');
      expect(pipe.status).toBe(0);
      expect(pipe.stderr).not.toContain('reserving pages');
    } finally {
      fs.rmSync(onTty, { force: true });
      fs.rmSync(piped, { force: true });
    }
  });

  it('a pool another live process has mounted: changes refused with its pid, looks still work, status says who', async () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-held');
    run('mkfs', pool, '--size', '16M', '-q');
    run('touch', pool, '/f');
    const script =
      `const g=require(${JSON.stringify(path.join(repoRoot, 'dist/lib/index.js'))});g.mount(g.Pool.open(${JSON.stringify(pool)}));` +
      `process.stdout.write('ready\\n');setInterval(()=>{},1000);`;
    const holder = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      const refused = run('touch', pool, '/g');
      expect(refused.status).toBe(1);
      expect(refused.stderr).toContain(`EBUSY: pool is mounted by pid ${holder.pid}`);
      expect(run('ls', pool).stdout.trim()).toBe('f');
      expect(run('status', pool).stdout).toContain(`state:      live: mounted by pid ${holder.pid}`);
      holder.kill('SIGKILL');
      await new Promise((resolve) => holder.once('exit', resolve));
      expect(run('status', pool).stdout).toContain(`not handed over cleanly: its owner (pid ${holder.pid}) died`);
      expect(run('check', pool).status).toBe(4);
      expect(run('touch', pool, '/g').status).toBe(0); // the next mount recovers it
      expect(run('status', pool).stdout).toContain('state:      clean');
    } finally {
      holder.kill('SIGKILL');
      fs.rmSync(pool, { force: true });
    }
  });
});

describe('external VMMs: pin, qemu-args and contiguous files', () => {
  it('pin runs a command holding the file: rm leaves its blocks alone, new files never get them, they return when it exits', async () => {
    const pool = uniquePath('/dev/shm', 'guestmemfs-cli');
    try {
      run('mkfs', pool, '--size', '16M', '-q');
      run('touch', '--contiguous', '--type', 'guest', pool, '/vm0-ram');
      run('truncate', '-s', '4M', pool, '/vm0-ram');
      // The command reports what the wrapper exported, then waits for its stdin to close.
      const report =
        "const ours = Object.entries(process.env).filter(([k]) => k.startsWith('GUESTMEMFS_'));" +
        "process.stdout.write(JSON.stringify(Object.fromEntries(ours)) + '\\n');" +
        "process.stdin.resume(); process.stdin.on('end', () => process.exit(0));";
      const child = spawn('guestmemfs', ['pin', pool, '/vm0-ram', '--', process.execPath, '-e', report], {
        env,
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      const exported = await new Promise<Record<string, string>>((resolve) =>
        child.stdout.once('data', (chunk: Buffer) => resolve(JSON.parse(chunk.toString()))),
      );
      const [offset, size] = [Number(exported.GUESTMEMFS_FILE0_OFFSET), Number(exported.GUESTMEMFS_FILE0_SIZE)];
      expect(exported).toMatchObject({
        GUESTMEMFS_POOL: pool,
        GUESTMEMFS_FILES: '1',
        GUESTMEMFS_FILE0_PATH: '/vm0-ram',
        GUESTMEMFS_FILE0_SIZE: String(4 * 1024 * 1024),
      });
      expect(exported.GUESTMEMFS_FILE0_EXTENTS).toBe(`${offset}:${size}`);
      const stat = JSON.parse(run('stat', pool, '/vm0-ram', '--json').stdout);
      expect(stat).toMatchObject({ contiguous: true, pins: [{ offset, length: size, pids: [child.pid] }] });
      expect(run('rm', pool, '/vm0-ram').status).toBe(0);
      const status = JSON.parse(run('status', pool, '--json').stdout);
      expect(status.pinnedOrphans).toEqual([{ ino: stat.ino, blocks: 2 }]);
      expect(status.pins).toEqual([{ offset, length: size, pids: [child.pid] }]);
      expect(run('status', pool).stdout).toContain(`pins:       pid ${child.pid} on [${offset}, +4 MiB)`);
      // Every free block goes to a new file: none of the pinned ones.
      run('touch', pool, '/filler');
      const free = JSON.parse(run('df', pool, '--json').stdout);
      expect(run('truncate', '-s', String(free.freeBlocks * free.blockSize), pool, '/filler').status).toBe(0);
      for (const extent of JSON.parse(run('stat', pool, '/filler', '--json').stdout).extents as Array<{ offset: number; length: number }>) {
        expect(extent.offset + extent.length <= offset || offset + size <= extent.offset).toBe(true);
      }
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin.end();
      await exited;
      expect(run('rm', pool, '/filler').status).toBe(0); // the next change reclaims the file the command held
      expect(JSON.parse(run('df', pool, '--json').stdout).freeBlocks).toBe(free.freeBlocks + 2);
    } finally {
      fs.rmSync(pool, { force: true });
    }
  });

  it('qemu-args prints the backend of a contiguous file, and refuses a file in several extents with the remedy', () => {
    withPoolFile((pool) => {
      run('touch', '--contiguous', '--type', 'guest', pool, '/vm0-ram');
      expect(run('truncate', '-s', '4M', pool, '/vm0-ram').status).toBe(0);
      const offset = JSON.parse(run('stat', pool, '/vm0-ram', '--json').stdout).extents[0].offset;
      const result = run('qemu-args', pool, '/vm0-ram');
      expect(result.stdout.trim()).toBe(
        `-object memory-backend-file,id=gmfs0-vm0-ram,mem-path=${pool},offset=${offset},size=4194304,share=on ` +
          '-machine memory-backend=gmfs0-vm0-ram',
      );
      // A plain file grown around another one gets a second extent; QEMU could not map it.
      run('truncate', '-s', '2M', pool, '/f');
      run('touch', pool, '/g');
      run('truncate', '-s', '2M', pool, '/g');
      run('truncate', '-s', '4M', pool, '/f');
      expect(JSON.parse(run('stat', pool, '/f', '--json').stdout).extents).toHaveLength(2);
      const refused = run('qemu-args', pool, '/f');
      expect([refused.status, refused.stderr]).toEqual([1, expect.stringContaining('touch --contiguous')]);
    });
  });

  it('a contiguous file grows in place or fails with ENOSPC naming the largest free run', () => {
    withPoolFile((pool) => {
      run('touch', '--contiguous', pool, '/c');
      run('truncate', '-s', '2M', pool, '/c');
      run('truncate', '-s', '2M', pool, '/f'); // right after /c: /c cannot grow in place any more
      const refused = run('truncate', '-s', '4M', pool, '/c');
      expect(refused.status).toBe(1);
      expect(refused.stderr).toMatch(
        /ENOSPC: contiguous file needs 1 more 2 MiB blocks \(2 MiB\) in one run right after its end.*the largest free run is \d+ blocks/,
      );
      const after = JSON.parse(run('stat', pool, '/c', '--json').stdout);
      expect([after.size, after.contiguous, after.extents.length]).toEqual([2 * 1024 * 1024, true, 1]);
    });
  });
});

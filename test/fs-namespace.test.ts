// Namespace operations: create, mkdir, lookup, readdir, unlink, rmdir, rename, stat, chmod, chown, utimes, names, permissions.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mount } from '../lib/index';
import { captureError } from './helpers';
import { smallFs, type TestFs } from './fs-helpers';

let t: TestFs;
beforeEach(() => {
  t = smallFs();
});
afterEach(() => t.close());

describe('create and mkdir', () => {
  it('create makes an empty file of the chosen type with sensible modes, and stat reports it', () => {
    const { fs } = t;
    const before = BigInt(Date.now()) * 1_000_000n - 1_000_000_000n;
    const guest = fs.create('/ram', { type: 'guest' });
    expect(guest).toMatchObject({
      type: 'file',
      fileType: 'guest',
      size: 0,
      blocks: 0,
      nlink: 1,
      mode: 0o600,
      uid: process.getuid!(),
      gid: process.getgid!(),
    });
    expect(guest.birthtimeNs).toBeGreaterThan(before);
    expect(fs.create('/state', { type: 'state' })).toMatchObject({ fileType: 'state', mode: 0o600 });
    expect(fs.create('/plain')).toMatchObject({ fileType: 'plain', mode: 0o644 });
    expect(fs.create('/custom', { mode: 0o640 }).mode).toBe(0o640);
    expect(fs.stat('/ram')).toEqual(guest);
    expect(fs.lookup('/ram')).toBe(guest.ino);
  });

  it('mkdir links a directory and counts it in the parent nlink; mkdir -p creates parents and accepts existing ones', () => {
    const { fs } = t;
    expect(fs.mkdir('/vms')).toMatchObject({ type: 'directory', nlink: 2, mode: 0o755 });
    expect(fs.stat('/').nlink).toBe(3);
    const deep = fs.mkdir('/vms/a/b/c', { recursive: true });
    expect(fs.lookup('/vms/a/b/c')).toBe(deep.ino);
    expect(fs.mkdir('/vms/a/b', { recursive: true }).ino).toBe(fs.lookup('/vms/a/b'));
    fs.create('/vms/file');
    expect(captureError(() => fs.mkdir('/vms/file/x', { recursive: true }))).toMatchObject({ code: 'ENOTDIR', path: '/vms/file' });
  });

  it('refuses existing names, missing parents, files as parents and the root', () => {
    const { fs } = t;
    fs.create('/f');
    expect(captureError(() => fs.create('/f'))).toMatchObject({ code: 'EEXIST', errno: -17, syscall: 'open', path: '/f' });
    expect(captureError(() => fs.mkdir('/f'))).toMatchObject({ code: 'EEXIST', syscall: 'mkdir' });
    expect(captureError(() => fs.create('/missing/f'))).toMatchObject({ code: 'ENOENT', errno: -2 });
    expect(captureError(() => fs.create('/f/g'))).toMatchObject({ code: 'ENOTDIR', errno: -20 });
    expect(captureError(() => fs.mkdir('/'))).toMatchObject({ code: 'EEXIST' });
    expect(captureError(() => fs.create('/x', { type: 'weird' as never }))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.create('/x', { mode: 0o10000 }))).toMatchObject({ code: 'EINVAL' });
    expect(fs.exists('/x')).toBe(false);
  });

  it('validates names: 1..255 bytes, no NUL, not . or .., absolute paths only', () => {
    const { fs } = t;
    expect(fs.create(`/${'n'.repeat(255)}`).type).toBe('file');
    expect(captureError(() => fs.create(`/${'n'.repeat(256)}`))).toMatchObject({ code: 'ENAMETOOLONG', errno: -36 });
    // 128 two-byte characters are 256 bytes.
    expect(captureError(() => fs.create(`/${'é'.repeat(128)}`)).code).toBe('ENAMETOOLONG');
    expect(fs.create(`/${'é'.repeat(127)}`).type).toBe('file');
    expect(captureError(() => fs.create('/a\0b'))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.create('/..'))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.mkdir('/d/.'))).toMatchObject({ code: 'ENOENT' });
    fs.mkdir('/d');
    expect(captureError(() => fs.mkdir('/d/.'))).toMatchObject({ code: 'EEXIST' });
    expect(captureError(() => fs.rmdir('/d/.'))).toMatchObject({ code: 'EINVAL' });
    fs.rmdir('/d');
    expect(captureError(() => fs.create('relative'))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.stat(`/${'a/'.repeat(2100)}`))).toMatchObject({ code: 'ENAMETOOLONG' });
    expect(fs.readdir('/')).toHaveLength(2);
  });

  it('runs out of inodes with ENOSPC naming inodes, and recovers after a delete', () => {
    const small = smallFs({ inodes: 8 });
    try {
      const { fs } = small;
      for (let i = 0; i < 6; i++) fs.create(`/f${i}`);
      const error = captureError(() => fs.create('/one-too-many'));
      expect(error).toMatchObject({ code: 'ENOSPC', errno: -28 });
      expect(error.message).toContain('no free inodes: all 7 are in use');
      expect(fs.statfs().freeInodes).toBe(0);
      fs.unlink('/f0');
      expect(fs.create('/one-too-many').type).toBe('file');
      expect(fs.audit().problems).toEqual([]);
    } finally {
      small.close();
    }
  });
});

describe('lookup and readdir', () => {
  it('resolves . and .. and repeated slashes; readdir lists entries with types', () => {
    const { fs } = t;
    fs.mkdir('/a');
    fs.mkdir('/a/b');
    const file = fs.create('/a/b/f');
    expect(fs.lookup('//a/./b/../b//f')).toBe(file.ino);
    expect(fs.lookup('/..')).toBe(fs.lookup('/'));
    expect(fs.readdirEntries('/a')).toEqual([{ name: 'b', ino: fs.lookup('/a/b'), type: 'directory' }]);
    expect(fs.readdir('/a/b')).toEqual(['f']);
    expect(captureError(() => fs.readdir('/a/b/f'))).toMatchObject({ code: 'ENOTDIR', syscall: 'scandir' });
    expect(captureError(() => fs.stat('/a/nope'))).toMatchObject({ code: 'ENOENT', syscall: 'stat', path: '/a/nope' });
    expect(captureError(() => fs.stat('/a/b/f/x'))).toMatchObject({ code: 'ENOTDIR' });
  });

  it('looks names up through a hash index, not by scanning the directory list', () => {
    const big = smallFs({ inodes: 5000 });
    try {
      for (let i = 0; i < 4000; i++) big.fs.create(`/file-${i}`);
      expect(big.fs.lookup('/file-0')).toBe(2);
      expect(big.fs.readdir('/')).toHaveLength(4000);
    } finally {
      big.close();
    }
  });
});

describe('unlink and rmdir', () => {
  it('unlink removes files and frees their blocks and inode; refuses directories and missing names', () => {
    const { fs } = t;
    fs.create('/f');
    fs.truncate('/f', 200 * 1024);
    const before = fs.statfs();
    fs.unlink('/f');
    const after = fs.statfs();
    expect(after.freeBlocks - before.freeBlocks).toBe(4);
    expect(after.freeInodes - before.freeInodes).toBe(1);
    expect(after.dirtyFreeBlocks).toBe(4);
    fs.mkdir('/d');
    expect(captureError(() => fs.unlink('/d'))).toMatchObject({ code: 'EISDIR', errno: -21, syscall: 'unlink' });
    expect(captureError(() => fs.unlink('/f'))).toMatchObject({ code: 'ENOENT' });
    expect(captureError(() => fs.unlink('/'))).toMatchObject({ code: 'EISDIR' });
  });

  it('rmdir removes empty directories only', () => {
    const { fs } = t;
    fs.mkdir('/d');
    fs.create('/d/f');
    expect(captureError(() => fs.rmdir('/d'))).toMatchObject({ code: 'ENOTEMPTY', errno: -39 });
    expect(captureError(() => fs.rmdir('/d/f'))).toMatchObject({ code: 'ENOTDIR' });
    expect(captureError(() => fs.rmdir('/'))).toMatchObject({ code: 'EBUSY' });
    fs.unlink('/d/f');
    fs.rmdir('/d');
    expect(fs.readdir('/')).toEqual([]);
    expect(fs.stat('/').nlink).toBe(2);
    expect(fs.audit().problems).toEqual([]);
  });
});

describe('rename', () => {
  it('renames within and across directories, moving directories with their contents', () => {
    const { fs } = t;
    fs.mkdir('/a');
    fs.mkdir('/b');
    fs.create('/a/f');
    fs.write('/a/f', new Uint8Array([1, 2, 3]));
    fs.rename('/a/f', '/a/g');
    fs.rename('/a/g', '/b/h');
    expect(fs.readdir('/a')).toEqual([]);
    expect(Array.from(fs.read('/b/h'))).toEqual([1, 2, 3]);
    fs.mkdir('/a/sub');
    fs.create('/a/sub/x');
    fs.rename('/a/sub', '/b/sub2');
    expect(fs.readdir('/b/sub2')).toEqual(['x']);
    expect(fs.stat('/a').nlink).toBe(2);
    expect(fs.stat('/b').nlink).toBe(3);
    expect(fs.lookup('/b/sub2/..')).toBe(fs.lookup('/b'));
    expect(fs.audit().problems).toEqual([]);
  });

  it('replaces an existing file with a file and an empty directory with a directory (POSIX)', () => {
    const { fs } = t;
    fs.create('/src');
    fs.write('/src', new Uint8Array([7]));
    fs.create('/dst');
    fs.truncate('/dst', 300 * 1024);
    const free = fs.statfs().freeBlocks;
    fs.rename('/src', '/dst');
    expect(Array.from(fs.read('/dst'))).toEqual([7]);
    expect(fs.exists('/src')).toBe(false);
    expect(fs.statfs().freeBlocks).toBe(free + 5);
    fs.mkdir('/d1');
    fs.mkdir('/d2');
    fs.rename('/d1', '/d2');
    expect(fs.readdir('/').sort()).toEqual(['d2', 'dst']);
    expect(fs.stat('/').nlink).toBe(3);
    expect(fs.audit().problems).toEqual([]);
  });

  it('refuses the overwrites POSIX refuses, and moving a directory into itself', () => {
    const { fs } = t;
    fs.mkdir('/d');
    fs.mkdir('/full');
    fs.create('/full/x');
    fs.create('/f');
    expect(captureError(() => fs.rename('/d', '/f'))).toMatchObject({ code: 'ENOTDIR', syscall: 'rename' });
    expect(captureError(() => fs.rename('/f', '/d'))).toMatchObject({ code: 'EISDIR' });
    expect(captureError(() => fs.rename('/d', '/full'))).toMatchObject({ code: 'ENOTEMPTY' });
    fs.mkdir('/d/inner');
    expect(captureError(() => fs.rename('/d', '/d/inner/d'))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.rename('/d', '/d/x')).message).toContain('into itself');
    expect(captureError(() => fs.rename('/missing', '/y'))).toMatchObject({ code: 'ENOENT' });
    expect(captureError(() => fs.rename('/f', '/missing/y'))).toMatchObject({ code: 'ENOENT' });
    expect(captureError(() => fs.rename('/', '/y'))).toMatchObject({ code: 'EBUSY' });
    fs.rename('/f', '/f');
    expect(fs.readdir('/').sort()).toEqual(['d', 'f', 'full']);
    expect(fs.audit().problems).toEqual([]);
  });
});

describe('attributes and permissions', () => {
  it('chmod, chown and utimes change the inode; stat shows it', () => {
    const { fs } = t;
    fs.create('/f');
    fs.chmod('/f', 0o600);
    fs.chown('/f', 1234, 5678);
    fs.utimes('/f', 1_000_000_000n, 2_000_000_000n);
    expect(fs.stat('/f')).toMatchObject({ mode: 0o600, uid: 1234, gid: 5678, atimeNs: 1_000_000_000n, mtimeNs: 2_000_000_000n });
    fs.chown('/f', -1, 42);
    expect(fs.stat('/f')).toMatchObject({ uid: 1234, gid: 42 });
    expect(captureError(() => fs.chmod('/f', -1))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.chown('/f', 1.5, 0))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.utimes('/f', -1n, 0n))).toMatchObject({ code: 'EINVAL' });
  });

  it('enforces mode bits against the mount credentials, with EACCES naming the missing permission', () => {
    const { fs, pool } = t;
    fs.mkdir('/private', { mode: 0o700 });
    fs.create('/private/secret');
    fs.mkdir('/shared', { mode: 0o777 });
    fs.create('/shared/readonly', { mode: 0o444 });
    fs.chown('/shared/readonly', 1000, 1000);
    fs.create('/shared/mine', { mode: 0o600 });
    fs.chown('/shared/mine', 1000, 1000);
    fs.unmount();
    // The same pool seen by uid 1000.
    const user = mount(pool, { uid: 1000, gid: 1000, groups: [] });
    try {
      const denied = captureError(() => user.stat('/private/secret'));
      expect(denied).toMatchObject({ code: 'EACCES', errno: -13, syscall: 'stat', path: '/private/secret' });
      expect(denied.message).toContain('uid 1000 lacks search permission');
      expect(captureError(() => user.readdir('/private')).message).toContain('read');
      expect(captureError(() => user.create('/root-owned'))).toMatchObject({ code: 'EACCES' });
      expect(captureError(() => user.write('/shared/readonly', new Uint8Array(1)))).toMatchObject({ code: 'EACCES' });
      expect(user.read('/shared/readonly')).toHaveLength(0);
      user.write('/shared/mine', new Uint8Array([1]));
      user.create('/shared/new');
      expect(user.stat('/shared/new')).toMatchObject({ uid: 1000, gid: 1000 });
      expect(captureError(() => user.chown('/shared/mine', 0, 0))).toMatchObject({ code: 'EPERM' });
      expect(captureError(() => user.chmod('/private', 0o777))).toMatchObject({ code: 'EPERM' });
      user.chmod('/shared/mine', 0o644);
      expect(captureError(() => user.map('/shared/readonly'))).toMatchObject({ code: 'EACCES' });
    } finally {
      user.unmount();
    }
  });
});

describe('unmounted handles', () => {
  it('refuse every operation with a clear error', () => {
    const { fs } = t;
    fs.unmount();
    expect(captureError(() => fs.stat('/'))).toMatchObject({ code: 'EINVAL' });
    expect(captureError(() => fs.create('/x')).message).toContain('was unmounted');
    expect(captureError(() => fs.unmount())).toMatchObject({ code: 'EINVAL' });
  });
});

// Human sizes and the Node-style error shape shared by the JS and native layers.
import { describe, expect, it } from 'vitest';
import { formatSize, GiB, GuestmemfsError, MiB, parseSize, TiB } from '../lib/index';
import { native } from '../lib/native';
import { captureError } from './helpers';

describe('sizes', () => {
  it('parses K/M/G/T suffixes as binary multiples, with or without iB', () => {
    expect(parseSize('8G')).toBe(8 * GiB);
    expect(parseSize('500M')).toBe(500 * MiB);
    expect(parseSize('2MiB')).toBe(2 * MiB);
    expect(parseSize('1t')).toBe(TiB);
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('1.5G')).toBe(1.5 * GiB);
    expect(parseSize(12)).toBe(12);
  });

  it('rejects what is not a size with EINVAL and an example', () => {
    for (const bad of ['', 'G', '8X', '-1G', '1.3', 'eight']) {
      const error = captureError(() => parseSize(bad));
      expect(error).toMatchObject({ code: 'EINVAL', errno: -22 });
    }
    expect(captureError(() => parseSize('8X')).message).toContain('e.g. 8G');
    expect(captureError(() => parseSize(-5)).code).toBe('EINVAL');
  });

  it('formats sizes the way messages quote them', () => {
    expect(formatSize(2 * MiB)).toBe('2 MiB');
    expect(formatSize(GiB)).toBe('1 GiB');
    expect(formatSize(1.5 * GiB)).toBe('1.5 GiB');
    expect(formatSize(4096)).toBe('4 KiB');
    expect(formatSize(100)).toBe('100 B');
  });
});

describe('errors', () => {
  it('carry code, negative errno, syscall and path, and the code leads the message', () => {
    const error = new GuestmemfsError('ENOSPC', 'pool is full: free blocks or grow the pool', { syscall: 'truncate', path: '/vm0' });
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ code: 'ENOSPC', errno: -28, syscall: 'truncate', path: '/vm0', name: 'GuestmemfsError' });
    expect(error.message).toBe('ENOSPC: pool is full: free blocks or grow the pool');
  });

  it('native failures arrive as GuestmemfsError with the kernel errno', () => {
    const error = captureError(() => native.fileOpen('/proc/nonexistent/x', false, false, 0));
    expect(error).toBeInstanceOf(GuestmemfsError);
    expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'open', path: '/proc/nonexistent/x' });
    expect(error.message).toBe("ENOENT: No such file or directory, open '/proc/nonexistent/x'");
  });

  it('withRemedy appends the remedy and keeps the fields', () => {
    const error = new GuestmemfsError('EACCES', 'permission denied', { syscall: 'open', path: '/p' }).withRemedy('run as root');
    expect(error).toMatchObject({
      code: 'EACCES',
      errno: -13,
      syscall: 'open',
      path: '/p',
      message: 'EACCES: permission denied: run as root',
    });
  });

  it('from() rethrows what is not a system error untouched', () => {
    const plain = new TypeError('not a system error');
    expect(() => GuestmemfsError.from(plain)).toThrow(plain);
  });
});

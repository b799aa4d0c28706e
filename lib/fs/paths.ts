// Path and name rules: absolute paths inside the filesystem, names of 1..255 bytes without '/' or NUL, never '.' or '..'.
import { GuestmemfsError } from '../errors';
import { encodeName, NAME_MAX } from './inodes';

export const PATH_MAX = 4096;

/** Splits an absolute path into components, dropping empty ones and '.'; '..' stays for the resolver. */
export function splitPath(path: string, syscall: string): string[] {
  if (typeof path !== 'string') throw new GuestmemfsError('EINVAL', `path must be a string, got ${typeof path}`, { syscall });
  if (!path.startsWith('/')) {
    throw new GuestmemfsError('EINVAL', `path "${path}" must be absolute inside the filesystem (start with /)`, { syscall, path });
  }
  if (path.length > PATH_MAX)
    throw new GuestmemfsError('ENAMETOOLONG', `path is longer than ${PATH_MAX} bytes`, { syscall, path: path.slice(0, 64) });
  if (path.includes('\0')) throw new GuestmemfsError('EINVAL', 'path contains a NUL byte', { syscall, path: path.replace(/\0/g, '\\0') });
  const parts = path.split('/');
  const out: string[] = [];
  for (const part of parts) {
    if (part === '' || part === '.') continue;
    out.push(part);
  }
  return out;
}

/** Encodes a name that is about to be created, refusing what POSIX names cannot be. */
export function encodeNewName(name: string, syscall: string, path: string): Uint8Array {
  if (name === '.' || name === '..') {
    throw new GuestmemfsError('EINVAL', `"${name}" cannot be created: it is reserved`, { syscall, path });
  }
  const bytes = encodeName(name);
  if (bytes.length === 0) throw new GuestmemfsError('EINVAL', 'empty name', { syscall, path });
  if (bytes.length > NAME_MAX) {
    throw new GuestmemfsError('ENAMETOOLONG', `name is ${bytes.length} bytes; at most ${NAME_MAX} are allowed`, { syscall, path });
  }
  return bytes;
}

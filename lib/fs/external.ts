// For processes that use a pool's files without owning its metadata (a second VMM, a device backend, QEMU): pin the
// files in a descriptor they can pass on, and describe them for a VMM that maps a range of the pool by offset.
import { GuestmemfsError } from '../errors';
import type { Extent } from '../pool/mapping';
import { Pin } from '../pool/pins';
import type { Pool } from '../pool/pool';
import { mappableFile } from './data';
import { contextOf } from './filesystem';
import { mount } from './mount';
import { R_OK, W_OK } from './permissions';
import type { MountOptions } from './types';

export interface PinnedFile {
  path: string;
  ino: number;
  generation: number;
  size: number;
  /** Pool byte ranges, in file order. */
  extents: Extent[];
}

/** Tries before giving up on a pool whose owner keeps changing the files being pinned. */
const PIN_ATTEMPTS = 5;

/** Where files of a pool are, from a read-only view, checked as a mapping of them is (a file with blocks, readable and writable). */
export function describeFiles(pool: Pool, paths: readonly string[], options: MountOptions = {}): PinnedFile[] {
  const view = mount(pool, { ...options, readOnly: true });
  try {
    const ctx = contextOf(view);
    return paths.map((path) => {
      const { ino, extents } = mappableFile(ctx, path, R_OK | W_OK, false);
      return { path, ino, generation: ctx.inodes.generation(ino), size: ctx.inodes.size(ino), extents };
    });
  } finally {
    view.unmount();
  }
}

function sameFiles(a: readonly PinnedFile[], b: readonly PinnedFile[]): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Pins files of a pool on one open file description (Pin.fd), for a process that maps them itself. The files are
 * looked up again after the pin is taken: had the owner freed and reused their blocks in between, the pin would hold
 * another file's memory, so it is dropped and taken again.
 */
export function pinFiles(pool: Pool, paths: readonly string[], options: MountOptions = {}): { pin: Pin; files: PinnedFile[] } {
  if (!Array.isArray(paths) || paths.length === 0)
    throw new GuestmemfsError('EINVAL', 'pinFiles needs at least one path', { syscall: 'fcntl' });
  for (let attempt = 0; attempt < PIN_ATTEMPTS; attempt++) {
    const files = describeFiles(pool, paths, options);
    const pin = Pin.take(
      pool,
      files.flatMap((file) => file.extents),
    );
    if (sameFiles(files, describeFiles(pool, paths, options))) return { pin, files };
    pin.release();
  }
  throw new GuestmemfsError('EAGAIN', 'the files kept changing under their owner while they were pinned: try again', {
    syscall: 'fcntl',
    path: pool.label,
  });
}

/** A QEMU memory-backend id for a file: letters, digits, '-' and '_', starting with a letter. */
function backendId(file: PinnedFile, index: number): string {
  const base = file.path.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '');
  return `gmfs${index}${base ? `-${base}` : ''}`;
}

/**
 * QEMU's arguments for guest RAM in a guestmemfs file: a memory-backend-file over the file's one range of the pool
 * (shared, so the memory is the pool's), and the machine's RAM backed by it. A hybrid pool's file that is one run of
 * 1 GiB pages is backed by the 1 GiB-page file (`large`), at its own offset there, for the whole pages it holds.
 */
export function qemuArgs(poolPath: string, file: PinnedFile, index = 0, large?: { from: number; path: string | undefined }): string[] {
  if (file.extents.length !== 1) {
    throw new GuestmemfsError(
      'EINVAL',
      `'${file.path}' is held in ${file.extents.length} extents; QEMU maps one range of the pool: create it with touch --contiguous ` +
        '(create({ contiguous: true })) and truncate it to its size',
      { path: file.path },
    );
  }
  const [extent] = file.extents as [Extent];
  const id = backendId(file, index);
  const inLarge = large !== undefined && extent.offset >= large.from;
  if (inLarge && large.path === undefined) {
    throw new GuestmemfsError('EINVAL', `'${file.path}' is on the pool's 1 GiB pages, in a memfd QEMU cannot open by path`, {
      path: file.path,
    });
  }
  const memPath = inLarge ? large.path! : poolPath;
  const offset = inLarge ? extent.offset - large.from : extent.offset;
  // QEMU sizes a backend in whole pages of its file: 1 GiB pages are held whole, so the size is what the file holds.
  const size = inLarge ? extent.length : file.size;
  return [
    '-object',
    `memory-backend-file,id=${id},mem-path=${memPath},offset=${offset},size=${size},share=on`,
    '-machine',
    `memory-backend=${id}`,
  ];
}

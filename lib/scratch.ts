// Private scratch directories: a fresh directory of mode 0700 with an unguessable name, for files that must live under
// a world-writable directory such as /dev/shm or /tmp, where a predictable name could be planted beforehand.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface ScratchDirectory {
  path: string;
  /** Removes the directory and everything in it. */
  remove(): void;
}

/** mkdtemp(3) under parent: the name is random and the kernel refuses one that exists, so nothing can be planted. */
export function scratchDirectory(parent: string, stem: string): ScratchDirectory {
  const dir = fs.mkdtempSync(path.join(parent, `${stem}-`));
  return { path: dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

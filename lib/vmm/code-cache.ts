// Hands V8's code cache to the exec-mode VMM that replaces this one, in a memfd the new process inherits: the cache
// never has a file name, so no other user can plant a symlink or a file under one, or swap in bytecode.
import * as fs from 'node:fs';
import { native } from '../native';
import type { ExecLauncher } from './exec-protocol';

export interface CodeCacheHandoff {
  /** The memfds to keep open across execve. */
  fds: number[];
  /** What tells the new process where the caches are. */
  env: Record<string, string>;
}

/** Writes each of the launcher's code caches into a fresh memfd (close-on-exec until the exec keeps it). */
export function handOverCodeCache(launcher: ExecLauncher): CodeCacheHandoff {
  const handoff: CodeCacheHandoff = { fds: [], env: {} };
  try {
    for (const slot of Object.values(launcher.codeCaches)) {
      const bytes = slot.create();
      const fd = native.memfdCreate(slot.memfdName, 0);
      handoff.fds.push(fd);
      for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
      handoff.env[slot.fdEnv] = String(fd);
    }
  } catch (error) {
    dropCodeCache(handoff);
    throw error;
  }
  return handoff;
}

/** Closes a handoff no process will read (the update did not happen). */
export function dropCodeCache(handoff: CodeCacheHandoff | undefined): void {
  for (const fd of handoff?.fds ?? []) fs.closeSync(fd);
}

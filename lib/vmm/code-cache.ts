// Hands V8's code cache to the exec-mode VMM that replaces this one, in a memfd the new process inherits: the cache
// never has a file name, so no other user can plant a symlink or a file under one, or swap in bytecode.
import * as fs from 'node:fs';
import { native } from '../native';
import type { ExecLauncher } from './exec-protocol';

export interface CodeCacheHandoff {
  /** The memfd to keep open across execve. */
  fd: number;
  /** What tells the new process where the cache is. */
  env: Record<string, string>;
}

/** Writes the launcher's code cache into a fresh memfd (close-on-exec until the exec keeps it). */
export function handOverCodeCache(launcher: ExecLauncher): CodeCacheHandoff {
  const bytes = launcher.createCodeCache();
  const fd = native.memfdCreate(launcher.codeCacheMemfdName, 0);
  try {
    for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done, done);
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
  return { fd, env: { [launcher.codeCacheFdEnv]: String(fd) } };
}

/** Closes a handoff no process will read (the update did not happen). */
export function dropCodeCache(handoff: CodeCacheHandoff | undefined): void {
  if (handoff) fs.closeSync(handoff.fd);
}

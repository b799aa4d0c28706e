// The exec-mode VMM's entry point: loads the VMM as one bundled script with V8's code cache from the process it
// replaces, so that the new process neither resolves ~25 modules nor compiles the code of the update path (both inside
// the blackout). Without the bundle (sources not built with `npm run build:ts`), it runs the unbundled program.
//
// It needs nothing but Node built-ins, imported plainly (no interop helpers): whatever it runs, every update pays for,
// cold.
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');

const launchedAt = process.hrtime.bigint();
/** Where the previous VMM process left the code cache for this one (read and deleted at start-up). */
const CODE_CACHE_ENV = 'GUESTMEMFS_CODE_CACHE';
const LAUNCHER_KEY = Symbol.for('guestmemfs.execLauncher');

/** What the launcher tells the program it started (see execLauncher() in exec-update.ts). */
export interface ExecLauncher {
  /** This file: what the program must execve to be started the same way. */
  entry: string;
  /** CLOCK_MONOTONIC ns when this process started running JavaScript of its own. */
  launchedAtNs: bigint;
  /** Whether V8 took the code cache the previous process left: 'accepted', 'rejected' or 'none'. */
  codeCache: 'accepted' | 'rejected' | 'none';
  /**
   * Writes the code cache of everything compiled so far (call it after the update path has run, before anything
   * changes V8's flags: a cache made under other flags is rejected) for the next process; returns the environment
   * entries that hand it over.
   */
  saveCodeCache(): Record<string, string>;
}

const bundle = path.join(__dirname, 'exec-update.bundle.js');
if (fs.existsSync(bundle)) {
  const cachePath = process.env[CODE_CACHE_ENV];
  delete process.env[CODE_CACHE_ENV];
  let cachedData: Buffer | undefined;
  if (cachePath) {
    try {
      cachedData = fs.readFileSync(cachePath);
      fs.unlinkSync(cachePath);
    } catch {
      // No cache: the bundle is compiled as it runs, slower but the same.
    }
  }
  // The same wrapper CommonJS uses; the source must be byte-identical between processes for V8 to take the cache.
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${fs.readFileSync(bundle, 'utf8')}\n})`, {
    filename: bundle,
    cachedData,
  });
  const launcher: ExecLauncher = {
    entry: __filename,
    launchedAtNs: launchedAt,
    codeCache: cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'accepted',
    saveCodeCache() {
      // Memory-backed where there is /dev/shm: the next process reads it inside the blackout.
      const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : (process.env.TMPDIR ?? '/tmp');
      const file = path.join(dir, `guestmemfs-code-cache-${process.pid}`);
      fs.writeFileSync(file, script.createCachedData());
      return { [CODE_CACHE_ENV]: file };
    },
  };
  (globalThis as Record<symbol, unknown>)[LAUNCHER_KEY] = launcher;
  const module = { exports: {} };
  // This module's own require serves: the bundle asks only for Node built-ins and the addon, by absolute path (a
  // createRequire() would cost ~2 ms of cold module-path code).
  (script.runInThisContext() as (...args: unknown[]) => void)(module.exports, require, module, bundle, __dirname);
} else {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('./exec-update');
}

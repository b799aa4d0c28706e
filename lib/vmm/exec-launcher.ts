// The exec-mode VMM's entry point: loads the VMM as one bundled script with V8's code cache from the process it
// replaces, so that the new process neither resolves ~25 modules nor compiles the code of the update path (both inside
// the blackout), and, when the previous process left the recipe, resumes the guest before it loads anything else
// (early-resume.ts). Without the bundle (sources not built with `npm run build:ts`), it runs the unbundled program.
//
// It needs nothing but Node built-ins, imported plainly (no interop helpers), and, to resume early, the addon:
// whatever it runs, every update pays for, cold.
/* eslint-disable @typescript-eslint/no-require-imports -- `import x = require()` compiles to a bare require, no helpers */
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');

import type * as EarlyResumeModule from './early-resume';
import type { ExecLauncher } from './exec-protocol';

const launchedAt = process.hrtime.bigint();
/** Carries the number of the memfd in which the previous VMM process left its code cache for this one. */
const CODE_CACHE_FD_ENV = 'GUESTMEMFS_CODE_CACHE_FD';
const CODE_CACHE_MEMFD_NAME = 'guestmemfs-code-cache';

/**
 * Reads and closes the code cache the previous process handed over. Only a memfd of the expected name is read: an fd
 * number in the environment names nothing else this process would trust, and no file path is ever involved.
 */
function takeInheritedCodeCache(): Buffer | undefined {
  const value = process.env[CODE_CACHE_FD_ENV];
  delete process.env[CODE_CACHE_FD_ENV];
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const fd = Number(value);
  try {
    if (fs.readlinkSync(`/proc/self/fd/${fd}`) !== `/memfd:${CODE_CACHE_MEMFD_NAME} (deleted)`) return undefined;
  } catch {
    return undefined;
  }
  try {
    const bytes = Buffer.allocUnsafe(fs.fstatSync(fd).size);
    for (let done = 0; done < bytes.length;) {
      const read = fs.readSync(fd, bytes, done, bytes.length - done, done);
      if (read === 0) return undefined;
      done += read;
    }
    return bytes;
  } catch {
    // No cache: the bundle is compiled as it runs, slower but the same.
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

const bundle = path.join(__dirname, 'exec-update.bundle.js');
if (fs.existsSync(bundle)) {
  // The guest first, the VMM after: a resuming process runs the guest again before it loads the bundle, which is
  // then no longer inside the blackout. Early resume is bundled too (built with the VMM's bundle): one module to load
  // inside the blackout instead of four.
  const earlyResume =
    process.argv[2] === 'resume'
      ? (require('./early-resume.bundle.js') as typeof EarlyResumeModule).resumeEarly(process.env, launchedAt)
      : undefined;
  const cachedData = takeInheritedCodeCache();
  // The same wrapper CommonJS uses; the source must be byte-identical between processes for V8 to take the cache.
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${fs.readFileSync(bundle, 'utf8')}\n})`, {
    filename: bundle,
    cachedData,
  });
  globalThis.guestmemfsExecLauncher = {
    entry: __filename,
    launchedAtNs: launchedAt,
    codeCache: cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'accepted',
    codeCacheFdEnv: CODE_CACHE_FD_ENV,
    codeCacheMemfdName: CODE_CACHE_MEMFD_NAME,
    createCodeCache: () => script.createCachedData(),
    earlyResume,
  } satisfies ExecLauncher;
  const module = { exports: {} };
  // This module's own require serves: the bundle asks only for Node built-ins and the addon, by absolute path (a
  // createRequire() would cost ~2 ms of cold module-path code).
  (script.runInThisContext() as (...args: unknown[]) => void)(module.exports, require, module, bundle, __dirname);
} else {
  require('./exec-update');
}

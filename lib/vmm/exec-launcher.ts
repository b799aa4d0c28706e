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
import type { CodeCacheSlot, ExecLauncher } from './exec-protocol';

const launchedAt = process.hrtime.bigint();
/** Carry the numbers of the memfds in which the previous VMM process left its code caches for this one. */
const CODE_CACHE_FD_ENV = 'GUESTMEMFS_CODE_CACHE_FD';
const CODE_CACHE_MEMFD_NAME = 'guestmemfs-code-cache';
const EARLY_CODE_CACHE_FD_ENV = 'GUESTMEMFS_EARLY_RESUME_CODE_CACHE_FD';
const EARLY_CODE_CACHE_MEMFD_NAME = 'guestmemfs-early-resume-code-cache';

/**
 * Reads and closes a code cache the previous process handed over. Only a memfd of the expected name is read: an fd
 * number in the environment names nothing else this process would trust, and no file path is ever involved.
 */
function takeInheritedCodeCache(fdEnv: string, memfdName: string): Buffer | undefined {
  const value = process.env[fdEnv];
  delete process.env[fdEnv];
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const fd = Number(value);
  try {
    if (fs.readlinkSync(`/proc/self/fd/${fd}`) !== `/memfd:${memfdName} (deleted)`) return undefined;
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

/**
 * Compiles a bundle with the code cache its previous process left, and the slot that hands the next cache on. The
 * wrapper is the one CommonJS uses; the source must be byte-identical between processes for V8 to take the cache.
 */
function compileBundle(file: string, fdEnv: string, memfdName: string): { script: vm.Script; slot: CodeCacheSlot } {
  const cachedData = takeInheritedCodeCache(fdEnv, memfdName);
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${fs.readFileSync(file, 'utf8')}\n})`, {
    filename: file,
    cachedData,
  });
  const taken = cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'accepted';
  return { script, slot: { taken, fdEnv, memfdName, create: () => script.createCachedData() } };
}

/**
 * Runs a compiled bundle as a CommonJS module and returns its exports. This module's own require serves: a bundle asks
 * only for Node built-ins and the addon, by absolute path (a createRequire() would cost ~2 ms of cold module-path code).
 */
function runBundle(script: vm.Script, file: string): unknown {
  const module = { exports: {} };
  (script.runInThisContext() as (...args: unknown[]) => void)(module.exports, require, module, file, __dirname);
  return module.exports;
}

const bundle = path.join(__dirname, 'exec-update.bundle.js');
if (fs.existsSync(bundle)) {
  // The guest first, the VMM after: a resuming process runs the guest again before it loads the bundle, which is
  // then no longer inside the blackout. Early resume is bundled too (built with the VMM's bundle): one module to load
  // inside the blackout instead of four, compiled from its cache. A booting VMM compiles it without running it, so
  // that the first update's process has a cache of it too.
  const earlyBundle = path.join(__dirname, 'early-resume.bundle.js');
  const early = compileBundle(earlyBundle, EARLY_CODE_CACHE_FD_ENV, EARLY_CODE_CACHE_MEMFD_NAME);
  const earlyModule = runBundle(early.script, earlyBundle) as typeof EarlyResumeModule;
  const earlyResume = process.argv[2] === 'resume' ? earlyModule.resumeEarly(process.env, launchedAt) : undefined;
  const main = compileBundle(bundle, CODE_CACHE_FD_ENV, CODE_CACHE_MEMFD_NAME);
  globalThis.guestmemfsExecLauncher = {
    entry: __filename,
    launchedAtNs: launchedAt,
    codeCaches: { bundle: main.slot, earlyResume: early.slot },
    earlyResume,
  } satisfies ExecLauncher;
  runBundle(main.script, bundle);
} else {
  require('./exec-update');
}

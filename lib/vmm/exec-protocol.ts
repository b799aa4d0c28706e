// What the exec-mode launcher and the VMM program it starts tell each other (types only, so that the launcher, whose
// start-up every update pays for, loads no module of ours).
import type { NativeMapResult } from '../native';
import type { MappingRecipe } from '../pool/remap';

/** A mapping the launcher made, and how (so that the pool can adopt it). */
export interface LauncherMapping {
  made: NativeMapResult;
  recipe: MappingRecipe;
}

/**
 * The guest the launcher resumed before loading the VMM (early-resume.ts): its VM, vCPUs (running from their saved
 * slots) and mappings, for the VMM to adopt; or why it did not, and the VMM resumes the guest itself.
 */
export type EarlyResume =
  | {
      kvm: number;
      vm: number;
      vcpus: number[];
      ram: LauncherMapping;
      state: LauncherMapping;
      /** One per vCPU: settles as KvmMachine.run()'s parts do. */
      runs: Promise<string>[];
      /** CLOCK_MONOTONIC ns: the launcher's first line, the addon loaded, both files mapped, the VM made. */
      stampsNs: { launched: bigint; addon: bigint; mapped: bigint; vm: bigint };
    }
  | { error: string };

/** A script the launcher compiled with V8's code cache from the previous process, and how to hand one on. */
export interface CodeCacheSlot {
  /** Whether V8 took the code cache the previous process left: 'accepted', 'rejected' or 'none'. */
  taken: 'accepted' | 'rejected' | 'none';
  /** The environment variable that carries the number of the inherited memfd holding the next code cache. */
  fdEnv: string;
  /** The memfd name the launcher accepts this cache from (anything else inherited is left alone). */
  memfdName: string;
  /**
   * V8's code cache of everything compiled so far (call it after the update path has run, before anything changes
   * V8's flags: a cache made under other flags is rejected).
   */
  create(): Buffer;
}

/** What the launcher tells the program it started. */
export interface ExecLauncher {
  /** The launcher's file: what the program must execve to be started the same way. */
  entry: string;
  /** CLOCK_MONOTONIC ns when this process started running JavaScript of its own. */
  launchedAtNs: bigint;
  /** The VMM's bundle, and the early-resume bundle (which runs inside the blackout: its compile would too). */
  codeCaches: { bundle: CodeCacheSlot; earlyResume: CodeCacheSlot };
  /** The guest, if the previous process left what the launcher needs to resume it before the VMM loaded. */
  earlyResume: EarlyResume | undefined;
}

declare global {
  /** Set by exec-launcher.js before it runs the bundled program. */
  var guestmemfsExecLauncher: ExecLauncher | undefined;
}

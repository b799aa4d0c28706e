// What the exec-mode launcher and the VMM program it starts tell each other (types only, so that the launcher, whose
// start-up every update pays for, loads no module of ours).

/** What the launcher tells the program it started. */
export interface ExecLauncher {
  /** The launcher's file: what the program must execve to be started the same way. */
  entry: string;
  /** CLOCK_MONOTONIC ns when this process started running JavaScript of its own. */
  launchedAtNs: bigint;
  /** Whether V8 took the code cache the previous process left: 'accepted', 'rejected' or 'none'. */
  codeCache: 'accepted' | 'rejected' | 'none';
  /** The environment variable that carries the number of the inherited memfd holding the next code cache. */
  codeCacheFdEnv: string;
  /** The memfd name the launcher accepts a code cache from (anything else inherited is left alone). */
  codeCacheMemfdName: string;
  /**
   * V8's code cache of everything compiled so far (call it after the update path has run, before anything changes
   * V8's flags: a cache made under other flags is rejected).
   */
  createCodeCache(): Buffer;
}

declare global {
  /** Set by exec-launcher.js before it runs the bundled program. */
  var guestmemfsExecLauncher: ExecLauncher | undefined;
}

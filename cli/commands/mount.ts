// guestmemfs mount: own a pool as a long-lived service and serve its metadata to VMMs, device backends and the CLI.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { mount } from '../../lib/fs/mount';
import { native, packageRoot } from '../../lib/native';
import { type ExecHolder, takeExecHolder } from '../../lib/process';
import { defaultSocketPath, poolIdentityOf, prepareRuntimeDir, runtimeDir } from '../../lib/service/discovery';
import { type InheritedNotifier, NOTIFIERS_ENV } from '../../lib/service/notifiers';
import { HANDOVERS_ENV, LISTEN_FD_ENV, MountService, UPDATE_STARTED_ENV } from '../../lib/service/server';
import { command, type Common, print } from '../common';
import { openPool } from '../pools';

/** Tells systemd (Type=notify) where the service stands; nothing happens outside systemd. */
function notifySystemd(state: string): void {
  const socket = process.env.NOTIFY_SOCKET;
  if (socket) native.datagramSend(socket, state);
}

/** Removes a socket file left by a service that died (this process holds the pool now, so none serves it). */
function removeStaleSocket(socketPath: string): void {
  const stats = fs.lstatSync(socketPath, { throwIfNoEntry: false });
  if (!stats) return;
  if (!stats.isSocket() && !stats.isSymbolicLink()) {
    throw new GuestmemfsError('EEXIST', `${socketPath} exists and is not a socket: choose another --socket`, {
      syscall: 'bind',
      path: socketPath,
    });
  }
  fs.rmSync(socketPath);
}

/**
 * What a live update execs: the mount command alone (cli/mount-main.ts), bundled into one file by build:bundle, or
 * the full CLI when the bundle is missing. Looked up from the package root: this code runs from either.
 */
function updateEntry(): string {
  const bundle = path.join(packageRoot(), 'dist', 'cli', 'mount-main.bundle.js');
  return fs.existsSync(bundle) ? bundle : process.argv[1]!;
}

/** The live update's hand-over from the environment, removed from it so that it reaches no child. */
function takeUpdateEnvironment():
  { listenFd: number; startedNs: bigint; handovers: number; notifiers: InheritedNotifier[]; holder: ExecHolder | undefined } | undefined {
  const listenFd = process.env[LISTEN_FD_ENV];
  if (listenFd === undefined) return undefined;
  const taken = {
    listenFd: Number(listenFd),
    startedNs: BigInt(process.env[UPDATE_STARTED_ENV] ?? process.hrtime.bigint()),
    handovers: Number(process.env[HANDOVERS_ENV] ?? 1),
    notifiers: JSON.parse(process.env[NOTIFIERS_ENV] ?? '[]') as InheritedNotifier[],
    // The previous image's address space, torn down once this one serves (liveUpdate defers it).
    holder: takeExecHolder(),
  };
  delete process.env[NOTIFIERS_ENV];
  delete process.env[LISTEN_FD_ENV];
  delete process.env[UPDATE_STARTED_ENV];
  delete process.env[HANDOVERS_ENV];
  return taken;
}

export function register(program: Command): void {
  command(
    program,
    'mount',
    'serve a pool: own its metadata and serve it to VMMs and the CLI on a UNIX socket, until SIGTERM',
    'guestmemfs mount /dev/hugepages/pool --group kvm',
  )
    .argument('<pool>')
    .option('--socket <path>', 'listen here (default: the runtime directory, where the CLI and clients look)')
    .option('--mode <octal>', 'socket mode: who may connect (write permission)', '660')
    .option('--group <gid>', 'socket group (its members may connect with mode 660)')
    .action(async (spec: string, options: Common & { socket?: string; mode: string; group?: string }) => {
      if (!/^[0-7]{1,3}$/.test(options.mode)) throw new GuestmemfsError('EINVAL', `mode "${options.mode}" must be octal, e.g. 660`);
      if (options.group !== undefined && !/^\d+$/.test(options.group))
        throw new GuestmemfsError('EINVAL', `group "${options.group}" must be a number`);
      // A live update of the service hands over the listening socket, and when the old one stopped serving.
      const inherited = takeUpdateEnvironment();
      const pool = openPool(spec);
      const gfs = mount(pool);
      const dir = runtimeDir();
      prepareRuntimeDir(dir);
      const link = defaultSocketPath(poolIdentityOf(pool));
      const socket = options.socket ?? link;
      if (!inherited) removeStaleSocket(socket);
      let requested: (reason: string) => void = () => undefined;
      const next = () => new Promise<string>((resolve) => (requested = resolve));
      let signal = next();
      const service = await MountService.start(gfs, {
        socket,
        mode: Number.parseInt(options.mode, 8),
        gid: options.group === undefined ? undefined : Number(options.group),
        listenFd: inherited?.listenFd,
        updateStartedNs: inherited?.startedNs,
        handovers: inherited?.handovers,
        notifiers: inherited?.notifiers,
        onUpdateRequest: () => requested('update'),
      });
      void inherited?.holder?.release();
      // The default place names the pool; a socket elsewhere is linked from there, so that clients find it.
      if (socket !== link && !inherited) {
        removeStaleSocket(link);
        fs.symlinkSync(socket, link);
      }
      for (const name of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(name, () => requested(name));
      const ready = {
        event: 'ready',
        pool: spec,
        socket,
        pid: process.pid,
        uuid: gfs.uuid,
        recovered: gfs.recovery !== undefined,
        restored: gfs.restored !== undefined,
        pauseMs: service.updatePauseMs ?? null,
      };
      const pause = service.updatePauseMs === undefined ? '' : `, live-updated: metadata paused ${service.updatePauseMs.toFixed(2)} ms`;
      print(options, ready, () => `guestmemfs: serving ${spec} on ${socket} (pid ${process.pid})${pause}`);
      notifySystemd(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${spec} on ${socket}`);
      // SIGHUP (systemctl reload) or POST /v1/update: the same program again, over the same pool and socket.
      for (let reason = await signal; ; reason = await signal) {
        if (reason !== 'SIGHUP' && reason !== 'update') {
          signal = Promise.resolve(reason);
          break;
        }
        signal = next();
        notifySystemd('RELOADING=1');
        try {
          await service.liveUpdate([
            process.execPath,
            ...process.execArgv,
            updateEntry(),
            ...process.argv.slice(process.argv.indexOf('mount')),
          ]);
        } catch (error) {
          process.stderr.write(`guestmemfs mount: live update failed, serving on: ${(error as Error).message}\n`);
          notifySystemd('READY=1');
        }
      }
      const stopped = await signal;
      notifySystemd('STOPPING=1');
      await service.close();
      if (socket !== link && fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.rmSync(link);
      gfs.unmount();
      pool.close();
      print(options, { event: 'unmounted', pool: spec, signal: stopped }, () => `guestmemfs: ${stopped}: unmounted ${spec}`);
    });
}

// guestmemfs mount: own a pool as a long-lived service and serve its metadata to VMMs, device backends and the CLI.
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { GuestmemfsError } from '../../lib/errors';
import { mount } from '../../lib/fs/mount';
import { native } from '../../lib/native';
import { defaultSocketPath, poolIdentityOf, prepareRuntimeDir, runtimeDir } from '../../lib/service/discovery';
import { MountService } from '../../lib/service/server';
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
      const pool = openPool(spec);
      const gfs = mount(pool);
      const dir = runtimeDir();
      prepareRuntimeDir(dir);
      const link = defaultSocketPath(poolIdentityOf(pool));
      const socket = options.socket ?? link;
      removeStaleSocket(socket);
      const service = await MountService.start(gfs, {
        socket,
        mode: Number.parseInt(options.mode, 8),
        gid: options.group === undefined ? undefined : Number(options.group),
      });
      // The default place names the pool; a socket elsewhere is linked from there, so that clients find it.
      if (socket !== link) {
        removeStaleSocket(link);
        fs.symlinkSync(socket, link);
      }
      const stop = new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      const ready = {
        event: 'ready',
        pool: spec,
        socket,
        pid: process.pid,
        uuid: gfs.uuid,
        recovered: gfs.recovery !== undefined,
        restored: gfs.restored !== undefined,
      };
      print(options, ready, () => `guestmemfs: serving ${spec} on ${socket} (pid ${process.pid})`);
      notifySystemd(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${spec} on ${socket}`);
      const signal = await stop;
      notifySystemd('STOPPING=1');
      await service.close();
      if (socket !== link && fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.rmSync(link);
      gfs.unmount();
      pool.close();
      print(options, { event: 'unmounted', pool: spec, signal }, () => `guestmemfs: ${signal}: unmounted ${spec}`);
    });
}

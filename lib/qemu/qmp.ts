// A QMP client (QEMU's JSON machine protocol on a UNIX socket): the capabilities handshake, commands answered in
// order, and the events QEMU sends in between, waited for by name.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { GuestmemfsError } from '../errors';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  command: string;
}

/** What query-migrate reports of a finished migration (the parts used here). */
export interface MigrationReport {
  status: string;
  /** ms the guest was stopped, by QEMU's account. */
  downtime: number;
  'total-time': number;
  ram: { total: number; transferred: number };
}

/** Resolves once `file` exists: watched through its directory, so the wait ends on the kernel's event. */
export async function fileCreated(file: string): Promise<void> {
  const watcher = fs.watch(path.dirname(file));
  try {
    const appeared = new Promise<void>((resolve) => watcher.on('change', () => fs.existsSync(file) && resolve()));
    if (!fs.existsSync(file)) await appeared;
  } finally {
    watcher.close();
  }
}

/** Bounds the retries of a refused migration connection, should the successor never listen. */
const MIGRATE_ATTEMPTS = 10_000;

export class Qmp {
  readonly #socket: net.Socket;
  readonly #pending: Pending[] = [];
  readonly #events: QmpEvent[] = [];
  readonly #eventWaiters: Array<{ name: string; resolve: (event: QmpEvent) => void }> = [];
  #buffer = '';
  #closed: Error | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#receive(chunk));
    socket.on('close', () => this.#fail(new GuestmemfsError('ECONNRESET', 'QMP connection closed by QEMU', { syscall: 'read' })));
    socket.on('error', (error) => this.#fail(error));
  }

  /** Connects to QEMU's -qmp unix:PATH,server=on socket and negotiates capabilities. */
  static async connect(path: string): Promise<Qmp> {
    const socket = net.createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const qmp = new Qmp(socket);
    // The greeting counts as the answer to a first, implicit request.
    await new Promise((resolve, reject) => qmp.#pending.push({ resolve, reject, command: 'greeting' }));
    await qmp.execute('qmp_capabilities');
    return qmp;
  }

  /**
   * Connects once QEMU serves the socket (`-qmp unix:PATH,server=on,wait=off`), with migration events on. The socket
   * file's creation is watched for; QEMU binds it a moment before it listens, so a refused connection is tried again.
   */
  static async whenServed(socketPath: string): Promise<Qmp> {
    await fileCreated(socketPath);
    for (;;) {
      try {
        const qmp = await Qmp.connect(socketPath);
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
        return qmp;
      } catch (error) {
        if ((error as { code?: string }).code !== 'ECONNREFUSED') throw error;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * Starts a migration over `channels`, forgetting earlier MIGRATION events. A cpr-transfer successor binds its cpr
   * socket a moment before it listens, and QEMU 10.0 takes no pre-bound listening fd for that channel; so, as with the
   * QMP socket, a refused connection (a failed migration the source recovers from) is tried again.
   */
  async migrate(channels: readonly unknown[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.discard('MIGRATION');
      try {
        await this.execute('migrate', { channels });
        return;
      } catch (error) {
        if (!/Connection refused/.test((error as Error).message) || attempt >= MIGRATE_ATTEMPTS) throw error;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * Waits for the migration just started to end (MIGRATION events: discard() older ones first) and returns QEMU's
   * account of it; rejects if it failed.
   */
  async migrationEnd(): Promise<MigrationReport> {
    for (;;) {
      const { data } = await this.event('MIGRATION');
      if (data?.status === 'failed') throw new GuestmemfsError('EIO', 'QEMU reports the migration failed', { syscall: 'qmp' });
      if (data?.status === 'completed') return this.execute<MigrationReport>('query-migrate');
    }
  }

  /** Runs a command; resolves with its `return`, rejects with QEMU's error class and description. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ resolve: resolve as (value: unknown) => void, reject, command });
      this.#socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /** The next event of this name (one already received and not yet waited for counts). */
  event(name: string): Promise<QmpEvent> {
    const index = this.#events.findIndex((event) => event.event === name);
    if (index >= 0) return Promise.resolve(this.#events.splice(index, 1)[0]!);
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve) => this.#eventWaiters.push({ name, resolve }));
  }

  /** Forgets events of this name received so far (those of an earlier migration, say, before waiting on a new one). */
  discard(name: string): void {
    for (let index = this.#events.length - 1; index >= 0; index--) if (this.#events[index]!.event === name) this.#events.splice(index, 1);
  }

  close(): void {
    this.#socket.destroy();
  }

  #receive(chunk: string): void {
    this.#buffer += chunk;
    let newline: number;
    while ((newline = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, newline).trim();
      this.#buffer = this.#buffer.slice(newline + 1);
      if (line) this.#message(JSON.parse(line) as Record<string, unknown>);
    }
  }

  #message(message: Record<string, unknown>): void {
    if (typeof message.event === 'string') {
      const event = message as unknown as QmpEvent;
      const waiter = this.#eventWaiters.findIndex((candidate) => candidate.name === event.event);
      if (waiter >= 0) this.#eventWaiters.splice(waiter, 1)[0]!.resolve(event);
      else this.#events.push(event);
      return;
    }
    const pending = this.#pending.shift();
    if (!pending) return;
    if ('QMP' in message) return pending.resolve(message.QMP);
    if ('error' in message) {
      const error = message.error as { class: string; desc: string };
      return pending.reject(
        new GuestmemfsError('EIO', `QEMU refused ${pending.command}: ${error.class}: ${error.desc}`, { syscall: 'qmp' }),
      );
    }
    pending.resolve(message.return);
  }

  #fail(error: Error): void {
    this.#closed ??= error;
    for (const pending of this.#pending.splice(0)) pending.reject(error);
  }
}

// A consumer of a file's memory in a client process: its registration with the mount service on a connection of its
// own (see notifiers.ts for the protocol), invalidations answered in order once the consumer has let go, and get_pfn.
import * as net from 'node:net';
import { GuestmemfsError } from '../errors';
import type { PageFrame } from '../fs/memfile';
import { errorFromBody } from './codec';
import { NOTIFIER_PROTOCOL, NOTIFIER_ROUTE } from './notifiers';
import { transportError } from './transport';

export interface RemoteConsumer {
  /**
   * [start, end) of the file is about to go. The service waits until this returns (or its promise settles) before the
   * change goes ahead; the consumer must have let go of the range by then.
   */
  invalidate(start: number, end: number): void | Promise<void>;
  /** The registration ended without unregister(): the service closed it, or the file went (told by invalidate first). */
  ended?(): void;
}

/** Bytes of the upgrade's answer read at most before its blank line. */
const MAX_HEAD_BYTES = 16 * 1024;

interface Registered {
  id: number;
  ino: number;
  flags: number;
}

export class RemoteNotifier {
  readonly path: string;
  readonly ino: number;
  readonly flags: number;
  /** The service's id for this registration; a new one after each of the service's live updates. */
  id: number;
  readonly #socket: net.Socket;
  readonly #consumer: RemoteConsumer;
  readonly #pending = new Map<number, { resolve: (frame: PageFrame) => void; reject: (error: Error) => void }>();
  #nextTag = 1;
  #chain: Promise<void> = Promise.resolve();
  #unregistered = false;
  /** Resolves when the registration has ended, for whatever reason. */
  readonly ended: Promise<void>;

  private constructor(socket: net.Socket, path: string, consumer: RemoteConsumer, registered: Registered) {
    this.#socket = socket;
    this.path = path;
    this.#consumer = consumer;
    this.id = registered.id;
    this.ino = registered.ino;
    this.flags = registered.flags;
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => {
      for (const { reject } of this.#pending.values()) reject(new GuestmemfsError('ENOTCONN', `notifier on '${path}' ended`));
      this.#pending.clear();
      if (!this.#unregistered) this.#consumer.ended?.();
    });
  }

  /** Connects, registers, and resolves once the service has answered "registered" (or rejects with its error). */
  static register(socketPath: string, path: string, consumer: RemoteConsumer, flags: number, timeoutMs: number): Promise<RemoteNotifier> {
    if (typeof consumer?.invalidate !== 'function') throw new TypeError('a notifier consumer needs an invalidate(start, end) function');
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      const timer = setTimeout(
        () => fail(new GuestmemfsError('ETIMEDOUT', `no answer to the notifier registration within ${timeoutMs} ms`)),
        timeoutMs,
      );
      let notifier: RemoteNotifier | undefined;
      let buffered = Buffer.alloc(0);
      let upgraded = false;
      const fail = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.on('error', (error: NodeJS.ErrnoException) => {
        if (!notifier) fail(transportError(socketPath, error));
      });
      socket.once('close', () => {
        if (!notifier)
          fail(new GuestmemfsError('EPROTO', 'the service closed the notifier connection before registering it', { path: socketPath }));
      });
      socket.write(
        `GET ${NOTIFIER_ROUTE}?${new URLSearchParams({ path, flags: String(flags) }).toString()} HTTP/1.1\r\nHost: guestmemfs\r\n` +
          `Connection: Upgrade\r\nUpgrade: ${NOTIFIER_PROTOCOL}\r\n\r\n`,
      );
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (!upgraded) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) {
            if (buffered.length > MAX_HEAD_BYTES) fail(new GuestmemfsError('EPROTO', 'the service sent an oversized answer'));
            return;
          }
          const head = buffered.subarray(0, end).toString('latin1');
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
          if (status !== 101) {
            const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
            if (buffered.length < end + 4 + length) return;
            const body = JSON.parse(buffered.subarray(end + 4, end + 4 + length).toString('utf8')) as Record<string, unknown>;
            fail(errorFromBody(body, 'notifier', `HTTP ${status}`));
            return;
          }
          upgraded = true;
          buffered = buffered.subarray(end + 4);
        }
        for (let newline = buffered.indexOf(0x0a); newline >= 0; newline = buffered.indexOf(0x0a)) {
          const message = JSON.parse(buffered.subarray(0, newline).toString('utf8')) as Record<string, unknown>;
          buffered = buffered.subarray(newline + 1);
          if (!notifier) {
            if (message.event !== 'registered')
              return fail(new GuestmemfsError('EPROTO', `expected "registered", got ${String(message.event)}`));
            clearTimeout(timer);
            notifier = new RemoteNotifier(socket, path, consumer, message as unknown as Registered);
            resolve(notifier);
            continue;
          }
          notifier.#message(message);
        }
      });
    });
  }

  /** The frame behind byte `offset` of the file, as the service's page map of the pool shows it. */
  getPfn(offset: number): Promise<PageFrame> {
    if (this.#socket.destroyed)
      return Promise.reject(new GuestmemfsError('ENOTCONN', `notifier on '${this.path}' has ended`, { syscall: 'get_pfn' }));
    const tag = this.#nextTag++;
    return new Promise((resolve, reject) => {
      this.#pending.set(tag, { resolve, reject });
      this.#socket.write(`${JSON.stringify({ getPfn: offset, tag })}\n`);
    });
  }

  /** Ends the registration: the service stops telling this consumer anything. */
  unregister(): void {
    this.#unregistered = true;
    this.#socket.destroy();
  }

  #message(message: Record<string, unknown>): void {
    switch (message.event) {
      case 'invalidate': {
        const { seq, start, end } = message as { seq: number; start: number; end: number };
        // In order, one at a time: an acknowledgement covers every invalidation before it.
        this.#chain = this.#chain
          .then(() => this.#consumer.invalidate(start, end))
          .catch((error: Error) => process.emitWarning(`notifier consumer of '${this.path}' failed in invalidate: ${error.message}`))
          .then(() => {
            if (!this.#socket.destroyed) this.#socket.write(`${JSON.stringify({ ack: seq })}\n`);
          });
        return;
      }
      case 'ended':
        return; // the connection closes next
      case 'registered':
        // Registered again by the service's successor after its live update.
        this.id = message.id as number;
        return;
      case 'pfn':
      case 'error': {
        const waiter = this.#pending.get(message.tag as number);
        this.#pending.delete(message.tag as number);
        if (message.event === 'pfn') waiter?.resolve({ pfn: BigInt(message.pfn as string), order: message.order as number });
        else waiter?.reject(errorFromBody(message, 'get_pfn', 'get_pfn failed'));
        return;
      }
      default:
        this.#socket.destroy();
    }
  }
}

// Consumers of a file's memory in other processes: each registers with GET /v1/notifier upgraded to a stream of JSON
// lines on its own connection. The service tells it invalidate(start, end) and waits for its acknowledgement before
// the range goes; it answers get_pfn; the registration ends when the connection closes. Across the service's own
// live update the connections are kept (inherited by the new program) and registered again, so no consumer misses
// an invalidation.
//
//   client: GET /v1/notifier?path=P&flags=F  (Connection: Upgrade, Upgrade: guestmemfs-notifier)
//   service: 101, then {"event":"registered","id":N,"ino":I,"flags":F}
//   service: {"event":"invalidate","seq":S,"start":A,"end":B}   client: {"ack":S}
//   service: {"event":"ended"} and close, once the consumer acknowledged that the whole (unlinked) file goes
//   client: {"getPfn":OFFSET,"tag":T}                             service: {"event":"pfn","tag":T,"pfn":"…","order":O}
//                                                                 or {"event":"error","tag":T,…Node's error shape}
import type * as http from 'node:http';
import * as net from 'node:net';
import { GuestmemfsError } from '../errors';
import type { Filesystem } from '../fs/filesystem';
import type { MemfileNotifier } from '../fs/memfile';
import type { Credentials } from '../fs/permissions';
import { native } from '../native';
import { API_PREFIX } from './api';
import { asServiceError, errorBody, STATUS } from './codec';

export const NOTIFIER_ROUTE = `${API_PREFIX}/notifier`;
export const NOTIFIER_PROTOCOL = 'guestmemfs-notifier';
/** Inherited notifier connections, for the service a live update starts: JSON [{fd, path, ino, flags}]. */
export const NOTIFIERS_ENV = 'GUESTMEMFS_NOTIFIERS';
/** Bytes a consumer may send without a newline before its connection is closed. */
const MAX_LINE_BYTES = 4096;

interface Stream {
  socket: net.Socket;
  notifier: MemfileNotifier;
  path: string;
  ino: number;
}

/** What one kept connection carries across the service's live update. */
export interface InheritedNotifier {
  fd: number;
  path: string;
  ino: number;
  flags: number;
  /** The sequence number the next invalidation carries: an acknowledgement still in flight must not match a new one. */
  nextSeq: number;
}

export class NotifierStreams {
  readonly #fs: Filesystem;
  readonly #streams = new Set<Stream>();

  constructor(filesystem: Filesystem) {
    this.#fs = filesystem;
  }

  get size(): number {
    return this.#streams.size;
  }

  /**
   * An upgrade request for NOTIFIER_ROUTE, from a connection whose kernel credentials are `credentials`. The stream
   * moves to a socket of its own, out of the HTTP server's connections: those are drained for a live update, and a
   * consumer's stream must outlive that.
   */
  accept(request: http.IncomingMessage, upgraded: net.Socket, head: Buffer, credentials: Credentials | undefined): void {
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd: native.fdDuplicate(socketFd(upgraded)), readable: true, writable: true });
    } catch {
      upgraded.destroy();
      return;
    }
    upgraded.destroy();
    try {
      if (!credentials) throw new GuestmemfsError('EACCES', 'connection has no kernel credentials', { syscall: 'notifier' });
      if (request.headers.upgrade?.toLowerCase() !== NOTIFIER_PROTOCOL) {
        throw new GuestmemfsError('EINVAL', `notifier needs "Upgrade: ${NOTIFIER_PROTOCOL}"`, { syscall: 'notifier' });
      }
      const query = new URLSearchParams((request.url ?? '').split('?')[1] ?? '');
      const path = query.get('path') ?? '';
      const flags = Number(query.get('flags') ?? '0');
      if (!path.startsWith('/')) throw new GuestmemfsError('EINVAL', 'notifier needs an absolute path= parameter', { syscall: 'notifier' });
      const stream = this.#register(socket, path, flags, credentials, 1, head);
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${NOTIFIER_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n`);
      this.#announce(stream);
    } catch (error) {
      const failure = asServiceError(error);
      const body = JSON.stringify(errorBody(failure));
      socket.end(
        `HTTP/1.1 ${STATUS[failure.code] ?? 500} Refused\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
  }

  /** Takes the connections a previous service kept for this one (see keptForUpdate), registering each again. */
  adopt(inherited: readonly InheritedNotifier[]): void {
    for (const kept of inherited) {
      const socket = new net.Socket({ fd: kept.fd, readable: true, writable: true });
      try {
        const [, uid, gid, ...groups] = native.peerCredentials(kept.fd);
        // The same file, or nothing: a name that now names another file must not pass for the consumer's.
        if (this.#fs.stat(kept.path).ino !== kept.ino) throw new GuestmemfsError('ESTALE', `${kept.path} is another file now`);
        const credentials = { uid: uid!, gid: gid!, groups };
        this.#announce(this.#register(socket, kept.path, kept.flags, credentials, kept.nextSeq, Buffer.alloc(0)), true);
      } catch {
        socket.destroy();
      }
    }
  }

  /** The connections to keep across the service's execve, and their description for the new program. */
  keptForUpdate(): { fds: number[]; env: string } {
    const kept: InheritedNotifier[] = [];
    for (const stream of this.#streams) {
      if (stream.socket.destroyed) continue;
      kept.push({
        fd: native.fdDuplicate(socketFd(stream.socket)),
        path: stream.path,
        ino: stream.ino,
        flags: stream.notifier.flags,
        nextSeq: stream.notifier.lastSeq + 1,
      });
    }
    return { fds: kept.map((entry) => entry.fd), env: JSON.stringify(kept) };
  }

  /** Ends every registration (the service stops). */
  closeAll(): void {
    for (const stream of [...this.#streams]) stream.socket.destroy();
  }

  #register(socket: net.Socket, path: string, flags: number, credentials: Credentials, firstSeq: number, head: Buffer): Stream {
    const [pid] = native.peerCredentials(socketFd(socket));
    const stream = { socket, path } as Stream;
    stream.notifier = this.#fs.actingAs(credentials, () =>
      this.#fs.registerNotifier(
        path,
        {
          remote: true,
          firstSeq,
          description: `consumer pid ${pid} (uid ${credentials.uid})`,
          invalidate: (start, end) => this.#send(stream, { event: 'invalidate', seq: stream.notifier.lastSeq, start, end }),
        },
        flags,
      ),
    );
    stream.ino = this.#fs.stat(path).ino;
    this.#streams.add(stream);
    socket.once('close', () => this.#ended(stream));
    socket.on('error', () => socket.destroy());
    let pending = head.toString('utf8');
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('utf8');
      for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        this.#message(stream, line);
      }
      if (pending.length > MAX_LINE_BYTES) socket.destroy();
    });
    return stream;
  }

  #announce(stream: Stream, readopted = false): void {
    this.#send(stream, { event: 'registered', id: stream.notifier.id, ino: stream.ino, flags: stream.notifier.flags, readopted });
  }

  #message(stream: Stream, line: string): void {
    let message: { ack?: unknown; getPfn?: unknown; tag?: unknown };
    try {
      message = JSON.parse(line) as typeof message;
    } catch {
      stream.socket.destroy();
      return;
    }
    if (Number.isSafeInteger(message.ack)) {
      if (stream.notifier.acknowledge(message.ack as number)) {
        // It has let go of the whole file: the unlinked file's release waited for just this.
        stream.notifier.unregister();
        this.#fs.reclaim();
        this.#send(stream, { event: 'ended', reason: 'the file was released' });
        stream.socket.end();
      }
      return;
    }
    if (message.getPfn !== undefined) {
      try {
        const frame = stream.notifier.getPfn(message.getPfn as number);
        this.#send(stream, { event: 'pfn', tag: message.tag, pfn: frame.pfn.toString(), order: frame.order });
      } catch (error) {
        this.#send(stream, { event: 'error', tag: message.tag, ...errorBody(asServiceError(error)) });
      }
      return;
    }
    stream.socket.destroy();
  }

  #send(stream: Stream, message: Record<string, unknown>): void {
    if (!stream.socket.destroyed) stream.socket.write(`${JSON.stringify(message)}\n`);
  }

  #ended(stream: Stream): void {
    this.#streams.delete(stream);
    // A consumer that is gone holds nothing: what it was told is as good as acknowledged.
    stream.notifier.unregister();
    if (this.#fs.mounted && !this.#fs.serialised) this.#fs.reclaim();
  }
}

/** The fd under a connection (the kernel's, for SO_PEERCRED, SCM_RIGHTS and keeping it across execve). */
export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new GuestmemfsError('EBADF', 'connection has no descriptor', { syscall: 'getsockopt' });
  return fd;
}

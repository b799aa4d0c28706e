// The mount service: one process owns a pool's metadata and serves it to many clients over HTTP/JSON on a UNIX socket
// (as Firecracker and Cloud Hypervisor serve their APIs), each request run with the client's kernel credentials.
import * as fs from 'node:fs';
import * as http from 'node:http';
import type * as net from 'node:net';
import { GuestmemfsError } from '../errors';
import type { Filesystem } from '../fs/filesystem';
import type { Credentials } from '../fs/permissions';
import { native } from '../native';
import { API_PREFIX, MAX_BODY_BYTES, type Operation, OPERATIONS_BY_ROUTE } from './api';
import { asServiceError, decodeParams, encodeResult, errorBody, STATUS } from './codec';
import { ServiceMetrics } from './metrics';
import { NOTIFIER_ROUTE, NOTIFIERS_ENV, NotifierStreams, socketFd, type InheritedNotifier } from './notifiers';
import { openApiDocument } from './openapi';

export interface ServeOptions {
  /** The socket's path. */
  socket: string;
  /** The socket file's mode: who may connect (connect(2) needs write permission). Default 0660: owner and group. */
  mode?: number;
  /** The socket file's group (with mode 0660, the group whose members may connect). */
  gid?: number;
  /** Connections open at once, beyond which new ones are closed at accept. */
  maxConnections?: number;
  /** A listening socket to serve instead of binding one (inherited across the service's own live update). */
  listenFd?: number;
  /** Set by a live update: when the previous service stopped taking requests (process.hrtime, CLOCK_MONOTONIC). */
  updateStartedNs?: bigint;
  /** Live updates this pool's service has been through before this one started. */
  handovers?: number;
  /** Notifier connections a live update kept for this service (NOTIFIERS_ENV), to register again. */
  notifiers?: readonly InheritedNotifier[];
  /** Called for POST /v1/update from root: the caller runs liveUpdate(). */
  onUpdateRequest?: () => void;
}

/** What a service started by a live update hands its successor in the environment. */
export const LISTEN_FD_ENV = 'GUESTMEMFS_LISTEN_FD';
export const UPDATE_STARTED_ENV = 'GUESTMEMFS_UPDATE_STARTED_NS';
export const HANDOVERS_ENV = 'GUESTMEMFS_HANDOVERS';

const DEFAULT_MAX_CONNECTIONS = 128;

export class MountService {
  readonly socketPath: string;
  readonly metrics: ServiceMetrics;
  readonly #fs: Filesystem;
  readonly #server: http.Server;
  readonly #credentials = new WeakMap<net.Socket, Credentials>();
  readonly #notifiers: NotifierStreams;
  #listenFd: number;
  readonly #handovers: number;
  readonly #onUpdateRequest: (() => void) | undefined;
  /** The pause of the live update that started this service, in ms. */
  readonly updatePauseMs: number | undefined;
  /** The socket file's identity, so that close() removes only the file it bound. */
  readonly #socketIno: number | undefined;

  private constructor(filesystem: Filesystem, options: ServeOptions) {
    this.#fs = filesystem;
    this.socketPath = options.socket;
    this.metrics = new ServiceMetrics(() => (this.#fs.mounted ? this.#fs : undefined));
    const mode = options.mode ?? 0o660;
    if (options.listenFd !== undefined) this.#listenFd = options.listenFd;
    else if (options.gid === undefined) this.#listenFd = native.unixListen(options.socket, 511, mode);
    else {
      // Widened only once it has its group: a socket 0660 under the binder's own group would let that group in.
      this.#listenFd = native.unixListen(options.socket, 511, 0o600);
      fs.chownSync(options.socket, -1, options.gid);
      fs.chmodSync(options.socket, mode);
    }
    this.#socketIno = fs.statSync(options.socket, { throwIfNoEntry: false })?.ino;
    this.#handovers = options.handovers ?? 0;
    this.#onUpdateRequest = options.onUpdateRequest;
    this.metrics.handovers.inc({}, this.#handovers);
    if (options.updateStartedNs !== undefined) {
      this.updatePauseMs = Number(process.hrtime.bigint() - options.updateStartedNs) / 1e6;
      this.metrics.handoverPause.set({}, this.updatePauseMs / 1000);
    }
    this.#server = http.createServer(
      { maxHeaderSize: 16 * 1024, requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 60_000 },
      (request, response) => void this.#handle(request, response),
    );
    this.#server.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.#notifiers = new NotifierStreams(filesystem);
    this.#notifiers.adopt(options.notifiers ?? []);
    this.#server.on('upgrade', (request: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if ((request.url ?? '').split('?')[0] === NOTIFIER_ROUTE)
        this.#notifiers.accept(request, socket, head, this.#credentials.get(socket));
      else socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
    this.#server.on('connection', (socket: net.Socket) => this.#accept(socket));
    this.#server.on('drop', () => this.metrics.refused.inc({ reason: 'max-connections' }));
    this.#server.on('clientError', (_error, socket: net.Socket) => {
      this.metrics.refused.inc({ reason: 'bad-http' });
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Serves `filesystem` on a UNIX socket; resolves once it listens. */
  static async start(filesystem: Filesystem, options: ServeOptions): Promise<MountService> {
    const service = new MountService(filesystem, options);
    await service.#listen();
    return service;
  }

  #listen(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ fd: this.#listenFd }, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
  }

  /**
   * The service's own live update, the userspace kexec of the filesystem: stop taking requests (new connections wait
   * in the listening socket's backlog; idle ones close, busy ones once answered), serialise, and execve `argv` with
   * the listening socket kept. The new program adopts the handover and serves the same socket. Returns only by
   * throwing, when the exec failed: the handover is then aborted and this service serves again.
   */
  async liveUpdate(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<never> {
    const started = process.hrtime.bigint();
    const listener = native.fdDuplicate(this.#listenFd);
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();
    await closed;
    // Consumers of files' memory stay connected: their connections go to the new program, which registers them again.
    const notifiers = this.#notifiers.keptForUpdate();
    try {
      this.#fs.kexec(argv, {
        keepFds: [listener, ...notifiers.fds],
        deferTeardown: true, // the new service reaps the holder (takeUpdateEnvironment in cli/commands/mount.ts)
        env: {
          ...env,
          [NOTIFIERS_ENV]: notifiers.env,
          [LISTEN_FD_ENV]: String(listener),
          [UPDATE_STARTED_ENV]: String(started),
          [HANDOVERS_ENV]: String(this.#handovers + 1),
        },
      });
    } catch (error) {
      for (const fd of notifiers.fds) native.fdClose(fd);
      this.#listenFd = listener;
      await this.#listen();
      throw error;
    }
  }

  /** The listening socket's fd (kept across the service's own execve). */
  get listenFd(): number {
    return this.#listenFd;
  }

  /**
   * Stops serving: no new connections, open ones closed. The socket file is removed unless `keepSocket` (a live
   * update, whose successor serves the same listening socket).
   */
  async close(options: { keepSocket?: boolean } = {}): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    this.#notifiers.closeAll();
    await closed;
    if (
      !options.keepSocket &&
      this.#socketIno !== undefined &&
      fs.statSync(this.socketPath, { throwIfNoEntry: false })?.ino === this.#socketIno
    ) {
      fs.rmSync(this.socketPath, { force: true });
    }
  }

  #accept(socket: net.Socket): void {
    try {
      const [, uid, gid, ...groups] = native.peerCredentials(socketFd(socket));
      this.#credentials.set(socket, { uid: uid!, gid: gid!, groups });
    } catch {
      // A connection whose credentials cannot be read is served nothing.
      this.metrics.refused.inc({ reason: 'no-credentials' });
      socket.destroy();
      return;
    }
    this.metrics.connections.inc();
    socket.once('close', () => this.metrics.connections.dec());
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    // Split by hand: new URL() costs more than the operation it names.
    const target = request.url ?? '/';
    const question = target.indexOf('?');
    const pathname = question < 0 ? target : target.slice(0, question);
    const search = question < 0 ? '' : target.slice(question + 1);
    const route = `${request.method} ${pathname}`;
    let label = 'unknown';
    try {
      if (route === 'GET /metrics') return this.#send(response, 200, this.metrics.render(), 'text/plain; version=0.0.4');
      if (route === `GET ${API_PREFIX}/openapi.json`) return this.#send(response, 200, JSON.stringify(openApiDocument()));
      if (route === `GET ${API_PREFIX}/pool-fd`) return this.#sendPoolFd(request);
      if (route === `POST ${API_PREFIX}/update`) return this.#requestUpdate(request, response);
      const operation = OPERATIONS_BY_ROUTE.get(route);
      if (!operation) throw this.#unknownRoute(request.method ?? '', pathname);
      label = operation.name;
      const credentials = this.#credentials.get(request.socket);
      if (!credentials) throw new GuestmemfsError('EACCES', 'connection has no kernel credentials', { syscall: operation.name });
      // A GET and a synchronous operation are answered within the request event, without a turn of the event loop.
      const params = operation.method === 'GET' ? this.#query(operation, search) : await this.#body(operation, request);
      let result = this.#fs.actingAs(credentials, () => operation.run(this.#fs, params));
      if (result instanceof Promise) result = await result;
      this.#send(response, 200, encodeResult(result));
      this.metrics.operations.inc({ operation: label, result: 'ok' });
    } catch (error) {
      const failure = asServiceError(error);
      this.metrics.operations.inc({ operation: label, result: failure.code });
      if (failure.code === 'EMSGSIZE') response.setHeader('Connection', 'close');
      this.#send(response, STATUS[failure.code] ?? 500, JSON.stringify(errorBody(failure)));
    } finally {
      this.metrics.latency.observe({ operation: label }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  /** POST /v1/update: root's to ask; answered 202 before the update begins, so the asker is not cut off. */
  #requestUpdate(request: http.IncomingMessage, response: http.ServerResponse): void {
    if (this.#credentials.get(request.socket)?.uid !== 0) {
      throw new GuestmemfsError('EPERM', 'operation not permitted, update: only root (uid 0) may update the service', {
        syscall: 'update',
      });
    }
    if (!this.#onUpdateRequest) throw new GuestmemfsError('EOPNOTSUPP', 'this service cannot update itself', { syscall: 'update' });
    response.setHeader('Connection', 'close');
    response.once('finish', () => this.#onUpdateRequest!());
    this.#send(response, 202, encodeResult({ updating: true, pid: process.pid }));
  }

  #unknownRoute(method: string, pathname: string): GuestmemfsError {
    const name = pathname.startsWith(`${API_PREFIX}/`) ? pathname.slice(API_PREFIX.length + 1) : '';
    const known = [...OPERATIONS_BY_ROUTE.values()].find((operation) => operation.name === name);
    if (known) return new GuestmemfsError('EINVAL', `${name} takes ${known.method}, not ${method}`, { syscall: name });
    return new GuestmemfsError('ENOENT', `no such operation ${method} ${pathname}: GET ${API_PREFIX}/openapi.json lists them`, {
      syscall: 'http',
    });
  }

  /** A POST's parameters: a JSON object body of at most MAX_BODY_BYTES (a GET's are its query string). */
  #query(operation: Operation, search: string): Record<string, unknown> {
    const query: Record<string, string> = {};
    if (search) for (const [key, value] of new URLSearchParams(search)) query[key] = value;
    return decodeParams(operation, query, true);
  }

  async #body(operation: Operation, request: http.IncomingMessage): Promise<Record<string, unknown>> {
    const declared = Number(request.headers['content-length'] ?? 0);
    if (declared > MAX_BODY_BYTES) throw tooLarge(operation);
    const chunks: Buffer[] = [];
    let length = 0;
    // The parser pushes a small body right after it emits the request, in the same read: one microtask later it is
    // all buffered, and taken without switching the stream to flowing mode.
    await Promise.resolve();
    if (request.complete) {
      for (let chunk = request.read() as Buffer | null; chunk !== null; chunk = request.read() as Buffer | null) {
        length += chunk.length;
        if (length > MAX_BODY_BYTES) throw tooLarge(operation);
        chunks.push(chunk);
      }
      return this.#parsedBody(operation, chunks, length);
    }
    // Otherwise one wait for the whole body (an async iterator would cost a turn per chunk), cut short past the bound.
    await new Promise<void>((resolve, reject) => {
      request.on('data', (chunk: Buffer) => {
        length += chunk.length;
        if (length > MAX_BODY_BYTES) {
          request.removeAllListeners('data');
          reject(tooLarge(operation));
        } else chunks.push(chunk);
      });
      request.once('end', resolve);
      request.once('error', reject);
    });
    return this.#parsedBody(operation, chunks, length);
  }

  #parsedBody(operation: Operation, chunks: Buffer[], length: number): Record<string, unknown> {
    let body: unknown;
    try {
      body = length === 0 ? {} : JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new GuestmemfsError('EINVAL', `${operation.name}: the body is not JSON`, { syscall: operation.name });
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new GuestmemfsError('EINVAL', `${operation.name}: the body must be a JSON object of parameters`, { syscall: operation.name });
    }
    return decodeParams(operation, body as Record<string, unknown>, false);
  }

  /**
   * Hands the client a descriptor of the pool on a description of its own (to map from, and to hold its pins on), and
   * for a hybrid pool one of its 1 GiB-page file, attached as SCM_RIGHTS to the whole response, written in one sendmsg;
   * the connection then closes.
   */
  #sendPoolFd(request: http.IncomingMessage): void {
    const socket = request.socket;
    const description = native.fdReopen(this.#fs.pool.fd);
    // A hybrid pool's 1 GiB pages are in a second file: the client maps them from a descriptor of that.
    const large = this.#fs.pool.large;
    const descriptions = large ? [description, native.fdReopen(large.fd)] : [description];
    try {
      const body = encodeResult({ size: this.#fs.pool.size, pageSize: this.#fs.pool.pageSize, uuid: this.#fs.uuid });
      const head =
        'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n' + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
      native.sendWithFds(socketFd(socket), Buffer.from(head + body), descriptions);
      this.metrics.operations.inc({ operation: 'pool-fd', result: 'ok' });
    } finally {
      for (const passed of descriptions) native.fdClose(passed);
      socket.destroy();
    }
  }

  #send(response: http.ServerResponse, status: number, body: string, type = 'application/json'): void {
    response.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
    response.end(body);
  }
}

function tooLarge(operation: Operation): GuestmemfsError {
  return new GuestmemfsError('EMSGSIZE', `${operation.name}: the body exceeds ${MAX_BODY_BYTES} bytes; send less at a time`, {
    syscall: operation.name,
  });
}

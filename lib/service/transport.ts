// The client's side of the wire: kept-alive HTTP/1.1 connections to the service's UNIX socket, each carrying requests
// in order and parsing their answers in order (pipelined). Node's http client costs 2.6x more per request here; the
// service always answers with a Content-Length, which is all this parser reads.
import { GuestmemfsError } from '../errors';
import * as net from 'node:net';

export interface Answer {
  status: number;
  body: Buffer;
}

/** A failed request: `retryable` when it went out on a reused connection that closed before any of its answer came. */
export type TransportError = Error & { code: string; retryable?: boolean };

/** Bytes of an answer's head (status line and headers) read at most: the service's are a few dozen. */
const MAX_HEAD_BYTES = 16 * 1024;
/** Bytes of an answer's body read at most (a read of the largest size, base64, and then some). */
const MAX_BODY_BYTES = 2 << 20;

interface Pending {
  resolve: (answer: Answer) => void;
  reject: (error: TransportError) => void;
  /** Answers this connection had completed when the request went out: more than 0 means a reused connection. */
  answeredBefore: number;
  timer: NodeJS.Timeout;
}

function failure(code: string, message: string, retryable = false): TransportError {
  return Object.assign(new Error(message), { code, ...(retryable ? { retryable } : {}) });
}

class Connection {
  readonly #socket: net.Socket;
  readonly #pending: Pending[] = [];
  #buffer: Buffer = Buffer.alloc(0);
  #answered = 0;
  #closed: TransportError | undefined;

  constructor(socketPath: string, onClose: () => void) {
    this.#socket = net.createConnection(socketPath);
    this.#socket.on('data', (chunk: Buffer) => this.#receive(chunk));
    this.#socket.on('error', (error: NodeJS.ErrnoException) => this.#fail(failure(error.code ?? 'EIO', error.message)));
    this.#socket.on('close', () => {
      this.#fail(failure('ECONNRESET', 'the service closed the connection'));
      onClose();
    });
  }

  get pending(): number {
    return this.#pending.length;
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  send(head: string, body: string | undefined, timeoutMs: number): Promise<Answer> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<Answer>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(failure('ETIMEDOUT', `no answer within ${timeoutMs} ms`)), timeoutMs);
      this.#pending.push({ resolve, reject, answeredBefore: this.#answered + this.#pending.length, timer });
      this.#socket.write(body === undefined ? head : head + body);
    });
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #receive(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const end = this.#buffer.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.#buffer.length > MAX_HEAD_BYTES) this.#protocolError('an answer head too long');
        return;
      }
      const head = this.#buffer.subarray(0, end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1]);
      if (!(status >= 100) || !Number.isSafeInteger(length) || length > MAX_BODY_BYTES) {
        return this.#protocolError('an answer without a status or a length');
      }
      if (this.#buffer.length < end + 4 + length) return;
      const body = this.#buffer.subarray(end + 4, end + 4 + length);
      this.#buffer = this.#buffer.subarray(end + 4 + length);
      const pending = this.#pending.shift();
      if (!pending) return this.#protocolError('an answer nobody asked for');
      clearTimeout(pending.timer);
      this.#answered++;
      pending.resolve({ status, body });
      if (/\r\nconnection: *close/i.test(head)) {
        this.#socket.end();
        return;
      }
    }
  }

  #protocolError(what: string): void {
    this.#fail(failure('EPROTO', `the service sent ${what}`));
    this.#socket.destroy();
  }

  #fail(error: TransportError): void {
    this.#closed ??= error;
    for (const pending of this.#pending.splice(0)) {
      clearTimeout(pending.timer);
      // Sent on a connection that had answered before, and nothing of its own answer came: the service never read it.
      const retryable = pending.answeredBefore > 0 && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      pending.reject(retryable ? failure(error.code, error.message, true) : error);
    }
  }
}

/** Up to `size` connections; each request goes on the least busy one, opened when needed. */
export class Transport {
  readonly #connections = new Set<Connection>();

  constructor(
    readonly socketPath: string,
    readonly size: number,
    readonly timeoutMs: number,
  ) {}

  request(method: string, target: string, body?: string): Promise<Answer> {
    const head =
      `${method} ${target} HTTP/1.1\r\nHost: localhost\r\n` +
      (body === undefined ? '\r\n' : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
    return this.#pick().send(head, body, this.timeoutMs);
  }

  #pick(): Connection {
    let best: Connection | undefined;
    for (const connection of this.#connections) {
      if (connection.closed) continue;
      if (!best || connection.pending < best.pending) best = connection;
    }
    if (best && (best.pending === 0 || this.#connections.size >= this.size)) return best;
    const connection: Connection = new Connection(this.socketPath, () => this.#connections.delete(connection));
    this.#connections.add(connection);
    return connection;
  }

  close(): void {
    for (const connection of this.#connections) connection.destroy();
    this.#connections.clear();
  }
}

/**
 * A transport failure in Node's shape. A service that answered wrongly (EPROTO) or too late (ETIMEDOUT) was reached,
 * and its own words say what went wrong; any other failure means it was not, and the remedy is to look at it.
 */
export function transportError(socketPath: string, error: NodeJS.ErrnoException): GuestmemfsError {
  if (error.code === 'EPROTO' || error.code === 'ETIMEDOUT') {
    return new GuestmemfsError(error.code, `the mount service at ${socketPath}: ${error.message}`, { syscall: 'read', path: socketPath });
  }
  const code = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? 'ENOTCONN' : (error.code ?? 'EIO');
  return new GuestmemfsError(
    code,
    `the mount service at ${socketPath} is unreachable (${error.code ?? error.message}): is \`guestmemfs mount\` running?`,
    {
      syscall: 'connect',
      path: socketPath,
    },
  );
}

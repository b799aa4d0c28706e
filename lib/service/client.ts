// A client of the mount service: Filesystem's metadata methods over HTTP/JSON on the service's UNIX socket, and the
// direct data path: the pool descriptor received as SCM_RIGHTS, mapped here and pinned on a description of its own.
import { GuestmemfsError } from '../errors';
import type { AuditReport } from '../fs/audit';
import type { QuarantineResult } from '../fs/badblocks';
import type { ResizeResult } from '../fs/resize';
import type { QuotaReport, QuotaTarget } from '../fs/quota';
import type { CreateOptions, DirEntry, MappableFile, MkdirOptions, Stat, StatFs } from '../fs/types';
import type { HandoverVersion } from '../handover/blob';
import { native } from '../native';
import type { MapOptions, Mapping } from '../pool/mapping';
import type { PinHolder } from '../pool/pins';
import { Pool } from '../pool/pool';
import { API_PREFIX } from './api';
import { errorFromBody } from './codec';
import { RemoteNotifier, type RemoteConsumer } from './remote-notifier';
import { Transport, transportError } from './transport';

export interface ServiceInfo {
  apiVersion: number;
  uuid: string;
  pool: string;
  pid: number;
  serialised: boolean;
}

export interface ConnectOptions {
  /** Connections used at once for concurrent requests (default 1: requests are pipelined on one connection). */
  connections?: number;
  /** How long one request may take before it fails with ETIMEDOUT (default 30 s). */
  timeoutMs?: number;
}

/** Tries before giving up on a file whose blocks keep changing while it is being mapped. */
const MAP_ATTEMPTS = 5;
/** Bytes of the pool-fd response read at most (a small JSON body). */
const POOL_FD_RESPONSE_BYTES = 64 * 1024;

const STAT_TIMES = ['atimeNs', 'mtimeNs', 'ctimeNs', 'birthtimeNs'] as const;

function toStat(raw: Record<string, unknown>): Stat {
  const stat = { ...raw } as Record<string, unknown>;
  for (const field of STAT_TIMES) if (typeof stat[field] === 'string') stat[field] = BigInt(stat[field]);
  return stat as unknown as Stat;
}

export class ServiceClient {
  readonly socketPath: string;
  readonly #transport: Transport;
  readonly #timeoutMs: number;
  #pool: Pool | undefined;

  private constructor(socketPath: string, options: ConnectOptions) {
    this.socketPath = socketPath;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#transport = new Transport(socketPath, options.connections ?? 1, this.#timeoutMs);
  }

  /** Connects to a mount service and checks that it speaks this API version. */
  static async connect(socketPath: string, options: ConnectOptions = {}): Promise<ServiceClient> {
    const client = new ServiceClient(socketPath, options);
    const info = await client.info();
    if (info.apiVersion !== 1) {
      client.close();
      throw new GuestmemfsError('EPROTO', `the service speaks API v${info.apiVersion}, this client v1: use matching releases`, {
        syscall: 'connect',
        path: socketPath,
      });
    }
    return client;
  }

  /**
   * One request: resolves with the JSON result, rejects with the service's error in Node's shape. A request sent on a
   * kept-alive connection that the service closed before answering (as it closes idle ones for its live update) was
   * never read, so it is sent once more on a fresh connection.
   */
  async request<T>(method: 'GET' | 'POST', name: string, params: Record<string, unknown> = {}): Promise<T> {
    try {
      return await this.#send<T>(method, name, params);
    } catch (error) {
      if (!(error as { retryable?: boolean }).retryable) throw error;
      return this.#send<T>(method, name, params);
    }
  }

  async #send<T>(method: 'GET' | 'POST', name: string, params: Record<string, unknown>): Promise<T> {
    const defined = Object.fromEntries(Object.entries(params).filter(([, value]) => value !== undefined));
    const asJson = (_key: string, value: unknown) => (typeof value === 'bigint' ? value.toString() : value);
    const body = method === 'POST' ? JSON.stringify(defined, asJson) : undefined;
    const search = new URLSearchParams(defined as Record<string, string>).toString();
    const query = method === 'GET' && search ? `?${search}` : '';
    let answer;
    try {
      answer = await this.#transport.request(method, `${API_PREFIX}/${name}${query}`, body);
    } catch (error) {
      const failure = transportError(this.socketPath, error as NodeJS.ErrnoException);
      if ((error as { retryable?: boolean }).retryable) Object.assign(failure, { retryable: true });
      throw failure;
    }
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new GuestmemfsError('EPROTO', `the service sent a body that is not JSON (HTTP ${answer.status})`, { syscall: name });
    }
    if (answer.status === 200) return parsed as T;
    throw errorFromBody(parsed, name, `HTTP ${answer.status}`);
  }

  info(): Promise<ServiceInfo> {
    return this.request('GET', 'info');
  }

  async stat(path: string): Promise<Stat> {
    return toStat(await this.request('GET', 'stat', { path }));
  }

  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw error;
    }
  }

  readdirEntries(path: string): Promise<DirEntry[]> {
    return this.request('GET', 'readdir', { path });
  }

  async readdir(path: string): Promise<string[]> {
    return (await this.readdirEntries(path)).map((entry) => entry.name);
  }

  async create(path: string, options: CreateOptions = {}): Promise<Stat> {
    return toStat(await this.request('POST', 'create', { path, ...options }));
  }

  async mkdir(path: string, options: MkdirOptions = {}): Promise<Stat> {
    return toStat(await this.request('POST', 'mkdir', { path, ...options }));
  }

  async unlink(path: string): Promise<void> {
    await this.request('POST', 'unlink', { path });
  }

  async rmdir(path: string): Promise<void> {
    await this.request('POST', 'rmdir', { path });
  }

  async rename(from: string, to: string): Promise<void> {
    await this.request('POST', 'rename', { from, to });
  }

  async chmod(path: string, mode: number): Promise<void> {
    await this.request('POST', 'chmod', { path, mode });
  }

  async chown(path: string, uid: number | undefined, gid: number | undefined): Promise<void> {
    await this.request('POST', 'chown', { path, uid, gid });
  }

  async utimes(path: string, atimeNs: bigint, mtimeNs: bigint): Promise<void> {
    await this.request('POST', 'utimes', { path, atimeNs, mtimeNs });
  }

  /** Sets a file's size (the service zeroes new blocks off its JS thread, so it keeps serving meanwhile). */
  async truncate(path: string, size: number): Promise<void> {
    await this.request('POST', 'truncate', { path, size });
  }

  truncateAsync(path: string, size: number): Promise<void> {
    return this.truncate(path, size);
  }

  /** Discards whole blocks of a file; the service waits for the file's consumers to let go first. */
  async punch(path: string, offset: number, length: number): Promise<void> {
    await this.request('POST', 'punch', { path, offset, length });
  }

  punchAsync(path: string, offset: number, length: number): Promise<void> {
    return this.punch(path, offset, length);
  }

  /**
   * Registers a consumer of the file's memory with the service (see Filesystem.registerNotifier): it is told
   * invalidate(start, end) before a range goes, and its acknowledgement (sent when invalidate returns or its promise
   * settles) lets the change go ahead. The registration lasts as long as its connection, across the service's own
   * live updates.
   */
  registerNotifier(path: string, consumer: RemoteConsumer, flags = 0): Promise<RemoteNotifier> {
    return RemoteNotifier.register(this.socketPath, path, consumer, flags, this.#timeoutMs);
  }

  async write(path: string, bytes: Uint8Array, position = 0): Promise<number> {
    const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
    return (await this.request<{ written: number }>('POST', 'write', { path, position, data })).written;
  }

  async read(path: string, position = 0, length?: number): Promise<Uint8Array> {
    const { data } = await this.request<{ data: string }>('GET', 'read', { path, position, length });
    return new Uint8Array(Buffer.from(data, 'base64'));
  }

  statfs(): Promise<StatFs> {
    return this.request('GET', 'statfs');
  }

  extents(path: string): Promise<Array<{ offset: number; length: number }>> {
    return this.request('GET', 'extents', { path });
  }

  mappable(path: string, options: { writable?: boolean } = {}): Promise<MappableFile> {
    return this.request('GET', 'mappable', { path, writable: options.writable });
  }

  pins(path?: string): Promise<PinHolder[]> {
    return this.request('GET', 'pins', { path });
  }

  async lookup(path: string): Promise<number> {
    return (await this.request<{ ino: number }>('GET', 'lookup', { path })).ino;
  }

  pinnedOrphans(): Promise<Array<{ ino: number; blocks: number; pins: PinHolder[] }>> {
    return this.request('GET', 'pinned-orphans');
  }

  audit(): Promise<AuditReport> {
    return this.request('GET', 'audit');
  }

  /**
   * Serialises the served filesystem for handover and freezes it until abort() (root only): as handover version 2, or
   * 1 for a successor of a release that reads only version 1.
   */
  async serialise(
    options: { handoverVersion?: HandoverVersion } = {},
  ): Promise<{ generation: bigint; bytes: number; files: number; mappingBlocks: number; handoverVersion: HandoverVersion }> {
    const result = await this.request<{
      generation: string;
      bytes: number;
      files: number;
      mappingBlocks: number;
      handoverVersion: HandoverVersion;
    }>('POST', 'serialise', options.handoverVersion === undefined ? {} : { handoverVersion: options.handoverVersion });
    return { ...result, generation: BigInt(result.generation) };
  }

  /** Lifts the freeze of serialise(); resolves with the generation whose handover was aborted (root only). */
  async abort(): Promise<bigint> {
    return BigInt((await this.request<{ aborted: string }>('POST', 'abort')).aborted);
  }

  async reclaim(): Promise<number> {
    return (await this.request<{ freed: number }>('POST', 'reclaim')).freed;
  }

  quotas(): Promise<QuotaReport[]> {
    return this.request('GET', 'quotas');
  }

  async setQuota(target: QuotaTarget, limitBytes: number | null): Promise<void> {
    await this.request('POST', 'quota', { ...target, limitBytes });
  }

  quarantineBlock(block: number): Promise<QuarantineResult> {
    return this.request<QuarantineResult>('POST', 'badblock', { block });
  }

  resize(size: number): Promise<ResizeResult> {
    return this.request<ResizeResult>('POST', 'resize', { size });
  }

  /**
   * A descriptor of the pool on an open file description of its own, received as SCM_RIGHTS (close-on-exec). The
   * service hands it out to whoever may connect, whatever the pool file's own mode: see the README on trust domains.
   */
  poolDescriptor(): number {
    const [primary, ...rest] = this.#poolDescriptors();
    for (const extra of rest) native.fdClose(extra);
    return primary!;
  }

  /** The pool's descriptors as the service passes them: its file's, and a hybrid pool's 1 GiB-page file's after it. */
  #poolDescriptors(): number[] {
    const fd = native.unixConnect(this.socketPath, this.#timeoutMs);
    const received: Buffer[] = [];
    const fds: number[] = [];
    try {
      native.sendWithFds(fd, Buffer.from(`GET ${API_PREFIX}/pool-fd HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`), []);
      for (let total = 0; total < POOL_FD_RESPONSE_BYTES;) {
        const { bytes, fds: passed } = native.receiveWithFds(fd, POOL_FD_RESPONSE_BYTES);
        fds.push(...passed);
        if (bytes.length === 0) break;
        received.push(bytes);
        total += bytes.length;
      }
    } catch (error) {
      for (const passed of fds) native.fdClose(passed);
      throw error;
    } finally {
      native.fdClose(fd);
    }
    const text = Buffer.concat(received).toString('utf8');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
    if (status !== 200 || fds.length < 1 || fds.length > 2) {
      for (const passed of fds) native.fdClose(passed);
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      let parsed: { code?: string; message?: string } = {};
      try {
        parsed = JSON.parse(body) as typeof parsed;
      } catch {
        // The message below says what arrived.
      }
      throw new GuestmemfsError(parsed.code ?? 'EPROTO', parsed.message ?? `the service sent no pool descriptor (HTTP ${status || '?'})`, {
        syscall: 'recvmsg',
        path: this.socketPath,
      });
    }
    return fds;
  }

  /** The pool, from the descriptors the service passed (received once, kept for later mappings). */
  pool(): Pool {
    if (!this.#pool) {
      const [fd, largeFd] = this.#poolDescriptors();
      this.#pool = Pool.fromFd(fd!, largeFd);
    }
    return this.#pool;
  }

  /**
   * Maps a file here, pinned on a description the service hands out for this mapping alone. The file is described
   * again once the pin is held: had its blocks been freed and reused in between, the pin would hold another file's
   * memory, so the mapping is dropped and made again.
   */
  async map(path: string, options: Omit<MapOptions, 'pin' | 'pinDescription'> = {}): Promise<Mapping> {
    const writable = options.writable ?? true;
    for (let attempt = 0; attempt < MAP_ATTEMPTS; attempt++) {
      const before = await this.mappable(path, { writable });
      const mapping = this.pool().map(before.extents, {
        ...options,
        writable,
        dontDump: before.guest || options.dontDump,
        dontFork: before.guest || options.dontFork,
        pin: true,
        pinDescription: this.poolDescriptor(),
      });
      const after = await this.mappable(path, { writable });
      if (JSON.stringify(before) === JSON.stringify(after)) return mapping;
      mapping.unmap();
    }
    throw new GuestmemfsError('EAGAIN', `the file's blocks kept changing while it was mapped, mmap '${path}': try again`, {
      syscall: 'mmap',
      path,
    });
  }

  /** Closes the connections (mappings stay: they hold their own pins) and the pool descriptor. */
  close(): void {
    this.#transport.close();
    this.#pool?.close();
    this.#pool = undefined;
  }
}

/** Connects to the mount service serving a pool (see ServiceClient.connect). */
export function connect(socketPath: string, options: ConnectOptions = {}): Promise<ServiceClient> {
  return ServiceClient.connect(socketPath, options);
}

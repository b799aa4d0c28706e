// The mount service's API, version 1: one table of operations (method, path, parameters, response schema, and the
// Filesystem call behind each), from which the server dispatches, the client is typed and the OpenAPI schema is built.
import type { Filesystem } from '../fs/filesystem';
import type { QuotaTarget } from '../fs/quota';
import { HANDOVER_VERSIONS, isHandoverVersion } from '../handover/blob';
import { GuestmemfsError } from '../errors';

export const API_VERSION = 1;
export const API_PREFIX = `/v${API_VERSION}`;
/** Bytes of a request body the service reads at most (a write's data travels base64 inside it). */
export const MAX_BODY_BYTES = 1 << 20;
/** Bytes one read may return (the response carries them base64). */
export const MAX_READ_BYTES = 512 * 1024;

export type JsonSchema = Record<string, unknown>;

export type ParamType = 'path' | 'string' | 'integer' | 'mode' | 'boolean' | 'id' | 'bytes-or-null' | 'ns' | 'base64' | 'file-type';

export interface ParamSpec {
  type: ParamType;
  required?: boolean;
  description: string;
}

export interface Operation {
  name: string;
  method: 'GET' | 'POST';
  summary: string;
  params: Readonly<Record<string, ParamSpec>>;
  /** Schema of a successful response's JSON body. */
  response: JsonSchema;
  /** Changes metadata (counted apart in the metrics; refused with EBUSY while the pool is serialised). */
  mutates: boolean;
  run(fs: Filesystem, params: Record<string, unknown>): unknown;
}

const integer = { type: 'integer', minimum: 0 };
/** 64-bit nanosecond times travel as decimal strings: JSON numbers lose precision past 2^53. */
export const nsString = { type: 'string', pattern: '^[0-9]{1,20}$' };
const statSchema: JsonSchema = {
  type: 'object',
  required: ['ino', 'generation', 'type', 'size', 'blocks', 'blockSize', 'extents', 'contiguous', 'mode', 'uid', 'gid', 'nlink'],
  properties: {
    ino: integer,
    generation: integer,
    type: { enum: ['file', 'directory'] },
    fileType: { enum: ['plain', 'guest', 'state'] },
    size: integer,
    blocks: integer,
    blockSize: integer,
    extents: integer,
    contiguous: { type: 'boolean' },
    quarantinedBlocks: integer,
    mode: integer,
    uid: integer,
    gid: integer,
    nlink: integer,
    atimeNs: nsString,
    mtimeNs: nsString,
    ctimeNs: nsString,
    birthtimeNs: nsString,
  },
};
const extentsSchema: JsonSchema = {
  type: 'array',
  items: { type: 'object', required: ['offset', 'length'], properties: { offset: integer, length: integer } },
};
const pinsSchema: JsonSchema = {
  type: 'array',
  items: {
    type: 'object',
    required: ['offset', 'length', 'pids'],
    properties: { offset: integer, length: integer, pids: { type: 'array', items: integer } },
  },
};
const nothing: JsonSchema = { type: 'object', additionalProperties: false, properties: {} };
const path: ParamSpec = { type: 'path', required: true, description: 'absolute path inside the filesystem' };

/** The handover is the pool owner's, and through the service that is root's. */
function requireRoot(fs: Filesystem, syscall: string): void {
  if (fs.credentials.uid === 0) return;
  throw new GuestmemfsError('EPERM', `operation not permitted, ${syscall}: only root (uid 0) may hand the pool over`, { syscall });
}

function quotaTarget(params: Record<string, unknown>): QuotaTarget {
  const hasUid = params.uid !== undefined;
  if (hasUid === (params.dir !== undefined)) {
    throw new GuestmemfsError('EINVAL', 'a quota names exactly one of uid or dir', { syscall: 'quotactl' });
  }
  return hasUid ? { uid: params.uid as number } : { dir: params.dir as string };
}

export const OPERATIONS: readonly Operation[] = [
  {
    name: 'info',
    method: 'GET',
    summary: 'What is served: the pool, its geometry and the service',
    params: {},
    response: {
      type: 'object',
      required: ['apiVersion', 'uuid', 'pool', 'pid', 'serialised', 'geometry'],
      properties: {
        apiVersion: integer,
        uuid: { type: 'string' },
        pool: { type: 'string' },
        pid: integer,
        serialised: { type: 'boolean' },
        geometry: { type: 'object' },
      },
    },
    mutates: false,
    run: (fs) => ({
      apiVersion: API_VERSION,
      uuid: fs.uuid,
      pool: fs.pool.label,
      pid: process.pid,
      serialised: fs.serialised,
      geometry: fs.geometry,
    }),
  },
  {
    name: 'statfs',
    method: 'GET',
    summary: 'Block and inode counts (df)',
    params: {},
    response: {
      type: 'object',
      required: ['blockSize', 'totalBlocks', 'dataBlocks', 'freeBlocks', 'totalInodes', 'freeInodes', 'freeRuns', 'largestFreeRun'],
      properties: {
        blockSize: integer,
        pageSize: integer,
        totalBlocks: integer,
        dataBlocks: integer,
        freeBlocks: integer,
        dirtyFreeBlocks: integer,
        totalInodes: integer,
        freeInodes: integer,
        freeRuns: integer,
        largestFreeRun: integer,
        quarantinedBlocks: integer,
        maxBlocks: integer,
        largePages: { type: 'object', required: ['total', 'free'], properties: { total: integer, free: integer } },
        largeFallbacks: integer,
      },
    },
    mutates: false,
    run: (fs) => fs.statfs(),
  },
  {
    name: 'stat',
    method: 'GET',
    summary: 'An inode’s attributes',
    params: { path },
    response: statSchema,
    mutates: false,
    run: (fs, p) => fs.stat(p.path as string),
  },
  {
    name: 'readdir',
    method: 'GET',
    summary: 'The entries of a directory, newest first',
    params: { path },
    response: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'ino', 'type'],
        properties: { name: { type: 'string' }, ino: integer, type: { enum: ['file', 'directory'] } },
      },
    },
    mutates: false,
    run: (fs, p) => fs.readdirEntries(p.path as string),
  },
  {
    name: 'extents',
    method: 'GET',
    summary: 'Pool byte ranges holding a file, in file order',
    params: { path },
    response: extentsSchema,
    mutates: false,
    run: (fs, p) => fs.extents(p.path as string),
  },
  {
    name: 'mappable',
    method: 'GET',
    summary: 'Where a file’s memory is, for the caller to map itself: checked as mmap is',
    params: { path, writable: { type: 'boolean', description: 'check write permission too (default true)' } },
    response: {
      type: 'object',
      required: ['ino', 'generation', 'size', 'guest', 'extents'],
      properties: { ino: integer, generation: integer, size: integer, guest: { type: 'boolean' }, extents: extentsSchema },
    },
    mutates: false,
    run: (fs, p) => fs.mappable(p.path as string, { writable: p.writable as boolean | undefined }),
  },
  {
    name: 'pins',
    method: 'GET',
    summary: 'Pins over a file’s blocks, or over the whole pool without a path',
    params: { path: { ...path, required: false } },
    response: pinsSchema,
    mutates: false,
    run: (fs, p) => fs.pins(p.path as string | undefined),
  },
  {
    name: 'read',
    method: 'GET',
    summary: 'Bytes of a state or plain file, base64',
    params: {
      path,
      position: { type: 'integer', description: 'byte offset (default 0)' },
      length: { type: 'integer', description: `bytes to read, at most ${MAX_READ_BYTES} (default: to the end, within that bound)` },
    },
    response: { type: 'object', required: ['data'], properties: { data: { type: 'string', contentEncoding: 'base64' } } },
    mutates: false,
    run: (fs, p) => {
      const position = (p.position as number | undefined) ?? 0;
      const length = Math.min((p.length as number | undefined) ?? MAX_READ_BYTES, MAX_READ_BYTES);
      return { data: Buffer.from(fs.read(p.path as string, position, length)).toString('base64') };
    },
  },
  {
    name: 'lookup',
    method: 'GET',
    summary: 'The inode number at a path (search permission checked on the way)',
    params: { path },
    response: { type: 'object', required: ['ino'], properties: { ino: integer } },
    mutates: false,
    run: (fs, p) => ({ ino: fs.lookup(p.path as string) }),
  },
  {
    name: 'pinned-orphans',
    method: 'GET',
    summary: 'Unlinked files still held by a pin: memory that comes back when their pinners let go',
    params: {},
    response: {
      type: 'array',
      items: { type: 'object', required: ['ino', 'blocks', 'pins'], properties: { ino: integer, blocks: integer, pins: pinsSchema } },
    },
    mutates: false,
    run: (fs) => fs.pinnedOrphans(),
  },
  {
    name: 'audit',
    method: 'GET',
    summary: 'Recomputes the derived metadata and lists every disagreement (none when consistent)',
    params: {},
    response: {
      type: 'object',
      required: ['problems', 'liveInodes', 'usedBlocks'],
      properties: { problems: { type: 'array', items: { type: 'string' } }, liveInodes: integer, usedBlocks: integer },
    },
    mutates: false,
    run: (fs) => fs.audit(),
  },
  {
    name: 'quotas',
    method: 'GET',
    summary: 'Every block limit with its usage',
    params: {},
    response: {
      type: 'array',
      items: {
        type: 'object',
        required: ['kind', 'id', 'limitBlocks', 'usedBlocks', 'limitBytes', 'usedBytes'],
        properties: {
          kind: { enum: ['uid', 'dir'] },
          id: integer,
          path: { type: 'string' },
          limitBlocks: integer,
          usedBlocks: integer,
          limitBytes: integer,
          usedBytes: integer,
        },
      },
    },
    mutates: false,
    run: (fs) => fs.quotas(),
  },
  {
    name: 'create',
    method: 'POST',
    summary: 'Creates an empty file, owned by the caller',
    params: {
      path,
      type: { type: 'file-type', description: 'guest (mmap only), state or plain (default)' },
      mode: { type: 'mode', description: 'permission bits (default 0600 for guest and state, 0644 for plain)' },
      contiguous: { type: 'boolean', description: 'keep the file in one extent' },
    },
    response: statSchema,
    mutates: true,
    run: (fs, p) =>
      fs.create(p.path as string, {
        type: p.type as 'plain' | 'guest' | 'state' | undefined,
        mode: p.mode as number | undefined,
        contiguous: p.contiguous as boolean | undefined,
      }),
  },
  {
    name: 'mkdir',
    method: 'POST',
    summary: 'Creates a directory, owned by the caller',
    params: {
      path,
      mode: { type: 'mode', description: 'permission bits (default 0755)' },
      recursive: { type: 'boolean', description: 'like mkdir -p' },
    },
    response: statSchema,
    mutates: true,
    run: (fs, p) => fs.mkdir(p.path as string, { mode: p.mode as number | undefined, recursive: p.recursive as boolean | undefined }),
  },
  {
    name: 'unlink',
    method: 'POST',
    summary: 'Removes a file’s name; its blocks go with its last pin',
    params: { path },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.unlink(p.path as string),
  },
  {
    name: 'rmdir',
    method: 'POST',
    summary: 'Removes an empty directory',
    params: { path },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.rmdir(p.path as string),
  },
  {
    name: 'rename',
    method: 'POST',
    summary: 'Moves a file or directory, atomically',
    params: { from: { ...path, description: 'existing path' }, to: { ...path, description: 'new path' } },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.rename(p.from as string, p.to as string),
  },
  {
    name: 'chmod',
    method: 'POST',
    summary: 'Changes permission bits (owner or root)',
    params: { path, mode: { type: 'mode', required: true, description: 'permission bits' } },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.chmod(p.path as string, p.mode as number),
  },
  {
    name: 'chown',
    method: 'POST',
    summary: 'Changes owner (root) or group (owner, to one of its groups)',
    params: { path, uid: { type: 'id', description: 'new owner' }, gid: { type: 'id', description: 'new group' } },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.chown(p.path as string, p.uid as number | undefined, p.gid as number | undefined),
  },
  {
    name: 'utimes',
    method: 'POST',
    summary: 'Sets access and modification times (owner or root)',
    params: {
      path,
      atimeNs: { type: 'ns', required: true, description: 'ns since the epoch' },
      mtimeNs: { type: 'ns', required: true, description: 'ns since the epoch' },
    },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.utimes(p.path as string, p.atimeNs as bigint, p.mtimeNs as bigint),
  },
  {
    name: 'truncate',
    method: 'POST',
    summary: 'Sets a file’s size: growing allocates zeroed blocks, shrinking frees unpinned ones',
    params: { path, size: { type: 'integer', required: true, description: 'bytes' } },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.truncateAsync(p.path as string, p.size as number),
  },
  {
    name: 'punch',
    method: 'POST',
    summary: 'Discards whole blocks of a file (they read as zeros); the file’s consumers acknowledge their invalidation first',
    params: {
      path,
      offset: { type: 'integer', required: true, description: 'byte offset, a multiple of the block size' },
      length: { type: 'integer', required: true, description: 'bytes, a multiple of the block size' },
    },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.punchAsync(p.path as string, p.offset as number, p.length as number),
  },
  {
    name: 'write',
    method: 'POST',
    summary: 'Writes bytes into a state or plain file, growing it as needed',
    params: {
      path,
      position: { type: 'integer', description: 'byte offset (default 0)' },
      data: { type: 'base64', required: true, description: 'the bytes, base64' },
    },
    response: { type: 'object', required: ['written'], properties: { written: integer } },
    mutates: true,
    run: (fs, p) => ({ written: fs.write(p.path as string, p.data as Uint8Array, (p.position as number | undefined) ?? 0) }),
  },
  {
    name: 'quota',
    method: 'POST',
    summary: 'Sets or removes (limitBytes null) a block limit for a uid or a directory tree (root)',
    params: {
      uid: { type: 'id', description: 'the uid to limit' },
      dir: { type: 'path', description: 'the directory tree to limit' },
      limitBytes: { type: 'bytes-or-null', required: true, description: 'bytes, rounded down to whole blocks; null removes' },
    },
    response: nothing,
    mutates: true,
    run: (fs, p) => fs.setQuota(quotaTarget(p), p.limitBytes as number | null),
  },
  {
    name: 'badblock',
    method: 'POST',
    summary: 'Quarantines a data block: never allocated again; the file holding it keeps it and is flagged (root)',
    params: { block: { type: 'integer', required: true, description: 'block number (byte offset / block size)' } },
    response: {
      type: 'object',
      required: ['block', 'alreadyQuarantined', 'heldBy'],
      properties: {
        block: integer,
        alreadyQuarantined: { type: 'boolean' },
        heldBy: { type: ['object', 'null'], properties: { ino: integer, path: { type: 'string' } } },
      },
    },
    mutates: true,
    run: (fs, p) => fs.quarantineBlock(p.block as number),
  },
  {
    name: 'resize',
    method: 'POST',
    summary:
      'Grows the pool (new pages reserved now, up to the size it was formatted for) or gives free blocks at its end back (root); ' +
      'files stay mapped',
    params: { size: { type: 'integer', required: true, description: 'bytes, a multiple of the block size' } },
    response: {
      type: 'object',
      required: ['from', 'to', 'blocks', 'ms'],
      properties: { from: integer, to: integer, blocks: { type: 'integer' }, ms: { type: 'number' } },
    },
    mutates: true,
    // Off the service's thread: its other clients are answered while new pages are allocated.
    run: (fs, p) => fs.resizeAsync(p.size as number),
  },
  {
    name: 'serialise',
    method: 'POST',
    summary: 'Serialises the metadata into the handover blob and freezes it: changes fail with EBUSY until abort (root)',
    params: {
      handoverVersion: {
        type: 'integer',
        description: 'the blob version: 2 (default), or 1 for a successor of a release that reads only version 1',
      },
    },
    response: {
      type: 'object',
      required: ['generation', 'bytes', 'files', 'mappingBlocks', 'handoverVersion'],
      properties: { generation: nsString, bytes: integer, files: integer, mappingBlocks: integer, handoverVersion: integer },
    },
    mutates: true,
    run: (fs, p) => {
      requireRoot(fs, 'serialise');
      const version = p.handoverVersion;
      if (version !== undefined && !isHandoverVersion(version)) {
        throw new GuestmemfsError(
          'EINVAL',
          `handoverVersion must be one of ${HANDOVER_VERSIONS.join(', ')}, got ${JSON.stringify(version)}`,
          {
            syscall: 'serialise',
          },
        );
      }
      const result = fs.serialise(version === undefined ? {} : { handoverVersion: version });
      return {
        generation: result.generation,
        bytes: result.blob.length,
        files: result.files,
        mappingBlocks: result.mappingBlocks,
        handoverVersion: result.handoverVersion,
      };
    },
  },
  {
    name: 'abort',
    method: 'POST',
    summary: 'Lifts the freeze of serialise: the blob goes stale and changes are allowed again (root)',
    params: {},
    response: { type: 'object', required: ['aborted'], properties: { aborted: nsString } },
    mutates: true,
    run: (fs) => {
      requireRoot(fs, 'abort');
      const generation = fs.superblock.generation;
      if (!fs.serialised) throw new GuestmemfsError('EINVAL', 'the pool is not serialised: nothing to abort', { syscall: 'abort' });
      fs.abort();
      return { aborted: generation };
    },
  },
  {
    name: 'reclaim',
    method: 'POST',
    summary: 'Frees unlinked files whose last pin has gone',
    params: {},
    response: { type: 'object', required: ['freed'], properties: { freed: integer } },
    mutates: true,
    run: (fs) => ({ freed: fs.reclaim() }),
  },
];

export const OPERATIONS_BY_ROUTE = new Map(
  OPERATIONS.map((operation) => [`${operation.method} ${API_PREFIX}/${operation.name}`, operation]),
);

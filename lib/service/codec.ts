// How parameters and results travel: the JSON Schema of each parameter type, the checks and conversions every
// request's parameters go through (the same for a query string and a JSON body), and the encoding of results and
// errors.
import { GuestmemfsError } from '../errors';
import { type JsonSchema, MAX_BODY_BYTES, nsString, type Operation, type ParamType } from './api';

/** The JSON Schema of one parameter type. */
export function paramSchema(type: ParamType): JsonSchema {
  switch (type) {
    case 'path':
    case 'string':
      return { type: 'string', maxLength: 4096 };
    case 'integer':
      return { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
    case 'mode':
      return { type: 'integer', minimum: 0, maximum: 0o7777 };
    case 'boolean':
      return { type: 'boolean' };
    case 'id':
      return { type: 'integer', minimum: -1, maximum: 0xfffffffe };
    case 'bytes-or-null':
      return { type: ['integer', 'null'], minimum: 0, maximum: Number.MAX_SAFE_INTEGER };
    case 'ns':
      return nsString;
    case 'base64':
      return { type: 'string', contentEncoding: 'base64', maxLength: MAX_BODY_BYTES };
    case 'file-type':
      return { enum: ['plain', 'guest', 'state'] };
  }
}

/** The error body every failure carries: Node's shape. */
export const ERROR_SCHEMA: JsonSchema = {
  type: 'object',
  required: ['code', 'errno', 'message'],
  properties: {
    code: { type: 'string' },
    errno: { type: 'integer', maximum: -1 },
    syscall: { type: 'string' },
    path: { type: 'string' },
    message: { type: 'string' },
  },
};

function invalid(operation: Operation, message: string): never {
  throw new GuestmemfsError('EINVAL', `${operation.name}: ${message}`, { syscall: operation.name });
}

/**
 * Checks and converts an operation's parameters: from a JSON body (POST) or a query string (GET, where every value is
 * a string). Unknown names are refused, not ignored: credentials, in particular, are never a parameter.
 */
export function decodeParams(operation: Operation, raw: Record<string, unknown>, fromQuery: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(raw)) {
    if (!Object.hasOwn(operation.params, name)) {
      invalid(operation, `unknown parameter '${name}' (it takes ${Object.keys(operation.params).join(', ') || 'none'})`);
    }
  }
  for (const [name, spec] of Object.entries(operation.params)) {
    let value = raw[name];
    if (value === undefined) {
      if (spec.required) invalid(operation, `parameter '${name}' is required`);
      continue;
    }
    if (fromQuery && typeof value === 'string' && spec.type !== 'path' && spec.type !== 'string' && spec.type !== 'file-type') {
      value = value === 'null' ? null : value === 'true' ? true : value === 'false' ? false : /^-?\d+$/.test(value) ? Number(value) : value;
    }
    out[name] = decodeValue(operation, name, spec.type, value);
  }
  return out;
}

function decodeValue(operation: Operation, name: string, type: ParamType, value: unknown): unknown {
  const schema = paramSchema(type);
  const bad = (what: string): never => invalid(operation, `parameter '${name}' must be ${what}`);
  switch (type) {
    case 'path':
    case 'string':
      if (typeof value !== 'string' || value.length > (schema.maxLength as number)) bad('a string of at most 4096 characters');
      return value;
    case 'file-type':
      if (value !== 'plain' && value !== 'guest' && value !== 'state') bad("one of 'plain', 'guest', 'state'");
      return value;
    case 'boolean':
      if (typeof value !== 'boolean') bad('true or false');
      return value;
    case 'bytes-or-null':
    case 'integer':
    case 'mode':
    case 'id':
      if (value === null && type === 'bytes-or-null') return null;
      if (
        !Number.isSafeInteger(value) ||
        (value as number) < (schema.minimum as number) ||
        (value as number) > (schema.maximum as number)
      ) {
        bad(`an integer from ${schema.minimum as number} to ${schema.maximum as number}`);
      }
      return value;
    case 'ns':
      if (typeof value !== 'string' || !/^[0-9]{1,20}$/.test(value) || BigInt(value) >= 1n << 64n)
        bad('a decimal string of nanoseconds below 2^64');
      return BigInt(value as string);
    case 'base64':
      if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) bad('base64 text');
      return new Uint8Array(Buffer.from(value as string, 'base64'));
  }
}

/** A result as JSON: bigints (times) become decimal strings, undefined an empty object. */
export function encodeResult(result: unknown): string {
  // Results carry bigints only as top-level fields (a Stat's times): converting those beats a replacer called on
  // every key of every result.
  if (result === undefined || result === null) return '{}';
  if (typeof result !== 'object' || Array.isArray(result)) return JSON.stringify(result);
  let copy: Record<string, unknown> | undefined;
  for (const key in result) {
    const value = (result as Record<string, unknown>)[key];
    if (typeof value !== 'bigint') continue;
    copy ??= { ...(result as Record<string, unknown>) };
    copy[key] = value.toString();
  }
  return JSON.stringify(copy ?? result);
}

/** How an error code reads as an HTTP status; the JSON body carries the code itself. */
export const STATUS: Readonly<Record<string, number>> = {
  EINVAL: 400,
  EISDIR: 400,
  ENOTDIR: 400,
  ENAMETOOLONG: 400,
  EACCES: 403,
  EPERM: 403,
  ENOENT: 404,
  EEXIST: 409,
  ENOTEMPTY: 409,
  EBUSY: 409,
  EROFS: 409,
  EAGAIN: 409,
  EMSGSIZE: 413,
  ENOSPC: 507,
  EDQUOT: 507,
};

/** What a failure reads as: its own code, or, for a fault of the service itself, EIO with the fault on stderr. */
export function asServiceError(error: unknown): GuestmemfsError {
  try {
    return GuestmemfsError.from(error);
  } catch {
    process.stderr.write(`guestmemfs mount: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    return new GuestmemfsError('EIO', 'internal error in the mount service (its log has the details)', { syscall: 'http' });
  }
}

/** Node's error shape, as JSON. */
export function errorBody(error: GuestmemfsError): Record<string, unknown> {
  return { code: error.code, errno: error.errno, syscall: error.syscall, path: error.path, message: error.message };
}

/** The error a JSON error body describes, in Node's shape again (the client's side of errorBody). */
export function errorFromBody(body: Record<string, unknown>, syscall: string, fallback: string): GuestmemfsError {
  return new GuestmemfsError(
    typeof body.code === 'string' ? body.code : 'EIO',
    typeof body.message === 'string' ? body.message : fallback,
    {
      syscall: typeof body.syscall === 'string' ? body.syscall : syscall,
      path: typeof body.path === 'string' ? body.path : undefined,
    },
  );
}

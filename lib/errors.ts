// Errors shaped like Node's system errors (code, negative errno, syscall, path) with a message that names the remedy.
import type { constants } from 'node:os';

let errnoByCode: Record<string, number> | undefined;

/** The errno of a code such as 'ENOENT'. node:os is loaded on the first error: an exec-mode VMM loads this module in its blackout. */
function errnoOf(code: string): number {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  errnoByCode ??= (require('node:os') as { constants: typeof constants }).constants.errno as Record<string, number>;
  return errnoByCode[code] ?? 0;
}

export interface ErrorFields {
  syscall?: string;
  path?: string;
}

export class GuestmemfsError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string | undefined;
  readonly path: string | undefined;

  constructor(code: string, message: string, fields: ErrorFields = {}) {
    super(message.startsWith(`${code}:`) ? message : `${code}: ${message}`);
    this.name = 'GuestmemfsError';
    this.code = code;
    this.errno = -errnoOf(code);
    this.syscall = fields.syscall;
    this.path = fields.path;
  }

  /** Converts a native (or any Node system) error into a GuestmemfsError, keeping its fields. */
  static from(error: unknown, fields: ErrorFields = {}): GuestmemfsError {
    if (error instanceof GuestmemfsError && fields.path === undefined) return error;
    const source = error as { code?: unknown; message?: unknown; syscall?: unknown; path?: unknown; stack?: unknown };
    if (error instanceof Error && typeof source.code === 'string') {
      const converted = new GuestmemfsError(source.code, String(source.message), {
        syscall: fields.syscall ?? (typeof source.syscall === 'string' ? source.syscall : undefined),
        path: fields.path ?? (typeof source.path === 'string' ? source.path : undefined),
      });
      return converted;
    }
    throw error;
  }

  /** A copy of this error whose message ends with what the operator should do about it. */
  withRemedy(remedy: string, fields: ErrorFields = {}): GuestmemfsError {
    return new GuestmemfsError(this.code, `${this.message}: ${remedy}`, {
      syscall: fields.syscall ?? this.syscall,
      path: fields.path ?? this.path,
    });
  }
}

/** True when `error` is a GuestmemfsError (or Node system error) with the given code. */
export function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

// The memfile notifier (Linux's memfile_notifier, 2022): consumers of a file's memory (KVM's memory slot, a device
// that DMAs by physical address) register on the file and are told invalidate(start, end) before any range of it
// stops being theirs: on shrink, on punch, and when an unlinked file's blocks are released.
//
// The rule that keeps a pool safe is the pins' (see pool/pins.ts): memory someone maps is never freed or zeroed, so an
// operation over a pinned range fails with EBUSY and tells nobody anything. The notifier covers what a pin cannot: a
// consumer that holds physical frames (get_pfn) rather than a mapping. Consumers in this process are called
// synchronously. A consumer in another process (through the mount service) is told by message. Until it acknowledges,
// the range stays its own: a shrink or punch waits for it, and an unlinked file stays an orphan.
import { GuestmemfsError } from '../errors';
import type { MountContext } from './context';

/** Nothing outside the consumer may read, write or map the file while it is registered (the file's data is its secret). */
export const MEMFILE_F_USER_INACCESSIBLE = 1 << 0;
/** The file's blocks never move (guestmemfs never migrates them; this flag records that the consumer relies on it). */
export const MEMFILE_F_UNMOVABLE = 1 << 1;
/** The file's memory is never reclaimed: the consumer's mappings are mlocked (which matters on the 4 KiB fallback). */
export const MEMFILE_F_UNRECLAIMABLE = 1 << 2;
export const MEMFILE_F_ALLOWED_MASK = MEMFILE_F_USER_INACCESSIBLE | MEMFILE_F_UNMOVABLE | MEMFILE_F_UNRECLAIMABLE;

/**
 * How long a change waits for consumers in other processes to acknowledge an invalidation before giving up (10 s;
 * GUESTMEMFS_ACKNOWLEDGE_TIMEOUT_MS sets it for a process, such as a mount service whose consumers answer faster).
 */
export const ACKNOWLEDGE_TIMEOUT_MS = acknowledgeTimeout(process.env.GUESTMEMFS_ACKNOWLEDGE_TIMEOUT_MS);

function acknowledgeTimeout(text: string | undefined): number {
  const value = Number(text);
  return text !== undefined && Number.isSafeInteger(value) && value > 0 ? value : 10_000;
}

/** The flags by name, for the CLI, the service and error messages. */
export const NOTIFIER_FLAG_NAMES: Readonly<Record<string, number>> = {
  'user-inaccessible': MEMFILE_F_USER_INACCESSIBLE,
  unmovable: MEMFILE_F_UNMOVABLE,
  unreclaimable: MEMFILE_F_UNRECLAIMABLE,
};

export interface NotifierConsumer {
  /**
   * [start, end) of the file, in bytes, is about to stop being the consumer's (freed, zeroed, or past the end). A
   * consumer in this process must have let go of it when this returns. An exception is reported as a warning: the
   * change goes ahead, since the consumer was told.
   */
  invalidate(start: number, end: number): void;
  /** Who this consumer is, for messages (say "KVM slot 0 of pid 1234"). */
  description?: string;
  /**
   * Set for a consumer in another process, told by message: invalidate() only sends, and acknowledged(seq) later
   * releases what it was told.
   */
  remote?: boolean;
  /** For a remote consumer registered again after the service's live update: where its sequence numbers go on. */
  firstSeq?: number;
}

/** One registration: what the registry keeps per consumer. */
export class Registration {
  readonly id: number;
  readonly ino: number;
  readonly flags: number;
  readonly consumer: NotifierConsumer;
  /** Sequence numbers of the invalidations sent to a remote consumer and not yet acknowledged. */
  readonly unacknowledged = new Set<number>();
  #settled: Array<() => void> = [];
  #nextSeq: number;
  revoked = false;

  constructor(id: number, ino: number, flags: number, consumer: NotifierConsumer) {
    this.#nextSeq = consumer.firstSeq ?? 1;
    this.id = id;
    this.ino = ino;
    this.flags = flags;
    this.consumer = consumer;
  }

  /** @internal The sequence number the next message to a remote consumer carries. */
  nextSeq(): number {
    return this.#nextSeq++;
  }

  /** The sequence number of the latest invalidation told (0 before any). */
  get lastSeq(): number {
    return this.#nextSeq - 1;
  }

  /** Resolves once every invalidation sent so far is acknowledged (or the consumer is gone). */
  settled(): Promise<void> {
    if (this.unacknowledged.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#settled.push(resolve));
  }

  /** @internal Wakes whoever waits in settled(). */
  wake(): void {
    if (this.unacknowledged.size > 0) return;
    const waiters = this.#settled;
    this.#settled = [];
    for (const waiter of waiters) waiter();
  }
}

function describe(registration: Registration): string {
  return registration.consumer.description ?? `notifier ${registration.id}`;
}

/** The consumers of one mount, by inode. Volatile, like the kernel's: a consumer registers again after a restart. */
export class NotifierRegistry {
  readonly #byIno = new Map<number, Set<Registration>>();
  readonly #byId = new Map<number, Registration>();
  #nextId = 1;

  register(ino: number, flags: number, consumer: NotifierConsumer): Registration {
    const registration = new Registration(this.#nextId++, ino, flags, consumer);
    let set = this.#byIno.get(ino);
    if (!set) this.#byIno.set(ino, (set = new Set()));
    set.add(registration);
    this.#byId.set(registration.id, registration);
    return registration;
  }

  unregister(registration: Registration): void {
    registration.revoked = true;
    registration.unacknowledged.clear();
    registration.wake();
    this.#byId.delete(registration.id);
    const set = this.#byIno.get(registration.ino);
    set?.delete(registration);
    if (set?.size === 0) this.#byIno.delete(registration.ino);
  }

  byId(id: number): Registration | undefined {
    return this.#byId.get(id);
  }

  consumers(ino: number): Registration[] {
    return [...(this.#byIno.get(ino) ?? [])];
  }

  /** The flags every consumer of the file asked for, or-ed. */
  flagsOf(ino: number): number {
    let flags = 0;
    for (const registration of this.#byIno.get(ino) ?? []) flags |= registration.flags;
    return flags;
  }

  /** Consumers whose invalidations are not all acknowledged: the range is still theirs. */
  unsettled(ino: number): Registration[] {
    return this.consumers(ino).filter((registration) => registration.unacknowledged.size > 0);
  }

  /** Resolves once every consumer of the file has acknowledged what it was told. */
  async settled(ino: number): Promise<void> {
    await Promise.all(this.unsettled(ino).map((registration) => registration.settled()));
  }

  /**
   * The whole file goes (its blocks are about to be released): each consumer not yet told so is told
   * invalidate(0, size), once. Those in this process are done with it then; remote ones stay until they acknowledge.
   */
  revoke(ino: number, size: number): void {
    const fresh = this.consumers(ino).filter((registration) => !registration.revoked);
    this.#tell(fresh, 0, Math.max(size, 1));
    for (const registration of fresh) {
      registration.revoked = true;
      if (!registration.consumer.remote) this.unregister(registration);
    }
  }

  /** Tells every consumer of the file that [start, end) goes; remote ones are sent a message and owe an acknowledgement. */
  invalidate(ino: number, start: number, end: number): void {
    if (end <= start) return;
    this.#tell(this.consumers(ino), start, end);
  }

  #tell(registrations: Registration[], start: number, end: number): void {
    for (const registration of registrations) {
      if (registration.consumer.remote) {
        const seq = registration.nextSeq();
        registration.unacknowledged.add(seq);
      }
      try {
        registration.consumer.invalidate(start, end);
      } catch (error) {
        process.emitWarning(`${describe(registration)} failed in invalidate(${start}, ${end}): ${(error as Error).message}`, {
          code: 'GUESTMEMFS_NOTIFIER',
        });
      }
    }
  }

  /** A remote consumer acknowledges invalidation `seq` (and every one before it: messages arrive in order). */
  acknowledge(registration: Registration, seq: number): void {
    for (const told of [...registration.unacknowledged]) if (told <= seq) registration.unacknowledged.delete(told);
    registration.wake();
  }

  /** The file's blocks are gone: its consumers were told, so their registrations end. */
  released(ino: number): void {
    for (const registration of this.consumers(ino)) this.unregister(registration);
  }
}

/**
 * Refuses a change to a range consumers in other processes have been told of but have not let go: EBUSY, with the
 * promise that resolves once they have (the mount service waits on it and retries).
 */
export function requireSettled(ctx: MountContext, ino: number, syscall: string, path: string): void {
  const unsettled = ctx.notifiers.unsettled(ino);
  if (unsettled.length === 0) return;
  const error = new GuestmemfsError(
    'EBUSY',
    `${unsettled.map(describe).join(', ')} ${unsettled.length === 1 ? 'has' : 'have'} not yet let go of the range, ${syscall} '${path}': ` +
      'retry once the consumer acknowledges its invalidation (the mount service waits for it)',
    { syscall, path },
  );
  Object.defineProperty(error, 'settled', { value: ctx.notifiers.settled(ino), enumerable: false });
  throw error;
}

/** The promise an EBUSY from requireSettled() carries, or undefined for any other error. */
export function settledOf(error: unknown): Promise<void> | undefined {
  return (error as { settled?: Promise<void> } | null)?.settled;
}

/** Refuses access to a file a consumer holds with MEMFILE_F_USER_INACCESSIBLE. */
export function requireUserAccessible(ctx: MountContext, ino: number, syscall: string, path: string): void {
  if ((ctx.notifiers.flagsOf(ino) & MEMFILE_F_USER_INACCESSIBLE) === 0) return;
  const holder = ctx.notifiers.consumers(ino).find((registration) => registration.flags & MEMFILE_F_USER_INACCESSIBLE)!;
  throw new GuestmemfsError(
    'EPERM',
    `${describe(holder)} holds '${path}' user-inaccessible, ${syscall} '${path}': only that consumer may map it; ` +
      'it must unregister first',
    { syscall, path },
  );
}

export function requireNotifierFlags(flags: number, path: string): number {
  if (!Number.isInteger(flags) || flags < 0 || (flags & ~MEMFILE_F_ALLOWED_MASK) !== 0) {
    throw new GuestmemfsError(
      'EINVAL',
      `notifier flags ${flags} are not a combination of ${Object.keys(NOTIFIER_FLAG_NAMES).join(', ')} (bits ${MEMFILE_F_ALLOWED_MASK})`,
      { syscall: 'memfile_register_notifier', path },
    );
  }
  return flags;
}

/**
 * Tells the file's consumers that [start, end) goes and waits until those in other processes have acknowledged, with
 * the file marked busy meanwhile (no unlink, truncate or write can slip in). ETIMEDOUT after ACKNOWLEDGE_TIMEOUT_MS.
 */
export async function invalidateAndSettle(
  ctx: MountContext,
  ino: number,
  start: number,
  end: number,
  syscall: string,
  path: string,
): Promise<void> {
  ctx.notifiers.invalidate(ino, start, end);
  if (ctx.notifiers.unsettled(ino).length === 0) return;
  ctx.busy.add(ino);
  let timer: NodeJS.Timeout | undefined;
  try {
    const timedOut = new Promise<'timeout'>((done) => (timer = setTimeout(() => done('timeout'), ACKNOWLEDGE_TIMEOUT_MS)));
    if ((await Promise.race([ctx.notifiers.settled(ino), timedOut])) === 'timeout') {
      const late = ctx.notifiers.unsettled(ino).map(describe).join(', ');
      throw new GuestmemfsError(
        'ETIMEDOUT',
        `${late} did not acknowledge its invalidation of '${path}' within ${ACKNOWLEDGE_TIMEOUT_MS} ms, ${syscall} '${path}': ` +
          'nothing changed; stop that consumer, or retry',
        { syscall, path },
      );
    }
  } finally {
    clearTimeout(timer);
    ctx.endBusy(ino);
  }
}

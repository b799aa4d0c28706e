// Public API of guestmemfs.
export { GuestmemfsError, hasCode } from './errors';
export { formatSize, parseSize, KiB, MiB, GiB, TiB } from './units';
export { Pool, SMALL_PAGE_SIZE, type CreatePoolOptions, type PoolBackend } from './pool/pool';
export { Mapping, type Extent, type MapOptions, type PhysicalFrame, type ProgressOptions } from './pool/mapping';
export {
  defaultHugePageSize,
  hugePageSizeInfo,
  hugePageSizes,
  hugetlbfsMounts,
  machineSupport,
  requireFreeHugePages,
  type HugePageSizeInfo,
  type HugetlbfsMount,
  type MachineSupport,
} from './pool/hugepages';
export { releaseReservation, reserveHugePages, type Reservation, type ReservationRecord, type ReserveOptions } from './pool/reserve';
export { native } from './native';
export {
  mkfs,
  mount,
  premapFile,
  Filesystem,
  type CreateOptions,
  type DirEntry,
  type FileMapOptions,
  type FormatInfo,
  type MkdirOptions,
  type MkfsOptions,
  type MountOptions,
  type Stat,
  type StatFs,
} from './fs/filesystem';
export type { FileTypeName } from './fs/inodes';
export type { Credentials } from './fs/permissions';
export type { Geometry, Superblock } from './fs/layout';
export type { KexecOptions, Recovery, Restore, SerialiseResult } from './fs/filesystem';
export { decodeHandoverBlob, HANDOVER_COMPATIBLE, POOL_FD_ENV, POOL_PATH_ENV, type HandoverDescription } from './handover/blob';
export { openHandedOverPool, spinForHandover, waitForHandover, type WaitOptions } from './handover/successor';
export { parseFdt, FdtWriter, FdtError } from './handover/fdt';
export { check, type CheckOptions, type CheckResult, type CheckState } from './fs/check';

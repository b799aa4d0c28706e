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
export { memoryNodes, type Placement } from './pool/numa';
export { mkfs } from './fs/format';
export { mount } from './fs/mount';
export { Filesystem } from './fs/filesystem';
export type {
  CreateOptions,
  DirEntry,
  FileMapOptions,
  FormatInfo,
  KexecOptions,
  MkdirOptions,
  MkfsOptions,
  MountOptions,
  Recovery,
  Restore,
  SerialiseResult,
  Stat,
  StatFs,
} from './fs/types';
export type { FileTypeName } from './fs/inodes';
export type { Credentials } from './fs/permissions';
export type { Geometry, Superblock } from './fs/layout';
export { decodeHandoverBlob } from './handover/blob-decode';
export {
  HANDOVER_COMPATIBLE,
  HANDOVER_VERSION,
  HANDOVER_VERSIONS,
  type HandoverDescription,
  type HandoverVersion,
  POOL_FD_ENV,
  POOL_PATH_ENV,
} from './handover/blob';
export { openHandedOverPool, premapFile, spinForHandover, waitForHandover, type WaitOptions } from './fs/successor';
export { EXEC_HOLDER_ENV, takeExecHolder, type ExecHolder } from './process';
export { parseFdt, FdtWriter, FdtError } from './handover/fdt';
export { check, type CheckOptions, type CheckResult, type CheckState } from './fs/check';
export { pinFiles, qemuArgs, type PinnedFile } from './fs/external';
export { Pin, type PinHolder } from './pool/pins';
export { connect, ServiceClient, type ConnectOptions, type ServiceInfo } from './service/client';
export { MountService, type ServeOptions } from './service/server';
export { defaultSocketPath, poolIdentityOf, runtimeDir } from './service/discovery';
export type { QuotaReport, QuotaTarget } from './fs/quota';
export type { ResizeOptions, ResizeResult } from './fs/resize';
export { MemfileNotifier, type PageFrame } from './fs/memfile';
export {
  MEMFILE_F_ALLOWED_MASK,
  MEMFILE_F_UNMOVABLE,
  MEMFILE_F_UNRECLAIMABLE,
  MEMFILE_F_USER_INACCESSIBLE,
  NOTIFIER_FLAG_NAMES,
  type NotifierConsumer,
} from './fs/notifier';

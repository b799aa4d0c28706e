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
export { reserveHugePages, type Reservation, type ReserveOptions } from './pool/reserve';
export { native } from './native';

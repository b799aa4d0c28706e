// Map syscall family: reserve a virtual range, stitch pool extents into it with MAP_FIXED, madvise/mlock,
// zero or populate it (optionally off the JS thread), and unmap it, detaching its ArrayBuffers first.
//
// ArrayBuffers are created on request (mappingBuffer), not with the mapping: V8 answers every large external
// backing store with a full mark-compact GC ("external memory pressure"), ~4 ms for 4 GiB, and guest RAM handed
// to KVM never needs one.
#include "gmfs_map.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_probe_loop.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace gmfs {

bool Mapping::Release() {
  bool expected = false;
  if (!released.compare_exchange_strong(expected, true)) return false;
  munmap(base, length);
  if (pinFd >= 0) close(pinFd);
  pinFd = -1;
  return true;
}

namespace {

constexpr int64_t kMaxBytes = 9007199254740992LL;
// Work granularity of zero/populate: large enough to amortise the syscall, small enough for smooth progress.
constexpr size_t kChunkBytes = 64u << 20;
constexpr uintptr_t kHugeAlignment = 2u << 20;

struct RegistryEntry {
  std::shared_ptr<Mapping> mapping;
  // Weak references to every buffer handed out over this mapping, so unmap can detach them all.
  std::vector<Napi::Reference<Napi::ArrayBuffer>> buffers;
};

// Per-environment state, so worker threads and environment teardown each see only their own mappings.
struct MapRegistry {
  std::unordered_map<uint32_t, RegistryEntry> entries;
  uint32_t nextId = 1;

  ~MapRegistry() {
    // Environment teardown: unmap what is left. A mapping with a worker still running is leaked rather
    // than pulled from under it.
    for (auto& [id, entry] : entries) {
      if (entry.mapping->busy.load() == 0) entry.mapping->Release();
      for (auto& buffer : entry.buffers) buffer.SuppressDestruct();
    }
  }

  void PruneReleased() {
    for (auto it = entries.begin(); it != entries.end();) {
      if (it->second.mapping->released.load()) {
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
  }
};

MapRegistry& Registry(Napi::Env env) {
  MapRegistry* registry = env.GetInstanceData<MapRegistry>();
  if (registry == nullptr) {
    registry = new MapRegistry();
    env.SetInstanceData(registry);
  }
  return *registry;
}

// mapExtents flags (exported as mapFlags) and the slots of its result array (exported as mapResult).
constexpr int64_t kMapPopulate = 1;
constexpr int64_t kMapWritable = 2;
constexpr int64_t kMapDontDump = 4;
constexpr int64_t kMapDontFork = 8;
constexpr int64_t kMapHugepage = 16;
constexpr int64_t kMapLock = 32;
constexpr int64_t kMapFlagsAll = kMapPopulate | kMapWritable | kMapDontDump | kMapDontFork | kMapHugepage | kMapLock;
enum MapResultSlot : size_t {
  kMapResultId,
  kMapResultAddress,
  kMapResultLength,
  kMapResultMmapCalls,
  kMapResultHugepageAdvice,
  kMapResultSlots,
};

// Hands the range [base, base + length) to this environment's registry, which unmaps it once; returns its id.
uint32_t RegisterMapping(Napi::Env env, uint8_t* base, size_t length) {
  auto mapping = std::make_shared<Mapping>();
  mapping->base = base;
  mapping->length = length;
  MapRegistry& registry = Registry(env);
  registry.PruneReleased();
  uint32_t id = registry.nextId++;
  registry.entries.emplace(id, RegistryEntry{mapping, {}});
  return id;
}

struct Extent {
  int64_t offset;  // in the file `fd` names
  int64_t length;
  int fd;
};

// A hybrid pool's 1 GiB-page file: extents from `largeFrom` on are in it, at their offset minus largeFrom.
constexpr int64_t kLargePage = 1LL << 30;

Napi::Value MapExtents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  // Plain numbers in and a Float64Array out, not option and result objects: every property name crossing N-API is
  // a string lookup, and on a re-map after other work they are cache misses, a measurable part of a 40 us map.
  auto isFloat64Array = [&](size_t index) {
    return info.Length() > index && info[index].IsTypedArray() &&
           info[index].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array;
  };
  if (!isFloat64Array(1) || !isFloat64Array(5) || info[5].As<Napi::Float64Array>().ElementLength() < kMapResultSlots) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap",
                    "mapExtents(fd, Float64Array [offset, length, ...], flags, alignment, congruence, Float64Array result"
                    "[, largeFd, largeFrom])");
  }
  // A hybrid pool's second file, of 1 GiB pages, holding the pool offsets from largeFrom on (none: -1).
  int largeFd = info.Length() > 6 && !info[6].IsUndefined() ? ArgFd(info, 6) : -1;
  int64_t largeFrom = largeFd >= 0 ? ArgInt64(info, 7, "largeFrom", kLargePage, kMaxBytes) : kMaxBytes;
  if (largeFd >= 0 && largeFrom % kLargePage != 0) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap", "largeFrom must be a multiple of 1 GiB");
  }
  Napi::Float64Array flat = info[1].As<Napi::Float64Array>();
  int64_t flags = ArgInt64(info, 2, "flags", 0, kMapFlagsAll);
  bool populate = (flags & kMapPopulate) != 0;
  bool writable = (flags & kMapWritable) != 0;
  bool dontDump = (flags & kMapDontDump) != 0;
  bool dontFork = (flags & kMapDontFork) != 0;
  bool hugepage = (flags & kMapHugepage) != 0;
  bool lock = (flags & kMapLock) != 0;
  int64_t alignment = ArgInt64(info, 3, "alignment", 4096, 1LL << 30);
  if ((alignment & (alignment - 1)) != 0) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap", "alignment must be a power of two between 4096 and 1 GiB");
  }
  int64_t congruence = ArgInt64(info, 4, "congruence", 0, 1LL << 30);
  if (congruence != 0 && (congruence < alignment || (congruence & (congruence - 1)) != 0)) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap", "congruence must be 0 or a power of two from the alignment up to 1 GiB");
  }
  Napi::Float64Array out = info[5].As<Napi::Float64Array>();
  size_t count = flat.ElementLength();
  if (count == 0 || count % 2 != 0) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap", "extents must be a non-empty list of [offset, length] pairs");
  }

  struct stat st;
  if (fstat(fd, &st) < 0) throw ErrnoError(env, errno, "fstat");
  struct stat largeSt {};
  if (largeFd >= 0 && fstat(largeFd, &largeSt) < 0) throw ErrnoError(env, errno, "fstat");
  if (largeFd >= 0 && congruence != 0) {
    throw CodeError(env, "EINVAL", EINVAL, "mmap", "congruence is for pools of 2 MiB pages only, not a hybrid pool");
  }

  // Re-check what JS validated: a bad extent here would map the wrong memory or SIGBUS later.
  std::vector<Extent> runs;
  runs.reserve(count / 2);
  int64_t total = 0;
  for (size_t i = 0; i < count; i += 2) {
    double offsetValue = flat[i];
    double lengthValue = flat[i + 1];
    int64_t offset = static_cast<int64_t>(offsetValue);
    int64_t length = static_cast<int64_t>(lengthValue);
    if (offsetValue != static_cast<double>(offset) || lengthValue != static_cast<double>(length) || offset < 0 ||
        length <= 0 || offset > kMaxBytes || length > kMaxBytes) {
      throw CodeError(env, "EINVAL", EINVAL, "mmap", "extent " + std::to_string(i / 2) + " is not a non-negative integer range");
    }
    if (offset % alignment != 0 || length % alignment != 0) {
      throw CodeError(env, "EINVAL", EINVAL, "mmap",
                      "extent " + std::to_string(i / 2) + " is not aligned to " + std::to_string(alignment) + " bytes");
    }
    bool large = offset >= largeFrom;
    int64_t fileOffset = large ? offset - largeFrom : offset;
    int64_t fileSize = large ? largeSt.st_size : std::min<int64_t>(st.st_size, largeFrom);
    if (large && (fileOffset % kLargePage != 0 || length % kLargePage != 0)) {
      throw CodeError(env, "EINVAL", EINVAL, "mmap",
                      "extent " + std::to_string(i / 2) + " is in the 1 GiB-page file but not aligned to 1 GiB");
    }
    if (fileOffset + length > fileSize) {
      throw CodeError(env, "EINVAL", EINVAL, "mmap",
                      "extent " + std::to_string(i / 2) + " ends at " + std::to_string(offset + length) +
                          ", beyond the pool's " + std::to_string(large ? largeFrom + fileSize : fileSize) + " bytes");
    }
    int runFd = large ? largeFd : fd;
    // One mmap per run of adjacent extents of one file: per-call VMA setup dominates stitching cost.
    if (!runs.empty() && runs.back().fd == runFd && runs.back().offset + runs.back().length == fileOffset) {
      runs.back().length += length;
    } else {
      runs.push_back({fileOffset, length, runFd});
    }
    total += length;
    if (total > kMaxBytes) throw CodeError(env, "EINVAL", EINVAL, "mmap", "extents add up to more than 2^53 bytes");
  }

  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  int mapFlags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  uint8_t* base = nullptr;
  auto failWith = [&](int err, const char* syscall) {
    if (base != nullptr) munmap(base, static_cast<size_t>(total));
    return ErrnoError(env, err, syscall);
  };

  // Where the first run of 1 GiB pages sits in the range: each must start at a 1 GiB-aligned address, so every one
  // must sit a whole number of GiB after the first, and the range is placed to put that one on a GiB boundary.
  int64_t firstLargeAt = -1;
  {
    int64_t position = 0;
    for (const Extent& run : runs) {
      if (run.fd == largeFd && largeFd >= 0) {
        if (firstLargeAt < 0) firstLargeAt = position;
        if ((position - firstLargeAt) % kLargePage != 0) {
          throw CodeError(env, "EINVAL", EINVAL, "mmap",
                          "the extents put 1 GiB pages at " + std::to_string(position) +
                              " bytes into the range, not a whole number of GiB after the first at " +
                              std::to_string(firstLargeAt));
        }
      }
      position += run.length;
    }
  }

  if (runs.size() == 1 && congruence == 0) {
    // One run needs no reservation: the kernel aligns hugetlbfs mappings to their page size itself, and every
    // extra mmap/munmap costs a TLB shootdown across this (multithreaded) process.
    void* piece = mmap(nullptr, static_cast<size_t>(total), prot, mapFlags, runs[0].fd, runs[0].offset);
    if (piece == MAP_FAILED) throw failWith(errno, "mmap");
    base = static_cast<uint8_t*>(piece);
    if (reinterpret_cast<uintptr_t>(base) % static_cast<uintptr_t>(alignment) != 0) {
      throw failWith(EINVAL, "mmap");  // not a hugetlbfs file of this page size: the caller's alignment is wrong
    }
  } else {
    // Reserve first so the stitched pieces are contiguous and nothing else lands between them, and place the start
    // where the first extent's file offset asks: hugetlb MAP_FIXED needs a huge-page-aligned address, and with a
    // congruence the address is the file offset modulo it, which lets the kernel share page tables with other
    // processes mapping the same file that way (hugetlb PMD sharing, per whole GiB).
    uintptr_t placement = static_cast<uintptr_t>(std::max(firstLargeAt >= 0 ? kLargePage : alignment, congruence));
    size_t reserveLength = static_cast<size_t>(total) + placement;
    void* reserved = mmap(nullptr, reserveLength, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) throw ErrnoError(env, errno, "mmap");
    uintptr_t start = reinterpret_cast<uintptr_t>(reserved);
    uintptr_t residue = firstLargeAt >= 0 ? (placement - static_cast<uintptr_t>(firstLargeAt) % placement) % placement
                                          : static_cast<uintptr_t>(runs[0].offset) & (placement - 1);
    uintptr_t aligned = start + ((residue - start) & (placement - 1));  // the first address >= start with that residue
    if (aligned > start) munmap(reserved, aligned - start);
    uintptr_t end = start + reserveLength;
    uintptr_t alignedEnd = aligned + static_cast<uintptr_t>(total);
    if (end > alignedEnd) munmap(reinterpret_cast<void*>(alignedEnd), end - alignedEnd);
    base = reinterpret_cast<uint8_t*>(aligned);
    size_t position = 0;
    for (const Extent& run : runs) {
      void* piece = mmap(base + position, static_cast<size_t>(run.length), prot, mapFlags | MAP_FIXED, run.fd, run.offset);
      if (piece == MAP_FAILED) throw failWith(errno, "mmap");
      position += static_cast<size_t>(run.length);
    }
  }
  if (dontDump && madvise(base, total, MADV_DONTDUMP) < 0) throw failWith(errno, "madvise");
  if (dontFork && madvise(base, total, MADV_DONTFORK) < 0) throw failWith(errno, "madvise");
  // MADV_HUGEPAGE is advice for the 4 KiB fallback; shmem may refuse it (shmem_enabled=never), which is not an error.
  bool hugepageAccepted = hugepage && madvise(base, total, MADV_HUGEPAGE) == 0;
  if (lock && mlock(base, total) < 0) throw failWith(errno, "mlock");

  uint32_t id = RegisterMapping(env, base, static_cast<size_t>(total));

  out[kMapResultId] = id;
  out[kMapResultAddress] = static_cast<double>(reinterpret_cast<uintptr_t>(base));  // user addresses fit in 2^53
  out[kMapResultLength] = static_cast<double>(total);
  out[kMapResultMmapCalls] = static_cast<double>(runs.size());
  out[kMapResultHugepageAdvice] = hugepageAccepted ? 1 : 0;
  return env.Undefined();
}

// mapAnonymous(length, hugepage): private anonymous memory for a table the filesystem builds at each mount (the name
// index), returned as a mapping id for mappingBuffer and unmap. With hugepage, 2 MiB-aligned and advised
// MADV_HUGEPAGE: where the kernel can back it with transparent huge pages, a 2 MiB table costs one page fault, not
// 512 (in a VM that shadows page tables, 4 KiB faults cost ~13 us each: 7 ms for a 100,000-file index).
Napi::Value MapAnonymous(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t length = ArgInt64(info, 0, "length", 4096, kMaxBytes);
  if (length % 4096 != 0) throw CodeError(env, "EINVAL", EINVAL, "mmap", "length must be a multiple of 4096");
  bool hugepage = info.Length() > 1 && info[1].ToBoolean().Value();
  size_t bytes = static_cast<size_t>(length);
  size_t slack = hugepage ? kHugeAlignment : 0;
  void* reserved = mmap(nullptr, bytes + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reserved == MAP_FAILED) throw ErrnoError(env, errno, "mmap");
  uintptr_t start = reinterpret_cast<uintptr_t>(reserved);
  uintptr_t aligned = hugepage ? (start + kHugeAlignment - 1) & ~(kHugeAlignment - 1) : start;
  if (aligned > start) munmap(reserved, aligned - start);
  if (start + slack > aligned) munmap(reinterpret_cast<void*>(aligned + bytes), start + slack - aligned);
  uint8_t* base = reinterpret_cast<uint8_t*>(aligned);
  // Advice only: with THP off (enabled=never) the memory is still there, in 4 KiB pages.
  if (hugepage) madvise(base, bytes, MADV_HUGEPAGE);
  return Napi::Number::New(env, RegisterMapping(env, base, bytes));
}

uint32_t ArgId(const Napi::CallbackInfo& info) {
  return static_cast<uint32_t>(ArgInt64(info, 0, "id", 1, std::numeric_limits<uint32_t>::max()));
}

// Detach before munmap: from then on any access through a buffer throws a TypeError instead of faulting.
void DetachAndRelease(MapRegistry& registry, std::unordered_map<uint32_t, RegistryEntry>::iterator it) {
  for (auto& weak : it->second.buffers) {
    if (weak.IsEmpty()) continue;
    Napi::ArrayBuffer buffer = weak.Value();
    if (!buffer.IsEmpty() && !buffer.IsDetached()) buffer.Detach();
  }
  it->second.mapping->Release();
  registry.entries.erase(it);
}

// unmap(id, deferIfBusy): an explicit unmap refuses while async work runs; the garbage collector's unmap
// (deferIfBusy) instead leaves the munmap to the last worker.
Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgId(info);
  bool deferIfBusy = info.Length() > 1 && info[1].ToBoolean().Value();
  MapRegistry& registry = Registry(env);
  auto it = registry.entries.find(id);
  if (it == registry.entries.end() || it->second.mapping->released.load()) {
    throw CodeError(env, "EINVAL", EINVAL, "munmap", "mapping " + std::to_string(id) + " is not mapped");
  }
  if (it->second.mapping->busy.load() != 0) {
    if (deferIfBusy) {
      it->second.mapping->releaseWhenIdle = true;
      return env.Undefined();
    }
    throw CodeError(env, "EBUSY", EBUSY, "munmap",
                    "mapping " + std::to_string(id) + " has zero/populate work in flight; await it before unmapping");
  }
  DetachAndRelease(registry, it);
  return env.Undefined();
}

// An external ArrayBuffer over [offset, offset+length) of the mapping. It does not own the memory: the mapping
// does, and unmap detaches every buffer it handed out.
Napi::Value MappingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgId(info);
  std::shared_ptr<Mapping> mapping = LookupMapping(env, id, "buffer");
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 0, kMaxBytes);
  CheckRange(env, *mapping, offset, length, "buffer");
  RegistryEntry& entry = Registry(env).entries.at(id);
  // Forget buffers the GC already collected, so a long-lived mapping's list stays short.
  entry.buffers.erase(std::remove_if(entry.buffers.begin(), entry.buffers.end(),
                                     [](Napi::Reference<Napi::ArrayBuffer>& weak) { return weak.Value().IsEmpty(); }),
                      entry.buffers.end());
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, mapping->base + offset, static_cast<size_t>(length));
  entry.buffers.push_back(Napi::Weak(buffer));
  return buffer;
}

Napi::Value Madvise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Mapping> mapping = LookupMapping(env, ArgId(info), "madvise");
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  int advice = static_cast<int>(ArgInt64(info, 3, "advice", 0, 1000));
  CheckRange(env, *mapping, offset, length, "madvise");
  if (madvise(mapping->base + offset, static_cast<size_t>(length), advice) < 0) throw ErrnoError(env, errno, "madvise");
  return env.Undefined();
}

Napi::Value Mlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Mapping> mapping = LookupMapping(env, ArgId(info), "mlock");
  bool lock = ArgBool(info, 1, "lock");
  int rc = lock ? mlock(mapping->base, mapping->length) : munlock(mapping->base, mapping->length);
  if (rc < 0) throw ErrnoError(env, errno, lock ? "mlock" : "munlock");
  return env.Undefined();
}

Napi::Value ZeroSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Mapping> mapping = LookupMapping(env, ArgId(info), "memset");
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  CheckRange(env, *mapping, offset, length, "memset");
  std::memset(mapping->base + offset, 0, static_cast<size_t>(length));
  return env.Undefined();
}

enum class RangeWork { kZero, kPopulateRead, kPopulateWrite };

// Zeroes or pre-faults a range on a libuv pool thread, reporting bytes done, so gigabytes of memory work
// never block the event loop.
class RangeWorker : public Napi::AsyncProgressWorker<uint64_t> {
 public:
  RangeWorker(Napi::Env env, Napi::Function noop, uint32_t id, std::shared_ptr<Mapping> mapping, RangeWork work,
              int64_t offset, int64_t length, Napi::Function onProgress)
      : Napi::AsyncProgressWorker<uint64_t>(noop, "guestmemfs.rangeWork"),
        deferred_(Napi::Promise::Deferred::New(env)),
        id_(id),
        mapping_(std::move(mapping)),
        work_(work),
        offset_(offset),
        length_(length) {
    if (!onProgress.IsEmpty()) onProgress_ = Napi::Persistent(onProgress);
    mapping_->busy.fetch_add(1);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& progress) override {
    uint8_t* start = mapping_->base + offset_;
    uint64_t done = 0;
    uint64_t total = static_cast<uint64_t>(length_);
    while (done < total) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, total - done));
      if (work_ == RangeWork::kZero) {
        std::memset(start + done, 0, chunk);
      } else {
        int advice = work_ == RangeWork::kPopulateWrite ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
        int rc;
        do {
          rc = madvise(start + done, chunk, advice);
        } while (rc < 0 && errno == EINTR);
        if (rc < 0) {
          errno_ = errno;
          SetError("madvise");
          return;
        }
      }
      done += chunk;
      progress.Send(&done, 1);
    }
  }

  void OnProgress(const uint64_t* data, size_t count) override {
    if (count == 0 || onProgress_.IsEmpty()) return;
    Napi::Env env = Env();
    onProgress_.Call({Napi::Number::New(env, static_cast<double>(data[0])), Napi::Number::New(env, static_cast<double>(length_))});
  }

  void OnOK() override {
    Finish();
    deferred_.Resolve(Env().Undefined());
  }

  void OnError(const Napi::Error& error) override {
    Finish();
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(Env(), errno_, "madvise").Value());
    } else {
      deferred_.Reject(error.Value());
    }
  }

 private:
  void Finish() { EndMappingWork(Env(), id_, *mapping_); }

  Napi::Promise::Deferred deferred_;
  uint32_t id_;
  std::shared_ptr<Mapping> mapping_;
  Napi::FunctionReference onProgress_;
  RangeWork work_;
  int64_t offset_;
  int64_t length_;
  int errno_ = 0;
};

Napi::Value Noop(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

Napi::Value StartRangeWork(const Napi::CallbackInfo& info, RangeWork work, const char* syscall) {
  Napi::Env env = info.Env();
  uint32_t id = ArgId(info);
  std::shared_ptr<Mapping> mapping = LookupMapping(env, id, syscall);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  CheckRange(env, *mapping, offset, length, syscall);
  Napi::Function onProgress;
  if (info.Length() > 3 && info[3].IsFunction()) onProgress = info[3].As<Napi::Function>();
  auto* worker = new RangeWorker(env, Napi::Function::New(env, Noop), id, mapping, work, offset, length, onProgress);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value ZeroAsync(const Napi::CallbackInfo& info) { return StartRangeWork(info, RangeWork::kZero, "memset"); }

Napi::Value PopulateAsync(const Napi::CallbackInfo& info) {
  bool write = info.Length() > 4 && info[4].ToBoolean().Value();
  return StartRangeWork(info, write ? RangeWork::kPopulateWrite : RangeWork::kPopulateRead, "madvise");
}

// mapProbe(id, offset, length, ops, seed, dependent) -> { ns, sum }: random 8-byte reads over part of a mapping,
// timed with CLOCK_MONOTONIC (bench:access; the C baseline runs the same loop from gmfs_probe_loop.h).
Napi::Value MapProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Mapping> mapping = LookupMapping(env, ArgId(info), "mapProbe");
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMax);
  int64_t length = ArgInt64(info, 2, "length", 8, kMax);
  int64_t ops = ArgInt64(info, 3, "ops", 0, kMax);
  uint64_t seed = static_cast<uint64_t>(ArgInt64(info, 4, "seed", 0, kMax));
  bool dependent = ArgBool(info, 5, "dependent");
  CheckRange(env, *mapping, offset, length, "mapProbe");
  if (offset % 8 != 0) throw CodeError(env, "EINVAL", EINVAL, "mapProbe", "offset must be 8-byte aligned");
  const uint64_t* words = reinterpret_cast<const uint64_t*>(mapping->base + offset);
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  uint64_t sum = gmfs_probe_random(words, static_cast<uint64_t>(length) / 8, static_cast<uint64_t>(ops), seed, dependent);
  clock_gettime(CLOCK_MONOTONIC, &end);
  Napi::Object result = Napi::Object::New(env);
  result.Set("ns", static_cast<double>(end.tv_sec - start.tv_sec) * 1e9 + static_cast<double>(end.tv_nsec - start.tv_nsec));
  result.Set("sum", Napi::BigInt::New(env, sum));
  return result;
}

// mappingAttachPin(id, fd): the mapping takes ownership of fd (the pins over its memory) and closes it when unmapped.
Napi::Value MappingAttachPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<Mapping> mapping = LookupMapping(env, ArgId(info), "mmap");
  int fd = ArgFd(info, 1);
  if (mapping->pinFd >= 0) throw CodeError(env, "EBUSY", EBUSY, "mmap", "the mapping already holds its pins");
  mapping->pinFd = fd;
  return env.Undefined();
}

Napi::Value LiveMappings(const Napi::CallbackInfo& info) {
  MapRegistry& registry = Registry(info.Env());
  registry.PruneReleased();
  return Napi::Number::New(info.Env(), static_cast<double>(registry.entries.size()));
}

}  // namespace

void EndMappingWork(Napi::Env env, uint32_t id, Mapping& mapping) {
  if (mapping.busy.fetch_sub(1) != 1 || !mapping.releaseWhenIdle) return;
  MapRegistry& registry = Registry(env);
  auto it = registry.entries.find(id);
  if (it != registry.entries.end()) DetachAndRelease(registry, it);
}

std::shared_ptr<Mapping> LookupMapping(Napi::Env env, uint32_t id, const char* syscall) {
  MapRegistry& registry = Registry(env);
  auto it = registry.entries.find(id);
  if (it == registry.entries.end() || it->second.mapping->released.load()) {
    throw CodeError(env, "EINVAL", EINVAL, syscall, "mapping " + std::to_string(id) + " is not mapped (already unmapped?)");
  }
  return it->second.mapping;
}

void CheckRange(Napi::Env env, const Mapping& mapping, int64_t offset, int64_t length, const char* syscall) {
  if (offset < 0 || length < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(length) > mapping.length) {
    throw CodeError(env, "EINVAL", EINVAL, syscall,
                    "range [" + std::to_string(offset) + ", +" + std::to_string(length) + ") is outside the " +
                        std::to_string(mapping.length) + "-byte mapping");
  }
}

MappedRange MappedRangeArg(const Napi::CallbackInfo& info, const char* syscall) {
  Napi::Env env = info.Env();
  uint32_t id = static_cast<uint32_t>(ArgInt64(info, 0, "id", 1, std::numeric_limits<uint32_t>::max()));
  MappedRange range;
  range.mapping = LookupMapping(env, id, syscall);
  range.offset = ArgInt64(info, 1, "offset", 0, 1LL << 53);
  range.length = ArgInt64(info, 2, "length", 1, 1LL << 53);
  CheckRange(env, *range.mapping, range.offset, range.length, syscall);
  return range;
}

size_t StepsArg(const Napi::CallbackInfo& info, const MappedRange& range, size_t maxSteps, const char* syscall, int64_t* stride) {
  Napi::Env env = info.Env();
  *stride = ArgInt64(info, 3, "stride", 4096, 1LL << 30);
  if (*stride % 4096 != 0 || range.offset % 4096 != 0) {
    throw CodeError(env, "EINVAL", EINVAL, syscall, "offset and stride must be multiples of 4096");
  }
  size_t count = static_cast<size_t>((range.length + *stride - 1) / *stride);
  if (count > maxSteps) throw CodeError(env, "EINVAL", EINVAL, syscall, "too many pages asked about; use a larger stride");
  return count;
}

// An object of named numbers: constants JS and C++ must agree on, defined once, here.
static Napi::Object NumberTable(Napi::Env env, std::initializer_list<std::pair<const char*, double>> entries) {
  Napi::Object table = Napi::Object::New(env);
  for (const auto& [name, value] : entries) table.Set(name, value);
  return table;
}

void RegisterMapFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("mapExtents", Napi::Function::New(env, MapExtents, "mapExtents"));
  exports.Set("mapAnonymous", Napi::Function::New(env, MapAnonymous, "mapAnonymous"));
  exports.Set("unmap", Napi::Function::New(env, Unmap, "unmap"));
  exports.Set("mappingBuffer", Napi::Function::New(env, MappingBuffer, "mappingBuffer"));
  exports.Set("madvise", Napi::Function::New(env, Madvise, "madvise"));
  exports.Set("mlock", Napi::Function::New(env, Mlock, "mlock"));
  exports.Set("zero", Napi::Function::New(env, ZeroSync, "zero"));
  exports.Set("zeroAsync", Napi::Function::New(env, ZeroAsync, "zeroAsync"));
  exports.Set("populateAsync", Napi::Function::New(env, PopulateAsync, "populateAsync"));
  exports.Set("liveMappings", Napi::Function::New(env, LiveMappings, "liveMappings"));
  exports.Set("mappingAttachPin", Napi::Function::New(env, MappingAttachPin, "mappingAttachPin"));
  exports.Set("mapProbe", Napi::Function::New(env, MapProbe, "mapProbe"));
  exports.Set("advice", NumberTable(env, {{"MADV_NORMAL", MADV_NORMAL},
                                          {"MADV_WILLNEED", MADV_WILLNEED},
                                          {"MADV_DONTNEED", MADV_DONTNEED},
                                          {"MADV_DONTFORK", MADV_DONTFORK},
                                          {"MADV_DOFORK", MADV_DOFORK},
                                          {"MADV_DONTDUMP", MADV_DONTDUMP},
                                          {"MADV_DODUMP", MADV_DODUMP},
                                          {"MADV_HUGEPAGE", MADV_HUGEPAGE},
                                          {"MADV_NOHUGEPAGE", MADV_NOHUGEPAGE},
                                          {"MADV_POPULATE_READ", MADV_POPULATE_READ},
                                          {"MADV_POPULATE_WRITE", MADV_POPULATE_WRITE}}));
  exports.Set("mapFlags", NumberTable(env, {{"populate", kMapPopulate},
                                            {"writable", kMapWritable},
                                            {"dontDump", kMapDontDump},
                                            {"dontFork", kMapDontFork},
                                            {"hugepage", kMapHugepage},
                                            {"lock", kMapLock}}));
  exports.Set("mapResult", NumberTable(env, {{"id", kMapResultId},
                                             {"address", kMapResultAddress},
                                             {"length", kMapResultLength},
                                             {"mmapCalls", kMapResultMmapCalls},
                                             {"hugepageAdvice", kMapResultHugepageAdvice},
                                             {"slots", kMapResultSlots}}));
}

}  // namespace gmfs

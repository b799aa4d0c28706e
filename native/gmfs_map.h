// Live mappings of pool memory, shared by the map, pagemap and NUMA families.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace gmfs {

// One contiguous virtual range stitched from pool extents. The registry owns it until unmap or environment
// teardown; async workers share ownership so an unmap requested mid-work (by GC) completes when they finish.
struct Mapping {
  uint8_t* base = nullptr;
  size_t length = 0;
  std::atomic<int> busy{0};  // async zero/populate workers in flight; explicit unmap refuses while non-zero
  std::atomic<bool> released{false};
  bool releaseWhenIdle = false;  // set by a deferred unmap; the last worker to finish performs it
  // The open file description holding this mapping's pins (OFD read locks over its extents), closed right after the
  // munmap, whichever path unmaps: explicit, the collector's (possibly deferred to the last worker), or teardown.
  int pinFd = -1;

  // munmap exactly once, whoever gets here first, then let go of the pins.
  bool Release();
};

// The mapping registered under id in this environment, or a thrown EINVAL naming the id.
std::shared_ptr<Mapping> LookupMapping(Napi::Env env, uint32_t id, const char* syscall);

// Ends a worker's use of a mapping (begun with busy.fetch_add(1)), on the JS thread: performs an unmap that the
// collector requested meanwhile, once the last worker is done.
void EndMappingWork(Napi::Env env, uint32_t id, Mapping& mapping);

// Checks [offset, offset+length) lies inside the mapping; throws ERANGE-style EINVAL otherwise.
void CheckRange(Napi::Env env, const Mapping& mapping, int64_t offset, int64_t length, const char* syscall);

// A range of a live mapping taken from [id, offset, length] at info[0..2], checked to lie inside it.
struct MappedRange {
  std::shared_ptr<Mapping> mapping;
  int64_t offset = 0;
  int64_t length = 0;
  uint8_t* start() const { return mapping->base + offset; }
};
MappedRange MappedRangeArg(const Napi::CallbackInfo& info, const char* syscall);

// For a query per page: the stride at info[3] (a multiple of 4096, as the offset must be) and how many steps of it
// the range holds, at most `maxSteps`.
size_t StepsArg(const Napi::CallbackInfo& info, const MappedRange& range, size_t maxSteps, const char* syscall, int64_t* stride);

}  // namespace gmfs

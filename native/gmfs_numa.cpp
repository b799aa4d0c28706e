// NUMA family: binds a mapping's range to one node before its pages are allocated (mbind) and reports the node each
// page is on (move_pages without a target: a query), the proof of a per-node pool's placement.
#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_map.h"

namespace gmfs {
namespace {

// Node numbers a nodemask of this many bits can name; Linux's MAX_NUMNODES is at most 1024.
constexpr int kMaxNodes = 1024;
constexpr size_t kMaxPages = 1u << 24;

// numaBind(id, offset, length, node): MPOL_BIND of [offset, offset+length) of a mapping to `node`, strict: pages
// already allocated elsewhere make it fail (EIO) instead of being silently left there. Faults in the range then
// allocate on that node only, or fail.
Napi::Value NumaBind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MappedRange range = MappedRangeArg(info, "mbind");
  int node = static_cast<int>(ArgInt64(info, 3, "node", 0, kMaxNodes - 1));
  std::vector<unsigned long> mask(kMaxNodes / (8 * sizeof(unsigned long)), 0);
  mask[node / (8 * sizeof(unsigned long))] |= 1UL << (node % (8 * sizeof(unsigned long)));
  // maxnode counts one bit past the mask: the kernel reads maxnode - 1 bits.
  if (syscall(SYS_mbind, range.start(), static_cast<unsigned long>(range.length), MPOL_BIND, mask.data(),
              static_cast<unsigned long>(kMaxNodes + 1), MPOL_MF_STRICT) < 0) {
    throw ErrnoError(env, errno, "mbind");
  }
  return env.Undefined();
}

// numaPageNodes(id, offset, length, stride): the node of the page at every stride-sized step, or a negative errno
// for a page that is not there (-ENOENT: not yet faulted in). One move_pages(2) call, which moves nothing: with no
// target nodes it only reports.
Napi::Value NumaPageNodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MappedRange range = MappedRangeArg(info, "move_pages");
  int64_t stride = 0;
  size_t count = StepsArg(info, range, kMaxPages, "move_pages", &stride);
  std::vector<void*> pages(count);
  for (size_t i = 0; i < count; ++i) pages[i] = range.start() + static_cast<int64_t>(i) * stride;
  Napi::Int32Array status = Napi::Int32Array::New(env, count);
  if (syscall(SYS_move_pages, 0, static_cast<unsigned long>(count), pages.data(), nullptr, status.Data(), 0) < 0) {
    throw ErrnoError(env, errno, "move_pages");
  }
  return status;
}

}  // namespace

void RegisterNumaFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("numaBind", Napi::Function::New(env, NumaBind, "numaBind"));
  exports.Set("numaPageNodes", Napi::Function::New(env, NumaPageNodes, "numaPageNodes"));
}

}  // namespace gmfs

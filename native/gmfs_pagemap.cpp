// Pagemap family: reads /proc/self/pagemap entries behind a mapping, the proof that the same physical pages survive.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_map.h"

namespace gmfs {
namespace {

constexpr size_t kMaxEntries = 1u << 24;

// Returns the raw 64-bit entry (present bit 63, PFN in bits 0-54) for the first 4 KiB page of every
// stride-sized step; decoding lives in TypeScript. Without CAP_SYS_ADMIN the kernel reports PFN 0.
Napi::Value PagemapEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MappedRange range = MappedRangeArg(info, "pread");
  int64_t stride = 0;
  size_t count = StepsArg(info, range, kMaxEntries, "pread", &stride);
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", "/proc/self/pagemap");
  Napi::BigUint64Array entries = Napi::BigUint64Array::New(env, count);
  uintptr_t first = reinterpret_cast<uintptr_t>(range.start());
  for (size_t i = 0; i < count; ++i) {
    uint64_t entry = 0;
    off_t position = static_cast<off_t>(((first + i * static_cast<uintptr_t>(stride)) / 4096) * sizeof(uint64_t));
    ssize_t got = pread(fd, &entry, sizeof(entry), position);
    if (got != static_cast<ssize_t>(sizeof(entry))) {
      int err = got < 0 ? errno : EIO;
      close(fd);
      throw ErrnoError(env, err, "pread", "/proc/self/pagemap");
    }
    entries[i] = entry;
  }
  close(fd);
  return entries;
}

}  // namespace

void RegisterPagemapFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("pagemapEntries", Napi::Function::New(env, PagemapEntries, "pagemapEntries"));
}

}  // namespace gmfs

// Futex family: waiting on and waking a 32-bit word in a mapping, across processes (a shared futex keys on the file
// page), so that a process waiting for another's write sleeps instead of spinning on a CPU the writer needs.
#include <cerrno>
#include <climits>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_futex.h"
#include "gmfs_map.h"

namespace gmfs {
namespace {

uint32_t* WordArg(const Napi::CallbackInfo& info, const char* syscall) {
  Napi::Env env = info.Env();
  uint32_t id = static_cast<uint32_t>(ArgInt64(info, 0, "mapping", 1, 0xffffffff));
  int64_t offset = ArgInt64(info, 1, "offset", 0, 1LL << 53);
  std::shared_ptr<Mapping> mapping = LookupMapping(env, id, syscall);
  CheckRange(env, *mapping, offset, 4, syscall);
  if (offset % 4 != 0) throw CodeError(env, "EINVAL", EINVAL, syscall, "a futex word must be 4-byte aligned");
  return reinterpret_cast<uint32_t*>(mapping->base + offset);
}

// futexWait(mapping, offset, expected, timeoutMs): sleeps while the word holds `expected`, for at most timeoutMs.
// 'woken' (woken, or the word changed before the wait), or 'timeout'.
Napi::Value FutexWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t* word = WordArg(info, "futex");
  uint32_t expected = static_cast<uint32_t>(ArgInt64(info, 2, "expected", 0, 0xffffffff));
  int64_t timeoutMs = ArgInt64(info, 3, "timeoutMs", 0, INT_MAX);
  timespec timeout{static_cast<time_t>(timeoutMs / 1000), static_cast<long>((timeoutMs % 1000) * 1000000)};
  for (;;) {
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) return Napi::String::New(env, "woken");
    long rc = FutexWaitWhile(word, expected, &timeout);
    if (rc == 0 || errno == EAGAIN) return Napi::String::New(env, "woken");
    if (errno == ETIMEDOUT) return Napi::String::New(env, "timeout");
    if (errno != EINTR) throw ErrnoError(env, errno, "futex");
  }
}

// futexWake(mapping, offset): wakes every waiter on the word; returns how many woke.
Napi::Value FutexWake(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t* word = WordArg(info, "futex");
  long woken = FutexWakeAll(word);
  if (woken < 0) throw ErrnoError(env, errno, "futex");
  return Napi::Number::New(env, static_cast<double>(woken));
}

}  // namespace

void RegisterFutexFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("futexWait", Napi::Function::New(env, FutexWait, "futexWait"));
  exports.Set("futexWake", Napi::Function::New(env, FutexWake, "futexWake"));
}

}  // namespace gmfs

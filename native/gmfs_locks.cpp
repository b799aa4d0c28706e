// Record-lock family: open-file-description byte-range locks (fcntl F_OFD_SETLK/SETLKW/GETLK) over the pool file, and
// reopening the pool through /proc/self/fd to get a new open file description to hold them on.
//
// OFD locks belong to the open file description, not the process: they survive execve while the fd is kept, are shared
// by fds dup'ed or inherited from it, and go when the last of those closes, SIGKILL included. That makes them pins the
// kernel tracks for any process that maps the pool.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gmfs_errors.h"
#include "gmfs_families.h"

namespace gmfs {
namespace {

constexpr int64_t kMaxBytes = 9007199254740992LL;  // 2^53: exact in a JS number

struct flock RangeOf(short type, int64_t offset, int64_t length) {
  struct flock lock = {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = offset;
  lock.l_len = length;
  lock.l_pid = 0;  // OFD locks require 0
  return lock;
}

// rangeLock(fd, offset, length, exclusive, wait): false when another open file description holds a conflicting lock
// and wait is false.
Napi::Value RangeLock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  bool exclusive = ArgBool(info, 3, "exclusive");
  bool wait = ArgBool(info, 4, "wait");
  struct flock lock = RangeOf(exclusive ? F_WRLCK : F_RDLCK, offset, length);
  int rc;
  do {
    rc = fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &lock);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    if (errno == EAGAIN || errno == EACCES) return Napi::Boolean::New(info.Env(), false);
    throw ErrnoError(info.Env(), errno, "fcntl");
  }
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value RangeUnlock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  struct flock lock = RangeOf(F_UNLCK, offset, length);
  if (fcntl(fd, F_OFD_SETLK, &lock) < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

// rangeConflict(fd, offset, length): the first lock another open file description holds over the range, as
// [offset, length (0: to the end of the file), shared], or null when there is none. Asked as a write lock, so that
// readers (pins) conflict.
Napi::Value RangeConflict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  struct flock lock = RangeOf(F_WRLCK, offset, length);
  if (fcntl(fd, F_OFD_GETLK, &lock) < 0) throw ErrnoError(env, errno, "fcntl");
  if (lock.l_type == F_UNLCK) return env.Null();
  Napi::Array conflict = Napi::Array::New(env, 3);
  conflict.Set(0u, Napi::Number::New(env, static_cast<double>(lock.l_start)));
  conflict.Set(1u, Napi::Number::New(env, static_cast<double>(lock.l_len)));
  conflict.Set(2u, Napi::Boolean::New(env, lock.l_type == F_RDLCK));
  return conflict;
}

// fdReopen(fd): a new open file description of the same file (open /proc/self/fd/N), close-on-exec. Locks held on
// one description conflict with those on another, which is what lets a process see its own pins when it probes.
Napi::Value FdReopen(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  int reopened;
  do {
    reopened = open(path.c_str(), O_RDWR | O_CLOEXEC);
  } while (reopened < 0 && errno == EINTR);
  if (reopened < 0) throw ErrnoError(info.Env(), errno, "open", path);
  return Napi::Number::New(info.Env(), reopened);
}

}  // namespace

void RegisterLocksFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("rangeLock", Napi::Function::New(env, RangeLock, "rangeLock"));
  exports.Set("rangeUnlock", Napi::Function::New(env, RangeUnlock, "rangeUnlock"));
  exports.Set("rangeConflict", Napi::Function::New(env, RangeConflict, "rangeConflict"));
  exports.Set("fdReopen", Napi::Function::New(env, FdReopen, "fdReopen"));
}

}  // namespace gmfs

// Pool syscall family: open or create the backing file, reserve its pages (fallocate), memfd, fd inheritance, hugetlbfs mounts.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/memfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gmfs_errors.h"
#include "gmfs_families.h"

namespace gmfs {
namespace {

constexpr int64_t kMaxBytes = 9007199254740992LL;  // 2^53: exact in a JS number

// open(2) with O_CLOEXEC always: inheritance across execve is opted into per fd (fdSetInherit), never by default.
Napi::Value FileOpen(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  bool create = ArgBool(info, 1, "create");
  bool exclusive = ArgBool(info, 2, "exclusive");
  int mode = static_cast<int>(ArgInt64(info, 3, "mode", 0, 07777));
  int flags = O_RDWR | O_CLOEXEC;
  if (create) flags |= O_CREAT;
  if (exclusive) flags |= O_EXCL;
  int fd;
  do {
    fd = open(path.c_str(), flags, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "open", path);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value FdClose(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  // No retry on EINTR: Linux always releases the descriptor, and a retry could close a reused number.
  if (close(fd) < 0 && errno != EINTR) throw ErrnoError(info.Env(), errno, "close");
  return info.Env().Undefined();
}

Napi::Value FileResize(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t size = ArgInt64(info, 1, "size", 0, kMaxBytes);
  if (ftruncate(fd, size) < 0) throw ErrnoError(info.Env(), errno, "ftruncate");
  return info.Env().Undefined();
}

// fallocate(2) mode 0: on hugetlbfs this allocates (and zeroes) every huge page now, so a later fault cannot fail.
Napi::Value FileAllocate(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  int rc;
  do {
    rc = fallocate(fd, 0, offset, length);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw ErrnoError(info.Env(), errno, "fallocate");
  return info.Env().Undefined();
}

// Releases pages back to the kernel; the range reads as zeros and must be re-allocated to be reserved again.
Napi::Value FilePunchHole(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int64_t offset = ArgInt64(info, 1, "offset", 0, kMaxBytes);
  int64_t length = ArgInt64(info, 2, "length", 1, kMaxBytes);
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) < 0) {
    throw ErrnoError(info.Env(), errno, "fallocate");
  }
  return info.Env().Undefined();
}

// fstat + fstatfs in one call: the filesystem magic and block size tell hugetlbfs (and its page size) from tmpfs.
Napi::Value FdInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct stat st;
  if (fstat(fd, &st) < 0) throw ErrnoError(env, errno, "fstat");
  struct statfs sfs;
  if (fstatfs(fd, &sfs) < 0) throw ErrnoError(env, errno, "fstatfs");
  int fdFlags = fcntl(fd, F_GETFD);
  if (fdFlags < 0) throw ErrnoError(env, errno, "fcntl");
  Napi::Object result = Napi::Object::New(env);
  result.Set("size", Napi::Number::New(env, static_cast<double>(st.st_size)));
  result.Set("blocks512", Napi::Number::New(env, static_cast<double>(st.st_blocks)));
  result.Set("mode", Napi::Number::New(env, st.st_mode));
  result.Set("dev", Napi::Number::New(env, static_cast<double>(st.st_dev)));
  result.Set("ino", Napi::Number::New(env, static_cast<double>(st.st_ino)));
  result.Set("fsType", Napi::Number::New(env, static_cast<double>(static_cast<uint32_t>(sfs.f_type))));
  result.Set("fsBlockSize", Napi::Number::New(env, static_cast<double>(sfs.f_bsize)));
  result.Set("inherit", Napi::Boolean::New(env, (fdFlags & FD_CLOEXEC) == 0));
  return result;
}

// memfd_create(2); hugePageSize 0 means ordinary 4 KiB shmem pages, otherwise MFD_HUGETLB with the size encoded.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  int64_t hugePageSize = ArgInt64(info, 1, "hugePageSize", 0, 1LL << 40);
  unsigned int flags = MFD_CLOEXEC;
  if (hugePageSize != 0) {
    if ((hugePageSize & (hugePageSize - 1)) != 0) {
      throw CodeError(env, "EINVAL", EINVAL, "memfd_create", "hugePageSize must be a power of two");
    }
    unsigned int log2 = static_cast<unsigned int>(__builtin_ctzll(static_cast<unsigned long long>(hugePageSize)));
    flags |= MFD_HUGETLB | (log2 << MFD_HUGE_SHIFT);
  } else {
    flags |= MFD_ALLOW_SEALING;
  }
  int fd = memfd_create(name.c_str(), flags);
  if (fd < 0) throw ErrnoError(env, errno, "memfd_create", name);
  return Napi::Number::New(env, fd);
}

// Clears or sets FD_CLOEXEC: the handover keeps exactly the pool's fds open across execve.
Napi::Value FdSetInherit(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool inherit = ArgBool(info, 1, "inherit");
  int flags = fcntl(fd, F_GETFD);
  if (flags < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  flags = inherit ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
  if (fcntl(fd, F_SETFD, flags) < 0) throw ErrnoError(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

// flock(2) on the pool's open file description: the mount lock. The kernel drops it when the holder dies, so a
// crashed owner never leaves a stale lock, and it survives execve with the fd (the handover keeps it).
// Returns false instead of blocking when another description holds it.
Napi::Value FdLock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool exclusive = ArgBool(info, 1, "exclusive");
  bool wait = ArgBool(info, 2, "wait");
  int operation = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
  int rc;
  do {
    rc = flock(fd, operation);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(info.Env(), false);
    throw ErrnoError(info.Env(), errno, "flock");
  }
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value FdUnlock(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (flock(fd, LOCK_UN) < 0) throw ErrnoError(info.Env(), errno, "flock");
  return info.Env().Undefined();
}

Napi::Value MountFs(const Napi::CallbackInfo& info) {
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgString(info, 1, "target");
  std::string fstype = ArgString(info, 2, "fstype");
  std::string data = ArgString(info, 3, "data");
  if (mount(source.c_str(), target.c_str(), fstype.c_str(), MS_NOSUID | MS_NODEV, data.c_str()) < 0) {
    throw ErrnoError(info.Env(), errno, "mount", target);
  }
  return info.Env().Undefined();
}

Napi::Value UmountFs(const Napi::CallbackInfo& info) {
  std::string target = ArgString(info, 0, "target");
  if (umount2(target.c_str(), 0) < 0) throw ErrnoError(info.Env(), errno, "umount", target);
  return info.Env().Undefined();
}

}  // namespace

void RegisterPoolFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("fileOpen", Napi::Function::New(env, FileOpen, "fileOpen"));
  exports.Set("fdClose", Napi::Function::New(env, FdClose, "fdClose"));
  exports.Set("fileResize", Napi::Function::New(env, FileResize, "fileResize"));
  exports.Set("fileAllocate", Napi::Function::New(env, FileAllocate, "fileAllocate"));
  exports.Set("filePunchHole", Napi::Function::New(env, FilePunchHole, "filePunchHole"));
  exports.Set("fdInfo", Napi::Function::New(env, FdInfo, "fdInfo"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("fdSetInherit", Napi::Function::New(env, FdSetInherit, "fdSetInherit"));
  exports.Set("fdLock", Napi::Function::New(env, FdLock, "fdLock"));
  exports.Set("fdUnlock", Napi::Function::New(env, FdUnlock, "fdUnlock"));
  exports.Set("mount", Napi::Function::New(env, MountFs, "mount"));
  exports.Set("umount", Napi::Function::New(env, UmountFs, "umount"));
}

}  // namespace gmfs

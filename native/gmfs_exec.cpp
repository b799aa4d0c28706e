// Exec family: replace this process with another program (same PID), keeping stdio and exactly the fds asked for.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_futex.h"

namespace gmfs {
namespace {

std::vector<std::string> ArgStringList(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsArray()) {
    throw CodeError(info.Env(), "EINVAL", EINVAL, "execve", std::string(name) + " must be an array of strings");
  }
  Napi::Array array = info[index].As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsString()) throw CodeError(info.Env(), "EINVAL", EINVAL, "execve", std::string(name) + " must contain only strings");
    std::string value = item.As<Napi::String>().Utf8Value();
    if (value.find('\0') != std::string::npos) {
      throw CodeError(info.Env(), "EINVAL", EINVAL, "execve", std::string(name) + " entries must not contain NUL");
    }
    out.push_back(std::move(value));
  }
  return out;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  pointers.reserve(strings.size() + 1);
  for (std::string& value : strings) pointers.push_back(value.data());
  pointers.push_back(nullptr);
  return pointers;
}

// The teardown holder: execve tears the old image's address space down before the new program runs (8 to 25 ms for
// a Node process here, more than the rest of an exec-mode blackout's kernel work). A child that shares the address
// space (CLONE_VM) keeps it alive through execve, which then only drops a reference. The child waits on a pipe whose
// write end the exec keeps: the new program closes it once its own blackout is over (or exits), the child exits, and
// the teardown runs in its exit, competing with nothing urgent. It is the caller's child, so the new program reaps it
// (processReap); its pid and the pipe's fd go in the environment.
struct HolderStart {
  int readFd;
  uint32_t state;  // 0 starting, 1 holding (its fds are closed), 2 failed
};

constexpr size_t kHolderStackBytes = 64 * 1024;

// The holder shares the parent thread's TLS, so it calls the kernel directly: libc would write errno there.
long RawSyscall(long number, long a, long b, long c) {
  long result;
  asm volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return result;
}

int HoldAddressSpace(void* argument) {
  auto* start = static_cast<HolderStart*>(argument);
  const int readFd = start->readFd;
  // Every fd but the pipe's read end goes: a copy of a pin's fd, a socket or the pool's fd must not outlive the exec.
  bool closed = (readFd == 0 || RawSyscall(SYS_close_range, 0, readFd - 1, 0) == 0) &&
                RawSyscall(SYS_close_range, readFd + 1, UINT_MAX, 0) == 0;
  __atomic_store_n(&start->state, closed ? 1u : 2u, __ATOMIC_RELEASE);
  RawSyscall(SYS_futex, reinterpret_cast<long>(&start->state), FUTEX_WAKE, INT_MAX);
  // `start` is the parent's and may be gone from here on.
  if (closed) {
    char byte;
    while (RawSyscall(SYS_read, readFd, reinterpret_cast<long>(&byte), 1) == -EINTR) {
    }
  }
  // An ordinary exit's priority, whatever the exec'ing thread ran at (a vCPU handover may have left it SCHED_FIFO or
  // SCHED_IDLE). Not lower: the teardown takes sleeping locks that other processes need, such as the i_mmap lock of
  // every file it maps (libc, the pool), and a starved holder stalls them. A SCHED_IDLE holder hung a served VMM's
  // update here while both CPUs were busy.
  struct sched_param ordinary = {};
  RawSyscall(SYS_sched_setscheduler, 0, SCHED_OTHER, reinterpret_cast<long>(&ordinary));
  RawSyscall(SYS_exit, 0, 0, 0);
  return 0;
}

struct Holder {
  pid_t pid = -1;
  int writeFd = -1;
  void* stack = nullptr;
};

// Lets go of a holder that is no longer needed (execve failed), reaps it and frees its stack; it exits at once, on EOF.
void ReleaseHolder(Holder& holder) {
  if (holder.writeFd >= 0) close(holder.writeFd);
  if (holder.pid > 0) {
    while (waitpid(holder.pid, nullptr, __WALL) < 0 && errno == EINTR) {
    }
  }
  if (holder.stack != nullptr) munmap(holder.stack, kHolderStackBytes);
  holder = Holder{};
}

// Starts a holder with every signal blocked (the caller blocks them); none if anything fails: the exec then tears
// down as usual.
Holder StartHolder() {
  Holder holder;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return holder;
  holder.writeFd = fds[1];
  holder.stack = mmap(nullptr, kHolderStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (holder.stack == MAP_FAILED) {
    holder.stack = nullptr;
    close(fds[0]);
    ReleaseHolder(holder);
    return holder;
  }
  HolderStart start{fds[0], 0};
  // No exit signal: the new program knows the pid and reaps it; a SIGCHLD would reach a program that did not ask.
  holder.pid = clone(HoldAddressSpace, static_cast<uint8_t*>(holder.stack) + kHolderStackBytes, CLONE_VM, &start);
  if (holder.pid < 0) {
    holder.pid = -1;
    close(fds[0]);
    ReleaseHolder(holder);
    return holder;
  }
  while (__atomic_load_n(&start.state, __ATOMIC_ACQUIRE) == 0) FutexWaitWhile(&start.state, 0, nullptr);
  close(fds[0]);
  if (start.state != 1) ReleaseHolder(holder);
  return holder;
}

struct SavedFd {
  int fd;
  int fdFlags;
  int statusFlags;
};

// processExec(file, argv, env, keepFds, holderEnv): only returns by throwing. libuv marks stdio close-on-exec and
// non-blocking, Node ignores SIGPIPE and its threads may leave signals blocked; all of that survives execve, so the
// new program gets stdio and keepFds open and blocking and default signals. Everything is put back if execve fails.
// With holderEnv, a teardown holder keeps the old address space and `holderEnv=pid:fd` is added to env (fd: the
// pipe end whose closing lets it go).
Napi::Value ProcessExec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = ArgString(info, 0, "file");
  std::vector<std::string> argv = ArgStringList(info, 1, "argv");
  std::vector<std::string> envp = ArgStringList(info, 2, "env");
  if (argv.empty()) throw CodeError(env, "EINVAL", EINVAL, "execve", "argv must hold at least the program name");
  std::vector<int> keep = {0, 1, 2};
  if (info.Length() > 3 && info[3].IsArray()) {
    Napi::Array fds = info[3].As<Napi::Array>();
    for (uint32_t i = 0; i < fds.Length(); ++i) {
      Napi::Value fd = fds.Get(i);
      if (!fd.IsNumber() || fd.As<Napi::Number>().Int32Value() < 0) {
        throw CodeError(env, "EINVAL", EINVAL, "execve", "keepFds must hold fd numbers");
      }
      keep.push_back(fd.As<Napi::Number>().Int32Value());
    }
  }
  std::string holderEnv;
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    holderEnv = ArgString(info, 4, "holderEnv");
    if (holderEnv.empty() || holderEnv.find('=') != std::string::npos) {
      throw CodeError(env, "EINVAL", EINVAL, "execve", "holderEnv must be an environment variable name");
    }
  }

  std::vector<SavedFd> saved;
  for (int fd : keep) {
    int fdFlags = fcntl(fd, F_GETFD);
    if (fdFlags < 0) {
      if (fd <= 2) continue;  // a closed stdio fd stays closed
      int err = errno;
      for (const SavedFd& entry : saved) {
        fcntl(entry.fd, F_SETFD, entry.fdFlags);
        fcntl(entry.fd, F_SETFL, entry.statusFlags);
      }
      throw ErrnoError(env, err, "fcntl");
    }
    int statusFlags = fcntl(fd, F_GETFL);
    saved.push_back({fd, fdFlags, statusFlags});
    fcntl(fd, F_SETFD, fdFlags & ~FD_CLOEXEC);
    if (fd <= 2) fcntl(fd, F_SETFL, statusFlags & ~O_NONBLOCK);
  }

  struct sigaction previousPipe;
  struct sigaction defaultAction = {};
  defaultAction.sa_handler = SIG_DFL;
  sigemptyset(&defaultAction.sa_mask);
  sigaction(SIGPIPE, &defaultAction, &previousPipe);
  sigset_t all;
  sigset_t none;
  sigset_t previousMask;
  sigfillset(&all);
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &all, &previousMask);
  Holder holder;
  if (!holderEnv.empty()) {
    holder = StartHolder();
    if (holder.pid > 0 && fcntl(holder.writeFd, F_SETFD, 0) == 0) {
      envp.push_back(holderEnv + "=" + std::to_string(holder.pid) + ":" + std::to_string(holder.writeFd));
    } else {
      ReleaseHolder(holder);
    }
  }
  std::vector<char*> argvPointers = Pointers(argv);
  std::vector<char*> envPointers = Pointers(envp);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);

  execve(file.c_str(), argvPointers.data(), envPointers.data());
  int err = errno;
  ReleaseHolder(holder);
  pthread_sigmask(SIG_SETMASK, &previousMask, nullptr);
  sigaction(SIGPIPE, &previousPipe, nullptr);
  for (const SavedFd& entry : saved) {
    fcntl(entry.fd, F_SETFD, entry.fdFlags);
    fcntl(entry.fd, F_SETFL, entry.statusFlags);
  }
  throw ErrnoError(env, err, "execve", file);
}

// Waits for a child to exit on a libuv pool thread: a teardown holder exits once its address space is gone.
class ReapWorker : public Napi::AsyncWorker {
 public:
  ReapWorker(Napi::Env env, pid_t pid)
      : Napi::AsyncWorker(env, "guestmemfs.processReap"), deferred_(Napi::Promise::Deferred::New(env)), pid_(pid) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int rc;
    do {
      rc = waitpid(pid_, &status_, __WALL);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) errno_ = errno;
  }

  void OnOK() override {
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(Env(), errno_, "waitpid").Value());
    } else {
      deferred_.Resolve(Napi::Number::New(Env(), WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_)));
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  pid_t pid_;
  int status_ = 0;
  int errno_ = 0;
};

// processReap(pid): resolves the child's exit status (128 + signal if killed) once it has exited and been reaped.
Napi::Value ProcessReap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "pid must be a number");
  int64_t pid = info[0].As<Napi::Number>().Int64Value();
  if (pid <= 0 || pid > INT32_MAX) throw Napi::RangeError::New(env, "pid must be a positive process id");
  auto* worker = new ReapWorker(env, static_cast<pid_t>(pid));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void RegisterExecFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("processExec", Napi::Function::New(env, ProcessExec, "processExec"));
  exports.Set("processReap", Napi::Function::New(env, ProcessReap, "processReap"));
}

}  // namespace gmfs

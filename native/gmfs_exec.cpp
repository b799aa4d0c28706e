// Exec family: replace this process with another program (same PID), keeping stdio and exactly the fds asked for.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"

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

struct SavedFd {
  int fd;
  int fdFlags;
  int statusFlags;
};

// processExec(file, argv, env, keepFds): only returns by throwing. libuv marks stdio close-on-exec and
// non-blocking, Node ignores SIGPIPE and its threads may leave signals blocked; all of that survives execve, so the
// new program gets stdio and keepFds open and blocking and default signals. Everything is put back if execve fails.
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
  std::vector<char*> argvPointers = Pointers(argv);
  std::vector<char*> envPointers = Pointers(envp);

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
  sigset_t none;
  sigset_t previousMask;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, &previousMask);

  execve(file.c_str(), argvPointers.data(), envPointers.data());
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &previousMask, nullptr);
  sigaction(SIGPIPE, &previousPipe, nullptr);
  for (const SavedFd& entry : saved) {
    fcntl(entry.fd, F_SETFD, entry.fdFlags);
    fcntl(entry.fd, F_SETFL, entry.statusFlags);
  }
  throw ErrnoError(env, err, "execve", file);
}

}  // namespace

void RegisterExecFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("processExec", Napi::Function::New(env, ProcessExec, "processExec"));
}

}  // namespace gmfs

// Scheduling family: CPU affinity and policy of the calling thread, so that during a live update's blackout the
// VMMs' vCPU threads have the CPUs and their main threads step aside.
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_sched.h"

namespace gmfs {

cpu_set_t CpuSetArg(const Napi::CallbackInfo& info, size_t index, const char* syscall) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsArray()) throw CodeError(env, "EINVAL", EINVAL, syscall, "cpus must be an array of CPU numbers");
  Napi::Array cpus = info[index].As<Napi::Array>();
  if (cpus.Length() == 0) throw CodeError(env, "EINVAL", EINVAL, syscall, "cpus must name at least one CPU");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < cpus.Length(); ++i) {
    Napi::Value value = cpus.Get(i);
    double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
    if (number < 0 || number >= CPU_SETSIZE || number != static_cast<double>(static_cast<int>(number))) {
      throw CodeError(env, "EINVAL", EINVAL, syscall, "CPU " + std::to_string(i) + " is not an integer in [0, " + std::to_string(CPU_SETSIZE) + ")");
    }
    CPU_SET(static_cast<int>(number), &set);
  }
  return set;
}

namespace {

// threadAffinity(): the CPUs the calling thread may run on.
Napi::Value ThreadAffinity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) < 0) throw ErrnoError(env, errno, "sched_getaffinity");
  Napi::Array cpus = Napi::Array::New(env);
  uint32_t n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.Set(n++, Napi::Number::New(env, cpu));
  }
  return cpus;
}

// setThreadAffinity(cpus): restricts the calling thread (not the process) to the given CPUs.
Napi::Value SetThreadAffinity(const Napi::CallbackInfo& info) {
  cpu_set_t set = CpuSetArg(info, 0, "sched_setaffinity");
  if (sched_setaffinity(0, sizeof(set), &set) < 0) throw ErrnoError(info.Env(), errno, "sched_setaffinity");
  return info.Env().Undefined();
}

// setThreadPolicy(policy): the calling thread's scheduling policy, 'idle' (SCHED_IDLE: it runs only on CPU time
// nobody else wants), 'normal' (SCHED_OTHER) or 'fifo' (SCHED_FIFO, priority 1: it runs as soon as it wakes). A VMM's
// main thread steps aside while its vCPU threads carry a live update's blackout; a device backend that sleeps
// between short turns runs each turn on time.
Napi::Value SetThreadPolicy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string policy = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  sched_param param{};
  int which;
  if (policy == "idle") {
    which = SCHED_IDLE;
  } else if (policy == "normal") {
    which = SCHED_OTHER;
  } else if (policy == "fifo") {
    which = SCHED_FIFO;
    param.sched_priority = 1;
  } else {
    throw Napi::TypeError::New(env, "policy must be 'idle', 'normal' or 'fifo'");
  }
  if (sched_setscheduler(0, which, &param) < 0) throw ErrnoError(env, errno, "sched_setscheduler");
  // Stepping aside must take effect now. A change to SCHED_IDLE keeps the thread's priority, so the kernel does not
  // reschedule, and a thread this one preempted (a vCPU just sent the pause signal) would wait until this one blocks:
  // the vCPUs of a 2-vCPU guest stopped 34 to 1270 us apart that way, and 21 to 47 us apart with this yield.
  if (which == SCHED_IDLE) sched_yield();
  return env.Undefined();
}

}  // namespace

void RegisterSchedFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("threadAffinity", Napi::Function::New(env, ThreadAffinity, "threadAffinity"));
  exports.Set("setThreadAffinity", Napi::Function::New(env, SetThreadAffinity, "setThreadAffinity"));
  exports.Set("setThreadPolicy", Napi::Function::New(env, SetThreadPolicy, "setThreadPolicy"));
}

}  // namespace gmfs

// Scheduling family: CPU affinity of the calling thread, so that the two VMMs of a transfer-mode update run on
// different CPUs during the blackout instead of queueing behind each other on one.
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gmfs_errors.h"
#include "gmfs_families.h"

namespace gmfs {
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
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw CodeError(env, "EINVAL", EINVAL, "sched_setaffinity", "cpus must be an array of CPU numbers");
  Napi::Array cpus = info[0].As<Napi::Array>();
  if (cpus.Length() == 0) throw CodeError(env, "EINVAL", EINVAL, "sched_setaffinity", "cpus must name at least one CPU");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (uint32_t i = 0; i < cpus.Length(); ++i) {
    Napi::Value value = cpus.Get(i);
    double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
    if (number < 0 || number >= CPU_SETSIZE || number != static_cast<double>(static_cast<int>(number))) {
      throw CodeError(env, "EINVAL", EINVAL, "sched_setaffinity", "CPU " + std::to_string(i) + " is not an integer in [0, " + std::to_string(CPU_SETSIZE) + ")");
    }
    CPU_SET(static_cast<int>(number), &set);
  }
  if (sched_setaffinity(0, sizeof(set), &set) < 0) throw ErrnoError(env, errno, "sched_setaffinity");
  return env.Undefined();
}

}  // namespace

void RegisterSchedFamily(Napi::Env env, Napi::Object exports) {
  exports.Set("threadAffinity", Napi::Function::New(env, ThreadAffinity, "threadAffinity"));
  exports.Set("setThreadAffinity", Napi::Function::New(env, SetThreadAffinity, "setThreadAffinity"));
}

}  // namespace gmfs

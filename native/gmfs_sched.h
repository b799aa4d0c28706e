// The sched family's argument parsing, shared with the KVM family (which pins vCPU threads).
#pragma once
#include <napi.h>
#include <sched.h>

namespace gmfs {

// An array of CPU numbers at info[index] as a cpu_set_t; throws EINVAL for anything else or an empty array.
cpu_set_t CpuSetArg(const Napi::CallbackInfo& info, size_t index, const char* syscall);

}  // namespace gmfs

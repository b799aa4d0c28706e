// Registration entry points of each syscall family; gmfs_addon.cpp wires them into the module.
#pragma once
#include <napi.h>

namespace gmfs {

void RegisterPoolFamily(Napi::Env env, Napi::Object exports);     // open/create/fallocate/memfd/fd inheritance/mount
void RegisterMapFamily(Napi::Env env, Napi::Object exports);      // reserve + MAP_FIXED stitching, madvise, mlock, munmap, zeroing
void RegisterPagemapFamily(Napi::Env env, Napi::Object exports);  // /proc/self/pagemap frame numbers
void RegisterExecFamily(Napi::Env env, Napi::Object exports);     // execve with inherited fds, reaping its teardown holder
void RegisterKvmFamily(Napi::Env env, Napi::Object exports);      // KVM VM/vCPU ioctls and the run loop
void RegisterSchedFamily(Napi::Env env, Napi::Object exports);    // CPU affinity of the calling thread
void RegisterLocksFamily(Napi::Env env, Napi::Object exports);    // OFD byte-range locks (pins) and reopening the pool
void RegisterSocketFamily(Napi::Env env, Napi::Object exports);   // UNIX sockets: listen, peer credentials, SCM_RIGHTS, datagrams
void RegisterFutexFamily(Napi::Env env, Napi::Object exports);    // futex wait/wake on a word of a mapping, across processes
void RegisterNumaFamily(Napi::Env env, Napi::Object exports);     // mbind of a mapping to one node, and which node each page is on

}  // namespace gmfs

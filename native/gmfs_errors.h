// Node-style errors (code, negative errno, syscall, path) thrown from the native wrappers.
#pragma once
#include <napi.h>
#include <string>

namespace gmfs {

// An Error shaped like Node's own system errors, so JS callers can switch on err.code.
Napi::Error ErrnoError(Napi::Env env, int errnum, const char* syscall, const std::string& path = "");

// A validation error for arguments the JS layer should already have rejected; the C++ side re-checks cheaply.
Napi::Error CodeError(Napi::Env env, const char* code, int errnum, const char* syscall, const std::string& message);

// Argument readers that throw EINVAL with the argument's name instead of crashing on bad input.
int64_t ArgInt64(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min, int64_t max);
int ArgFd(const Napi::CallbackInfo& info, size_t index);
std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name);
bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace gmfs

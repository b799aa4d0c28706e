// Builds Node-style system errors so that native failures look like fs.* failures to JS.
#include "gmfs_errors.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

namespace gmfs {

Napi::Error ErrnoError(Napi::Env env, int errnum, const char* syscall, const std::string& path) {
  const char* name = strerrorname_np(errnum);
  std::string code = name ? name : "UNKNOWN";
  std::string message = code + ": " + strerror(errnum) + ", " + syscall;
  if (!path.empty()) message += " '" + path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -errnum));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) error.Set("path", Napi::String::New(env, path));
  return error;
}

Napi::Error CodeError(Napi::Env env, const char* code, int errnum, const char* syscall, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, std::string(code) + ": " + message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, -errnum));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

int64_t ArgInt64(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min, int64_t max) {
  Napi::Env env = info.Env();
  if (index >= info.Length() || !info[index].IsNumber()) {
    throw CodeError(env, "EINVAL", EINVAL, "argument", std::string(name) + " must be a number");
  }
  double value = info[index].As<Napi::Number>().DoubleValue();
  // 2^53 bounds every byte count JS can express exactly; anything larger has already lost precision.
  if (!std::isfinite(value) || std::floor(value) != value || value < static_cast<double>(min) ||
      value > static_cast<double>(max) || std::fabs(value) > 9007199254740992.0) {
    throw CodeError(env, "EINVAL", EINVAL, "argument",
                    std::string(name) + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return static_cast<int64_t>(value);
}

int ArgFd(const Napi::CallbackInfo& info, size_t index) {
  return static_cast<int>(ArgInt64(info, index, "fd", 0, std::numeric_limits<int>::max()));
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsString()) {
    throw CodeError(info.Env(), "EINVAL", EINVAL, "argument", std::string(name) + " must be a string");
  }
  std::string value = info[index].As<Napi::String>().Utf8Value();
  if (value.find('\0') != std::string::npos) {
    throw CodeError(info.Env(), "EINVAL", EINVAL, "argument", std::string(name) + " must not contain NUL");
  }
  return value;
}

bool ArgBool(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsBoolean()) {
    throw CodeError(info.Env(), "EINVAL", EINVAL, "argument", std::string(name) + " must be a boolean");
  }
  return info[index].As<Napi::Boolean>().Value();
}

}  // namespace gmfs

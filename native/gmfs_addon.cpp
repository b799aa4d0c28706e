// Module entry point: each syscall family registers its flat functions on the exports object.
#include <napi.h>

#include "gmfs_families.h"

namespace {

Napi::Object GmfsInit(Napi::Env env, Napi::Object exports) {
  gmfs::RegisterPoolFamily(env, exports);
  gmfs::RegisterMapFamily(env, exports);
  gmfs::RegisterPagemapFamily(env, exports);
  gmfs::RegisterExecFamily(env, exports);
  gmfs::RegisterKvmFamily(env, exports);
  gmfs::RegisterSchedFamily(env, exports);
  gmfs::RegisterLocksFamily(env, exports);
  gmfs::RegisterSocketFamily(env, exports);
  gmfs::RegisterFutexFamily(env, exports);
  gmfs::RegisterNumaFamily(env, exports);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  exports.Set("buildType", Napi::String::New(env, GMFS_BUILD_NAME));
  return exports;
}

}  // namespace

NODE_API_MODULE(guestmemfs_native, GmfsInit)

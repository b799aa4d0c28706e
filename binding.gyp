# Builds the thin native layer (one file per syscall family) as build/<Release|Debug>/guestmemfs_native.node.
{
  "targets": [
    {
      "target_name": "guestmemfs_native",
      "sources": [
        "native/gmfs_addon.cpp",
        "native/gmfs_errors.cpp",
        "native/gmfs_pool.cpp",
        "native/gmfs_map.cpp",
        "native/gmfs_pagemap.cpp",
        "native/gmfs_exec.cpp",
        "native/gmfs_kvm.cpp",
        "native/gmfs_sched.cpp",
        "native/gmfs_locks.cpp",
        "native/gmfs_socket.cpp",
        "native/gmfs_futex.cpp",
        "native/gmfs_numa.cpp"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      # NAPI 8 is the floor we rely on: napi_detach_arraybuffer (7) for detach-on-unmap, cleanup hooks and
      # instance data; pinning it keeps the addon loadable on every Node >= 12.22/14.17/16.
      # C++ exceptions on purpose: each wrapper throws a Napi::Error from the point of failure and
      # node-addon-api turns it into a JS exception at the boundary; the non-throwing path costs nothing.
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags": ["-fvisibility=hidden", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "configurations": {
        "Release": {
          "defines": ["NDEBUG", "GMFS_BUILD_NAME=\"Release\""],
          "cflags_cc": ["-O2"]
        },
        "Debug": {
          "defines": ["DEBUG", "GMFS_BUILD_NAME=\"Debug\""],
          "cflags_cc": ["-O0", "-g3"]
        },
        # npm run test:asan: AddressSanitizer + UndefinedBehaviorSanitizer, run with the runtimes preloaded into node.
        "Asan": {
          "defines": ["DEBUG", "GMFS_BUILD_NAME=\"Asan\""],
          "cflags_cc": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
          "ldflags": ["-fsanitize=address,undefined"]
        }
      }
    }
  ]
}

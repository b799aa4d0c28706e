// KVM family: VM and vCPU ioctls, guest memory slots from guestmemfs mappings, and the vCPU run loop on a worker thread
// (never the JS thread), with COM1 output collected natively and pause by immediate_exit plus a signal.
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_map.h"

namespace gmfs {
namespace {

constexpr uint16_t kCom1 = 0x3f8;

// The uapi headers declare flexible arrays with __DECLARE_FLEX_ARRAY, whose empty struct has size 1 in C++ but 0 in C,
// so sizeof() of those structs (and the ioctl numbers that encode it) come out wrong when compiled as C++. These are
// the numbers a C compiler computes: the fixed headers are 8 bytes (kvm_cpuid2, kvm_msrs), the XSAVE area 4096.
constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
constexpr unsigned long kGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
constexpr unsigned long kSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
constexpr size_t kXsaveBytes = 4096;
constexpr unsigned long kGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, kXsaveBytes);
constexpr unsigned long kSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, kXsaveBytes);
// The signal that knocks a vCPU thread out of KVM_RUN; glibc keeps the first few real-time signals for itself.
int PauseSignal() { return SIGRTMIN + 4; }

struct Vcpu {
  int fd = -1;
  kvm_run* run = nullptr;
  size_t runSize = 0;
  std::atomic<bool> running{false};
  std::atomic<bool> pauseRequested{false};
  // CLOCK_MONOTONIC ns just before the worker's first KVM_RUN of the latest run: when the guest runs again, which is
  // what a blackout measurement needs (the JS thread may learn it later, or be preempted by the worker meanwhile).
  std::atomic<int64_t> runStartedNs{0};
  // CLOCK_MONOTONIC ns when the worker last left KVM_RUN: the start of a blackout, per vCPU (the guest stops being
  // whole when its first vCPU stops).
  std::atomic<int64_t> runStoppedNs{0};
  pthread_t thread{};
  std::mutex serialMutex;
  std::string serial;

  ~Vcpu() {
    if (run != nullptr) munmap(run, runSize);
    if (fd >= 0) close(fd);
  }
};

struct KvmRegistry {
  std::unordered_map<uint32_t, std::shared_ptr<Vcpu>> vcpus;
  uint32_t nextId = 1;
};

KvmRegistry& Registry(Napi::Env env) {
  // One registry per environment, owned by a static map keyed by env (the map family owns the instance data slot).
  static std::mutex mutex;
  static std::unordered_map<napi_env, std::unique_ptr<KvmRegistry>> registries;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = registries[static_cast<napi_env>(env)];
  if (!slot) slot = std::make_unique<KvmRegistry>();
  return *slot;
}

std::shared_ptr<Vcpu> LookupVcpu(const Napi::CallbackInfo& info) {
  uint32_t id = static_cast<uint32_t>(ArgInt64(info, 0, "vcpu", 1, 0xffffffff));
  auto& vcpus = Registry(info.Env()).vcpus;
  auto it = vcpus.find(id);
  if (it == vcpus.end()) throw CodeError(info.Env(), "EINVAL", EINVAL, "ioctl", "vCPU " + std::to_string(id) + " does not exist (closed?)");
  return it->second;
}

// Every KVM ioctl but KVM_RUN is retried on EINTR: a signal (a profiler's SIGPROF, our pause signal) must not fail
// VM creation or a state transfer.
int Ioctl(int fd, unsigned long request, void* arg) {
  int rc;
  do {
    rc = ioctl(fd, request, arg);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

void PauseHandler(int) {}

// kvmOpen(): the /dev/kvm fd, after checking the stable API version.
Napi::Value KvmOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) throw ErrnoError(env, errno, "open", "/dev/kvm");
  int version = Ioctl(fd, KVM_GET_API_VERSION, nullptr);
  if (version != KVM_API_VERSION) {
    close(fd);
    throw CodeError(env, "ENOTSUP", ENOTSUP, "ioctl", "KVM API version " + std::to_string(version) + " is not the stable version 12");
  }
  return Napi::Number::New(env, fd);
}

Napi::Value KvmCreateVm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int kvm = ArgFd(info, 0);
  int vm = Ioctl(kvm, KVM_CREATE_VM, nullptr);
  if (vm < 0) throw ErrnoError(env, errno, "ioctl(KVM_CREATE_VM)");
  // Needed on Intel for guest modes without unrestricted execution; placed just below 4 GiB, out of guest RAM.
  Ioctl(vm, KVM_SET_TSS_ADDR, reinterpret_cast<void*>(0xfffbd000UL));
  uint64_t identity = 0xfffbc000;
  Ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity);
  return Napi::Number::New(env, vm);
}

// kvmSetMemory(vm, slot, guestPhys, mappingId, offset, length): guest RAM straight from a guestmemfs mapping.
Napi::Value KvmSetMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int vm = ArgFd(info, 0);
  kvm_userspace_memory_region region{};
  region.slot = static_cast<uint32_t>(ArgInt64(info, 1, "slot", 0, 0xffff));
  region.guest_phys_addr = static_cast<uint64_t>(ArgInt64(info, 2, "guestPhys", 0, 1LL << 52));
  uint32_t mappingId = static_cast<uint32_t>(ArgInt64(info, 3, "mapping", 1, 0xffffffff));
  int64_t offset = ArgInt64(info, 4, "offset", 0, 1LL << 53);
  int64_t length = ArgInt64(info, 5, "length", 0, 1LL << 53);
  std::shared_ptr<Mapping> mapping = LookupMapping(env, mappingId, "ioctl(KVM_SET_USER_MEMORY_REGION)");
  CheckRange(env, *mapping, offset, length, "ioctl(KVM_SET_USER_MEMORY_REGION)");
  region.memory_size = static_cast<uint64_t>(length);
  region.userspace_addr = reinterpret_cast<uint64_t>(mapping->base + offset);
  if (Ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_USER_MEMORY_REGION)");
  return env.Undefined();
}

// kvmDeleteMemory(vm, slot): removes a memory slot, whose mapping may already be gone (KVM needs only its number).
Napi::Value KvmDeleteMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int vm = ArgFd(info, 0);
  kvm_userspace_memory_region region{};
  region.slot = static_cast<uint32_t>(ArgInt64(info, 1, "slot", 0, 0xffff));
  region.memory_size = 0;
  if (Ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_USER_MEMORY_REGION)");
  return env.Undefined();
}

// kvmCreateVcpu(kvm, vm, index): a vCPU with the host's supported CPUID (long mode needs LM in the guest's CPUID).
Napi::Value KvmCreateVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int kvm = ArgFd(info, 0);
  int vm = ArgFd(info, 1);
  int index = static_cast<int>(ArgInt64(info, 2, "index", 0, 1023));
  auto vcpu = std::make_shared<Vcpu>();
  vcpu->fd = Ioctl(vm, KVM_CREATE_VCPU, reinterpret_cast<void*>(static_cast<uintptr_t>(index)));
  if (vcpu->fd < 0) throw ErrnoError(env, errno, "ioctl(KVM_CREATE_VCPU)");
  int size = Ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, nullptr);
  if (size < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_VCPU_MMAP_SIZE)");
  void* run = mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
  if (run == MAP_FAILED) throw ErrnoError(env, errno, "mmap");
  vcpu->run = static_cast<kvm_run*>(run);
  vcpu->runSize = static_cast<size_t>(size);
  constexpr int kMaxEntries = 256;
  std::vector<uint8_t> cpuid(8 + kMaxEntries * sizeof(kvm_cpuid_entry2));
  auto* table = reinterpret_cast<kvm_cpuid2*>(cpuid.data());
  table->nent = kMaxEntries;
  if (Ioctl(kvm, kGetSupportedCpuid, table) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_SUPPORTED_CPUID)");
  if (Ioctl(vcpu->fd, kSetCpuid2, table) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_CPUID2)");
  KvmRegistry& registry = Registry(env);
  uint32_t id = registry.nextId++;
  registry.vcpus.emplace(id, vcpu);
  return Napi::Number::New(env, id);
}

// The general registers as a 18-entry BigUint64Array: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags (kvm_regs order).
Napi::Value KvmGetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  kvm_regs regs{};
  if (Ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_REGS)");
  auto out = Napi::BigUint64Array::New(env, sizeof(regs) / 8);
  std::memcpy(out.Data(), &regs, sizeof(regs));
  return out;
}

Napi::Value KvmSetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      info[1].As<Napi::BigUint64Array>().ElementLength() != sizeof(kvm_regs) / 8) {
    throw CodeError(env, "EINVAL", EINVAL, "ioctl(KVM_SET_REGS)", "registers must be a BigUint64Array of 18 values (kvm_regs order)");
  }
  kvm_regs regs{};
  std::memcpy(&regs, info[1].As<Napi::BigUint64Array>().Data(), sizeof(regs));
  if (Ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_REGS)");
  return env.Undefined();
}

// Flat 64-bit long mode: identity paging rooted at pml4, flat code and data segments. The page tables themselves are
// written into guest memory by the caller (TypeScript); this sets the control and segment registers to use them.
Napi::Value KvmEnterLongMode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  uint64_t pml4 = static_cast<uint64_t>(ArgInt64(info, 1, "pml4", 0, 1LL << 52));
  kvm_sregs sregs{};
  if (Ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_SREGS)");
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 1 << 3;
  code.present = 1;
  code.type = 11;  // execute/read, accessed
  code.dpl = 0;
  code.db = 0;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.type = 3;  // read/write, accessed
  data.selector = 2 << 3;
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.cr3 = pml4;
  sregs.cr4 = 1u << 5;                                        // PAE
  sregs.cr0 = 0x80050033;                                     // PE MP ET NE WP AM PG
  sregs.efer = (1u << 8) | (1u << 10);                        // LME LMA
  if (Ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_SREGS)");
  return env.Undefined();
}

// The vCPU state a guest depends on, as one opaque byte string: general and special registers, FPU, XSAVE area,
// extended control registers, and the MSRs a 64-bit guest may touch. Saved before a live update, restored after.
const uint32_t kSavedMsrs[] = {0x10 /* TSC */, 0x174, 0x175, 0x176 /* SYSENTER */, 0xc0000081 /* STAR */, 0xc0000082 /* LSTAR */,
                               0xc0000083 /* CSTAR */, 0xc0000084 /* FMASK */, 0xc0000102 /* KERNEL_GS_BASE */, 0x277 /* PAT */};
constexpr size_t kMsrCount = sizeof(kSavedMsrs) / sizeof(kSavedMsrs[0]);

struct SavedState {
  uint32_t magic;
  uint32_t version;
  kvm_regs regs;
  kvm_sregs sregs;
  kvm_fpu fpu;
  uint8_t xsave[kXsaveBytes];  // the legacy 4 KiB area (kvm_xsave ends in a flexible array and cannot be embedded)
  kvm_xcrs xcrs;
  kvm_mp_state mp;
  uint64_t msrValues[kMsrCount];
};
constexpr uint32_t kStateMagic = 0x47564350;  // "GVCP"

/** A kvm_msrs request for the saved MSRs (kvm_msrs ends in a flexible array, so it gets a byte buffer). */
class MsrRequest {
 public:
  MsrRequest() : bytes_(8 + kMsrCount * sizeof(kvm_msr_entry)) {
    msrs()->nmsrs = kMsrCount;
    for (size_t i = 0; i < kMsrCount; ++i) entries()[i].index = kSavedMsrs[i];
  }
  kvm_msrs* msrs() { return reinterpret_cast<kvm_msrs*>(bytes_.data()); }
  kvm_msr_entry* entries() { return reinterpret_cast<kvm_msr_entry*>(bytes_.data() + 8); }

 private:
  std::vector<uint8_t> bytes_;
};

Napi::Value KvmSaveState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "ioctl", "the vCPU is running: pause it before saving its state");
  auto state = std::make_unique<SavedState>();
  std::memset(state.get(), 0, sizeof(SavedState));
  state->magic = kStateMagic;
  state->version = 1;
  if (Ioctl(vcpu->fd, KVM_GET_REGS, &state->regs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_REGS)");
  if (Ioctl(vcpu->fd, KVM_GET_SREGS, &state->sregs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_SREGS)");
  if (Ioctl(vcpu->fd, KVM_GET_FPU, &state->fpu) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_FPU)");
  if (Ioctl(vcpu->fd, kGetXsave, state->xsave) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_XSAVE)");
  if (Ioctl(vcpu->fd, KVM_GET_XCRS, &state->xcrs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_XCRS)");
  if (Ioctl(vcpu->fd, KVM_GET_MP_STATE, &state->mp) < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_MP_STATE)");
  MsrRequest request;
  // KVM_GET_MSRS returns how many it read, stopping at the first it does not know: anything short is a failure.
  int read = Ioctl(vcpu->fd, kGetMsrs, request.msrs());
  if (read < 0) throw ErrnoError(env, errno, "ioctl(KVM_GET_MSRS)");
  if (read != static_cast<int>(kMsrCount)) throw CodeError(env, "EIO", EIO, "ioctl(KVM_GET_MSRS)", "KVM read " + std::to_string(read) + " of the " + std::to_string(kMsrCount) + " MSRs the guest uses");
  for (size_t i = 0; i < kMsrCount; ++i) state->msrValues[i] = request.entries()[i].data;
  auto out = Napi::Uint8Array::New(env, sizeof(SavedState));
  std::memcpy(out.Data(), state.get(), sizeof(SavedState));
  return out;
}

Napi::Value KvmRestoreState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      info[1].As<Napi::Uint8Array>().ByteLength() != sizeof(SavedState)) {
    throw CodeError(env, "EINVAL", EINVAL, "ioctl", "vCPU state must be the " + std::to_string(sizeof(SavedState)) + "-byte Uint8Array kvmSaveState returned");
  }
  auto state = std::make_unique<SavedState>();
  std::memcpy(state.get(), info[1].As<Napi::Uint8Array>().Data(), sizeof(SavedState));
  if (state->magic != kStateMagic || state->version != 1) throw CodeError(env, "EINVAL", EINVAL, "ioctl", "not a saved vCPU state of version 1");
  // Special registers first: they decide how the general registers and MSRs are interpreted.
  if (Ioctl(vcpu->fd, KVM_SET_SREGS, &state->sregs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_SREGS)");
  if (Ioctl(vcpu->fd, KVM_SET_REGS, &state->regs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_REGS)");
  if (Ioctl(vcpu->fd, KVM_SET_FPU, &state->fpu) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_FPU)");
  if (Ioctl(vcpu->fd, kSetXsave, state->xsave) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_XSAVE)");
  if (Ioctl(vcpu->fd, KVM_SET_XCRS, &state->xcrs) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_XCRS)");
  if (Ioctl(vcpu->fd, KVM_SET_MP_STATE, &state->mp) < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_MP_STATE)");
  MsrRequest request;
  for (size_t i = 0; i < kMsrCount; ++i) request.entries()[i].data = state->msrValues[i];
  int written = Ioctl(vcpu->fd, kSetMsrs, request.msrs());
  if (written < 0) throw ErrnoError(env, errno, "ioctl(KVM_SET_MSRS)");
  if (written != static_cast<int>(kMsrCount)) throw CodeError(env, "EIO", EIO, "ioctl(KVM_SET_MSRS)", "KVM wrote " + std::to_string(written) + " of the " + std::to_string(kMsrCount) + " MSRs the guest uses");
  return env.Undefined();
}

// Runs the vCPU on a libuv worker thread until it halts, is paused, or fails; COM1 output is buffered for kvmSerial.
class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Vcpu> vcpu)
      : Napi::AsyncWorker(env, "guestmemfs.kvmRun"), deferred_(Napi::Promise::Deferred::New(env)), vcpu_(std::move(vcpu)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    Vcpu& vcpu = *vcpu_;
    vcpu.thread = pthread_self();
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, PauseSignal());
    pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
    vcpu.running.store(true);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    vcpu.runStartedNs.store(static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
    for (;;) {
      if (vcpu.pauseRequested.load()) vcpu.run->immediate_exit = 1;
      int rc = ioctl(vcpu.fd, KVM_RUN, 0);
      if (rc < 0) {
        if (errno == EINTR || errno == EAGAIN) {
          if (vcpu.pauseRequested.load()) {
            reason_ = "paused";
            break;
          }
          continue;
        }
        errno_ = errno;
        break;
      }
      kvm_run* run = vcpu.run;
      if (run->exit_reason == KVM_EXIT_IO) {
        uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
        if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == kCom1) {
          std::lock_guard<std::mutex> lock(vcpu.serialMutex);
          for (uint32_t i = 0; i < run->io.count; ++i) vcpu.serial.append(reinterpret_cast<char*>(data) + i * run->io.size, 1);
        } else if (run->io.direction == KVM_EXIT_IO_IN) {
          // COM1 line status: transmitter empty, so a polling guest may write; every other port reads as 0xff.
          std::memset(data, run->io.port == kCom1 + 5 ? 0x60 : 0xff, run->io.size * run->io.count);
        }
        continue;
      }
      if (run->exit_reason == KVM_EXIT_HLT) {
        reason_ = "halted";
        break;
      }
      if (run->exit_reason == KVM_EXIT_INTR) {
        if (vcpu.pauseRequested.load()) {
          reason_ = "paused";
          break;
        }
        continue;
      }
      reason_ = "exit-" + std::to_string(run->exit_reason);
      if (run->exit_reason == KVM_EXIT_FAIL_ENTRY) reason_ += " (entry failed, reason 0x" + std::to_string(run->fail_entry.hardware_entry_failure_reason) + ")";
      if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) reason_ += " (internal error " + std::to_string(run->internal.suberror) + ")";
      break;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    vcpu.runStoppedNs.store(static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
    vcpu.run->immediate_exit = 0;
    vcpu.running.store(false);
  }

  void OnOK() override {
    vcpu_->pauseRequested.store(false);
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(Env(), errno_, "ioctl(KVM_RUN)").Value());
      return;
    }
    deferred_.Resolve(Napi::String::New(Env(), reason_));
  }

  void OnError(const Napi::Error& error) override {
    vcpu_->running.store(false);
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Vcpu> vcpu_;
  std::string reason_ = "stopped";
  int errno_ = 0;
};

// kvmRunStartedAt(vcpu): CLOCK_MONOTONIC ns when the latest run entered KVM_RUN, or 0n while it has not yet.
Napi::Value KvmRunStartedAt(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::BigInt::New(info.Env(), vcpu->runStartedNs.load());
}

// kvmRunStoppedAt(vcpu): CLOCK_MONOTONIC ns when the latest run left KVM_RUN, or 0n before any run ended.
Napi::Value KvmRunStoppedAt(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::BigInt::New(info.Env(), vcpu->runStoppedNs.load());
}

Napi::Value KvmRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "ioctl(KVM_RUN)", "the vCPU is already running");
  vcpu->pauseRequested.store(false);
  vcpu->runStartedNs.store(0);
  auto* worker = new RunWorker(env, vcpu);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// Asks a running vCPU to stop: immediate_exit makes the next KVM_RUN return, the signal interrupts the current one.
Napi::Value KvmPause(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  vcpu->pauseRequested.store(true);
  vcpu->run->immediate_exit = 1;
  if (vcpu->running.load()) pthread_kill(vcpu->thread, PauseSignal());
  return Napi::Boolean::New(info.Env(), vcpu->running.load());
}

Napi::Value KvmSerial(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  std::lock_guard<std::mutex> lock(vcpu->serialMutex);
  std::string out;
  out.swap(vcpu->serial);
  return Napi::String::New(info.Env(), out);
}

Napi::Value KvmCloseVcpu(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "close", "the vCPU is running: pause it first");
  Registry(env).vcpus.erase(static_cast<uint32_t>(info[0].As<Napi::Number>().Uint32Value()));
  return env.Undefined();
}

}  // namespace

void RegisterKvmFamily(Napi::Env env, Napi::Object exports) {
  struct sigaction action {};
  action.sa_handler = PauseHandler;  // no SA_RESTART: the signal must make KVM_RUN return EINTR
  sigemptyset(&action.sa_mask);
  sigaction(PauseSignal(), &action, nullptr);
  exports.Set("kvmOpen", Napi::Function::New(env, KvmOpen, "kvmOpen"));
  exports.Set("kvmCreateVm", Napi::Function::New(env, KvmCreateVm, "kvmCreateVm"));
  exports.Set("kvmSetMemory", Napi::Function::New(env, KvmSetMemory, "kvmSetMemory"));
  exports.Set("kvmDeleteMemory", Napi::Function::New(env, KvmDeleteMemory, "kvmDeleteMemory"));
  exports.Set("kvmCreateVcpu", Napi::Function::New(env, KvmCreateVcpu, "kvmCreateVcpu"));
  exports.Set("kvmGetRegs", Napi::Function::New(env, KvmGetRegs, "kvmGetRegs"));
  exports.Set("kvmSetRegs", Napi::Function::New(env, KvmSetRegs, "kvmSetRegs"));
  exports.Set("kvmEnterLongMode", Napi::Function::New(env, KvmEnterLongMode, "kvmEnterLongMode"));
  exports.Set("kvmSaveState", Napi::Function::New(env, KvmSaveState, "kvmSaveState"));
  exports.Set("kvmRestoreState", Napi::Function::New(env, KvmRestoreState, "kvmRestoreState"));
  exports.Set("kvmRun", Napi::Function::New(env, KvmRun, "kvmRun"));
  exports.Set("kvmPause", Napi::Function::New(env, KvmPause, "kvmPause"));
  exports.Set("kvmRunStartedAt", Napi::Function::New(env, KvmRunStartedAt, "kvmRunStartedAt"));
  exports.Set("kvmRunStoppedAt", Napi::Function::New(env, KvmRunStoppedAt, "kvmRunStoppedAt"));
  exports.Set("kvmSerial", Napi::Function::New(env, KvmSerial, "kvmSerial"));
  exports.Set("kvmCloseVcpu", Napi::Function::New(env, KvmCloseVcpu, "kvmCloseVcpu"));
}

}  // namespace gmfs

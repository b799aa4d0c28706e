// KVM family: VM and vCPU ioctls, guest memory slots from guestmemfs mappings, and the vCPU run loop on a worker thread
// (never the JS thread), with COM1 output collected natively and pause by immediate_exit plus a signal.
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gmfs_errors.h"
#include "gmfs_families.h"
#include "gmfs_futex.h"
#include "gmfs_map.h"
#include "gmfs_sched.h"

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
  // Set while a worker thread runs the vCPU (`thread` is valid): a pause signals only then.
  std::atomic<bool> onThread{false};
  std::atomic<bool> pauseRequested{false};
  // CLOCK_MONOTONIC ns just before the worker's first KVM_RUN of the latest run: when the guest runs again, which is
  // what a blackout measurement needs (the JS thread may learn it later, or be preempted by the worker meanwhile).
  std::atomic<int64_t> runStartedNs{0};
  // CLOCK_MONOTONIC ns when the worker last left KVM_RUN: the start of a blackout, per vCPU (the guest stops being
  // whole when its first vCPU stops).
  std::atomic<int64_t> runStoppedNs{0};
  // When a successor's vCPU saw the handover published (0 before, or for a run that waited for none).
  std::atomic<int64_t> handoverNoticedNs{0};
  // Set while a successor's vCPU thread waits for the handover: from then on it notices a publication at once.
  std::atomic<bool> awaitingHandover{false};
  // Set by kvmArmSave: the slot the worker saves this vCPU into when a pause stops it (the sender's half).
  std::mutex armedMutex;
  std::shared_ptr<struct HandoverSpec> armed;
  pthread_t thread{};
  std::mutex serialMutex;
  std::string serial;
  // The CPUs the vCPU's thread runs on while it runs (kvmSetAffinity); the worker thread gets its own mask back after.
  bool pinned = false;
  cpu_set_t cpus{};

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

// Reads the vCPU's state into `state`; on failure returns the failing ioctl (errno is set), else nullptr. Usable from
// any thread: the JS thread's kvmSaveState and a worker saving on pause.
const char* SaveVcpu(Vcpu& vcpu, SavedState* state) {
  std::memset(state, 0, sizeof(SavedState));
  state->magic = kStateMagic;
  state->version = 1;
  if (Ioctl(vcpu.fd, KVM_GET_REGS, &state->regs) < 0) return "ioctl(KVM_GET_REGS)";
  if (Ioctl(vcpu.fd, KVM_GET_SREGS, &state->sregs) < 0) return "ioctl(KVM_GET_SREGS)";
  if (Ioctl(vcpu.fd, KVM_GET_FPU, &state->fpu) < 0) return "ioctl(KVM_GET_FPU)";
  if (Ioctl(vcpu.fd, kGetXsave, state->xsave) < 0) return "ioctl(KVM_GET_XSAVE)";
  if (Ioctl(vcpu.fd, KVM_GET_XCRS, &state->xcrs) < 0) return "ioctl(KVM_GET_XCRS)";
  if (Ioctl(vcpu.fd, KVM_GET_MP_STATE, &state->mp) < 0) return "ioctl(KVM_GET_MP_STATE)";
  MsrRequest request;
  // KVM_GET_MSRS returns how many it read, stopping at the first it does not know: anything short is a failure.
  int read = Ioctl(vcpu.fd, kGetMsrs, request.msrs());
  if (read != static_cast<int>(kMsrCount)) {
    if (read >= 0) errno = EIO;
    return "ioctl(KVM_GET_MSRS)";
  }
  for (size_t i = 0; i < kMsrCount; ++i) state->msrValues[i] = request.entries()[i].data;
  return nullptr;
}

// Loads `state` into the vCPU; on failure returns the failing ioctl (errno is set), else nullptr.
const char* RestoreVcpu(Vcpu& vcpu, const SavedState* state) {
  if (state->magic != kStateMagic || state->version != 1) {
    errno = EINVAL;
    return "ioctl";
  }
  // Special registers first: they decide how the general registers and MSRs are interpreted.
  if (Ioctl(vcpu.fd, KVM_SET_SREGS, const_cast<kvm_sregs*>(&state->sregs)) < 0) return "ioctl(KVM_SET_SREGS)";
  if (Ioctl(vcpu.fd, KVM_SET_REGS, const_cast<kvm_regs*>(&state->regs)) < 0) return "ioctl(KVM_SET_REGS)";
  if (Ioctl(vcpu.fd, KVM_SET_FPU, const_cast<kvm_fpu*>(&state->fpu)) < 0) return "ioctl(KVM_SET_FPU)";
  if (Ioctl(vcpu.fd, kSetXsave, const_cast<uint8_t*>(state->xsave)) < 0) return "ioctl(KVM_SET_XSAVE)";
  if (Ioctl(vcpu.fd, KVM_SET_XCRS, const_cast<kvm_xcrs*>(&state->xcrs)) < 0) return "ioctl(KVM_SET_XCRS)";
  if (Ioctl(vcpu.fd, KVM_SET_MP_STATE, const_cast<kvm_mp_state*>(&state->mp)) < 0) return "ioctl(KVM_SET_MP_STATE)";
  MsrRequest request;
  for (size_t i = 0; i < kMsrCount; ++i) request.entries()[i].data = state->msrValues[i];
  int written = Ioctl(vcpu.fd, kSetMsrs, request.msrs());
  if (written != static_cast<int>(kMsrCount)) {
    if (written >= 0) errno = EIO;
    return "ioctl(KVM_SET_MSRS)";
  }
  return nullptr;
}

Napi::Value KvmSaveState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "ioctl", "the vCPU is running: pause it before saving its state");
  auto state = std::make_unique<SavedState>();
  if (const char* failed = SaveVcpu(*vcpu, state.get())) throw ErrnoError(env, errno, failed);
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
  if (const char* failed = RestoreVcpu(*vcpu, state.get())) throw ErrnoError(env, errno, failed);
  return env.Undefined();
}

// The handover area at the start of a VMM's state file (lib/vmm/state-file.ts describes the layout): the vCPU states
// in slots after it, and the words through which a sender's vCPU threads publish them and a successor's load them,
// each vCPU on its own thread, in parallel, without waiting for either process's JavaScript.
struct HandoverArea {
  uint32_t vcpusMagic;  // kVcpusMagic once every slot holds its vCPU's state
  uint32_t vcpuCount;
  uint32_t slotBytes;
  uint32_t saved;      // slots filled by the sender
  uint32_t restored;   // slots loaded by the successor
  uint32_t failed;     // set by a successor vCPU that could not load its slot
  uint64_t publishedNs;
  uint32_t jsonMagic;
  uint32_t jsonLength;
  uint32_t committed;  // the successor's commit point is reported: its vCPUs may run
};
constexpr uint32_t kVcpusMagic = 0x53435647;  // "GVCS"
constexpr size_t kSlotsOffset = 4096;

int64_t NowNs() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

// Waits until done(): yields for a moment, then sleeps on `word` a millisecond at a time. Loading vCPUs run SCHED_FIFO,
// and a FIFO thread that only yields never lets a normal thread run on its CPU: a sibling vCPU whose worker thread has
// not yet moved to its own CPU would wait for the load balancer (26 ms seen in an exec-mode resume). The moment of
// yielding keeps the usual case, every vCPU loading at once, at microseconds.
template <typename Done>
void YieldThenSleep(uint32_t* word, Done done) {
  const int64_t yieldUntil = NowNs() + 200 * 1000;
  for (;;) {
    uint32_t seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    if (done()) return;
    if (NowNs() < yieldUntil) {
      sched_yield();
      continue;
    }
    timespec slice{0, 1000000};
    FutexWaitWhile(word, seen, &slice);
  }
}

// For the few hundred microseconds a vCPU thread carries a handover (saving, or waiting for and loading its slot), it
// runs SCHED_FIFO: nothing else of the host's ordinary work (V8's helper threads, kernel workers) may delay it, and
// it hands the CPU back as soon as its guest is to run. Without the privilege it stays as it is.
class RealtimeWhile {
 public:
  RealtimeWhile() {
    sched_param param{};
    param.sched_priority = 1;
    raised_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
  }
  ~RealtimeWhile() { Drop(); }
  void Drop() {
    if (!raised_) return;
    sched_param param{};
    pthread_setschedparam(pthread_self(), SCHED_OTHER, &param);
    raised_ = false;
  }

 private:
  bool raised_ = false;
};

// A vCPU's slot in a handover area: where a sender's vCPU saves itself when paused (armed with kvmArmSave), or where
// a successor's loads itself from before it runs (kvmRun with a handover).
struct HandoverSpec {
  uint32_t mappingId = 0;
  std::shared_ptr<Mapping> mapping;
  uint32_t index = 0;
  uint32_t count = 0;
  // The successor's report pipe: its first vCPU writes the commit point there once every vCPU is loaded.
  int reportFd = -1;
  HandoverArea* area() const { return reinterpret_cast<HandoverArea*>(mapping->base); }
  SavedState* slot() const { return reinterpret_cast<SavedState*>(mapping->base + kSlotsOffset + index * sizeof(SavedState)); }
};

// [mapping, index, count] at info[first..]: a slot of the handover area at the start of that mapping.
HandoverSpec HandoverSpecArg(const Napi::CallbackInfo& info, size_t first, const char* syscall) {
  Napi::Env env = info.Env();
  HandoverSpec spec;
  spec.mappingId = static_cast<uint32_t>(ArgInt64(info, first, "mapping", 1, 0xffffffff));
  spec.mapping = LookupMapping(env, spec.mappingId, syscall);
  spec.index = static_cast<uint32_t>(ArgInt64(info, first + 1, "index", 0, 1023));
  spec.count = static_cast<uint32_t>(ArgInt64(info, first + 2, "count", 1, 1024));
  if (spec.index >= spec.count) throw CodeError(env, "EINVAL", EINVAL, syscall, "the vCPU's index must be below the vCPU count");
  CheckRange(env, *spec.mapping, 0, static_cast<int64_t>(kSlotsOffset + spec.count * sizeof(SavedState)), syscall);
  return spec;
}

// Runs the vCPU on a libuv worker thread until it halts, is paused, or fails; COM1 output is buffered for kvmSerial.
class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(Napi::Env env, std::shared_ptr<Vcpu> vcpu, HandoverSpec load)
      : Napi::AsyncWorker(env, "guestmemfs.kvmRun"),
        deferred_(Napi::Promise::Deferred::New(env)),
        vcpu_(std::move(vcpu)),
        load_(std::move(load)) {
    if (load_.mapping) load_.mapping->busy.fetch_add(1);
  }

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    Vcpu& vcpu = *vcpu_;
    vcpu.thread = pthread_self();
    vcpu.onThread.store(true);
    // A vCPU spins in guest mode and never yields: two woken on one CPU would take turns in whole time slices.
    cpu_set_t poolMask;
    bool repin = vcpu.pinned && pthread_getaffinity_np(vcpu.thread, sizeof(poolMask), &poolMask) == 0;
    if (repin) pthread_setaffinity_np(vcpu.thread, sizeof(vcpu.cpus), &vcpu.cpus);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, PauseSignal());
    pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
    // A successor's vCPU first loads its state from the handover; it runs only if every vCPU could.
    if (!load_.mapping || LoadFromArea(vcpu)) RunUntilStopped(vcpu);
    if (repin) pthread_setaffinity_np(vcpu.thread, sizeof(poolMask), &poolMask);
    vcpu.onThread.store(false);
    vcpu.running.store(false);
  }

  // The run loop, until a halt, a pause or a failure; a pause with a save armed saves the vCPU on this thread.
  void RunUntilStopped(Vcpu& vcpu) {
    vcpu.runStartedNs.store(NowNs());
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
    vcpu.runStoppedNs.store(NowNs());
    vcpu.run->immediate_exit = 0;
    if (errno_ == 0 && vcpu.pauseRequested.load()) {
      std::shared_ptr<HandoverSpec> armed;
      {
        std::lock_guard<std::mutex> lock(vcpu.armedMutex);
        armed = vcpu.armed;
      }
      if (armed) SaveToArea(vcpu, *armed);
    }
  }

  void OnOK() override {
    EndHandover();
    vcpu_->pauseRequested.store(false);
    if (errno_ != 0) {
      deferred_.Reject(ErrnoError(Env(), errno_, "ioctl(KVM_RUN)").Value());
      return;
    }
    deferred_.Resolve(Napi::String::New(Env(), reason_));
  }

  void OnError(const Napi::Error& error) override {
    EndHandover();
    vcpu_->running.store(false);
    deferred_.Reject(error.Value());
  }

 private:
  void EndHandover() {
    if (load_.mapping) EndMappingWork(Env(), load_.mappingId, *load_.mapping);
    load_.mapping.reset();
  }

  // The sender's vCPU thread, just stopped by the pause: its state into its slot; the last one publishes them all.
  static void SaveToArea(Vcpu& vcpu, const HandoverSpec& spec) {
    RealtimeWhile realtime;
    HandoverArea* area = spec.area();
    if (SaveVcpu(vcpu, spec.slot()) != nullptr) {
      spec.slot()->magic = 0;  // the JS thread finds the slot empty and saves it itself
      return;
    }
    if (__atomic_add_fetch(&area->saved, 1, __ATOMIC_ACQ_REL) != spec.count) return;
    area->publishedNs = static_cast<uint64_t>(NowNs());
    __atomic_store_n(&area->vcpusMagic, kVcpusMagic, __ATOMIC_RELEASE);
    FutexWakeAll(&area->vcpusMagic);
  }

  // The successor's vCPU thread: sleeps until the slots are published, loads its own, waits for the others, and the
  // first reports the commit point. False (with reason_) if it was cancelled (a pause) or some vCPU failed to load.
  bool LoadFromArea(Vcpu& vcpu) {
    RealtimeWhile realtime;
    HandoverArea* area = load_.area();
    vcpu.awaitingHandover.store(true);
    while (__atomic_load_n(&area->vcpusMagic, __ATOMIC_ACQUIRE) != kVcpusMagic) {
      if (vcpu.pauseRequested.load()) {
        vcpu.awaitingHandover.store(false);
        return Cancelled();
      }
      timespec slice{0, 5 * 1000000};
      FutexWaitWhile(&area->vcpusMagic, 0, &slice);
    }
    vcpu.handoverNoticedNs.store(NowNs());
    vcpu.awaitingHandover.store(false);
    bool fits = area->vcpuCount == load_.count && area->slotBytes == sizeof(SavedState);
    if (!fits || RestoreVcpu(vcpu, load_.slot()) != nullptr) {
      reason_ = fits ? "load-failed" : "load-mismatch";
      return Fail(area);
    }
    __atomic_add_fetch(&area->restored, 1, __ATOMIC_ACQ_REL);
    FutexWakeAll(&area->restored);
    auto failed = [area] { return __atomic_load_n(&area->failed, __ATOMIC_ACQUIRE) != 0; };
    // Every vCPU loaded, or none runs: a guest must not resume with some vCPUs from another moment.
    YieldThenSleep(&area->restored, [&] {
      return __atomic_load_n(&area->restored, __ATOMIC_ACQUIRE) >= load_.count || failed() || vcpu.pauseRequested.load();
    });
    if (failed()) {
      reason_ = "load-failed";
      return false;
    }
    if (__atomic_load_n(&area->restored, __ATOMIC_ACQUIRE) < load_.count) return Cancelled();
    if (load_.index == 0) {
      static const char kResuming[] = "resuming\n";
      // The commit point: from this report on the sender never takes the guest back.
      if (load_.reportFd >= 0 && write(load_.reportFd, kResuming, sizeof(kResuming) - 1) < 0) {
        reason_ = "report-failed";
        return Fail(area);
      }
      __atomic_store_n(&area->committed, 1, __ATOMIC_RELEASE);
      FutexWakeAll(&area->committed);
    }
    YieldThenSleep(&area->committed, [&] { return __atomic_load_n(&area->committed, __ATOMIC_ACQUIRE) != 0 || failed(); });
    if (failed()) {
      reason_ = "load-failed";
      return false;
    }
    return true;
  }

  // Marks the handover failed for every vCPU of it, and wakes those waiting on the others.
  static bool Fail(HandoverArea* area) {
    __atomic_store_n(&area->failed, 1, __ATOMIC_RELEASE);
    FutexWakeAll(&area->restored);
    FutexWakeAll(&area->committed);
    return false;
  }

  bool Cancelled() {
    reason_ = "cancelled";
    return false;
  }

  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Vcpu> vcpu_;
  HandoverSpec load_;
  std::string reason_ = "stopped";
  int errno_ = 0;
};

// kvmRunStartedAt(vcpu): CLOCK_MONOTONIC ns when the latest run entered KVM_RUN, or 0n while it has not yet.
Napi::Value KvmRunStartedAt(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::BigInt::New(info.Env(), vcpu->runStartedNs.load());
}

// kvmSetAffinity(vcpu, cpus): the CPUs the vCPU's thread is to run on from its next run on.
Napi::Value KvmSetAffinity(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(info.Env(), "EBUSY", EBUSY, "sched_setaffinity", "the vCPU is running: set its CPUs before it runs");
  vcpu->cpus = CpuSetArg(info, 1, "sched_setaffinity");
  vcpu->pinned = true;
  return info.Env().Undefined();
}

// Arms the vCPU with `next` (or disarms it), ending the previous spec's use of its mapping.
void ReplaceArmed(Napi::Env env, Vcpu& vcpu, std::shared_ptr<HandoverSpec> next) {
  {
    std::lock_guard<std::mutex> lock(vcpu.armedMutex);
    next.swap(vcpu.armed);
  }
  if (next) EndMappingWork(env, next->mappingId, *next->mapping);
}

// kvmArmSave(vcpu, mapping, index, count): from now on a pause saves the vCPU into its slot, on its own thread, and
// the last vCPU to do so publishes the area. kvmDisarmSave(vcpu) ends that.
Napi::Value KvmArmSave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  auto spec = std::make_shared<HandoverSpec>(HandoverSpecArg(info, 1, "kvmArmSave"));
  spec->mapping->busy.fetch_add(1);
  ReplaceArmed(env, *vcpu, std::move(spec));
  return env.Undefined();
}

Napi::Value KvmDisarmSave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "kvmDisarmSave", "the vCPU is running: pause it first");
  ReplaceArmed(env, *vcpu, nullptr);
  return env.Undefined();
}

// kvmHandoverNoticedAt(vcpu): CLOCK_MONOTONIC ns when the vCPU's loading run saw the slots published (0n if not).
Napi::Value KvmHandoverNoticedAt(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::BigInt::New(info.Env(), vcpu->handoverNoticedNs.load());
}

// kvmAwaitingHandover(vcpu): whether the vCPU's thread is waiting for a handover to be published (kvmRun with one).
Napi::Value KvmAwaitingHandover(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::Boolean::New(info.Env(), vcpu->awaitingHandover.load());
}

// kvmStateBytes(): the size of one vCPU's saved state (a slot of the handover area).
Napi::Value KvmStateBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), sizeof(SavedState)); }

// kvmRunStoppedAt(vcpu): CLOCK_MONOTONIC ns when the latest run left KVM_RUN, or 0n before any run ended.
Napi::Value KvmRunStoppedAt(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  return Napi::BigInt::New(info.Env(), vcpu->runStoppedNs.load());
}

Napi::Value KvmRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto vcpu = LookupVcpu(info);
  if (vcpu->running.load()) throw CodeError(env, "EBUSY", EBUSY, "ioctl(KVM_RUN)", "the vCPU is already running");
  // kvmRun(vcpu, mapping?, index?, count?, reportFd?): with a mapping, load the vCPU from its handover slot first.
  HandoverSpec load;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    load = HandoverSpecArg(info, 1, "ioctl(KVM_RUN)");
    load.reportFd = static_cast<int>(ArgInt64(info, 4, "reportFd", -1, INT_MAX));
  }
  vcpu->pauseRequested.store(false);
  vcpu->runStartedNs.store(0);
  vcpu->handoverNoticedNs.store(0);
  // Running from now on, also while a successor's vCPU waits for its slot: nothing may save or restore it meanwhile.
  vcpu->running.store(true);
  auto* worker = new RunWorker(env, vcpu, std::move(load));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// Asks a running vCPU to stop: immediate_exit makes the next KVM_RUN return, the signal interrupts the current one.
Napi::Value KvmPause(const Napi::CallbackInfo& info) {
  auto vcpu = LookupVcpu(info);
  vcpu->pauseRequested.store(true);
  vcpu->run->immediate_exit = 1;
  if (vcpu->onThread.load()) pthread_kill(vcpu->thread, PauseSignal());
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
  ReplaceArmed(env, *vcpu, nullptr);
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
  exports.Set("kvmSetAffinity", Napi::Function::New(env, KvmSetAffinity, "kvmSetAffinity"));
  exports.Set("kvmArmSave", Napi::Function::New(env, KvmArmSave, "kvmArmSave"));
  exports.Set("kvmDisarmSave", Napi::Function::New(env, KvmDisarmSave, "kvmDisarmSave"));
  exports.Set("kvmHandoverNoticedAt", Napi::Function::New(env, KvmHandoverNoticedAt, "kvmHandoverNoticedAt"));
  exports.Set("kvmAwaitingHandover", Napi::Function::New(env, KvmAwaitingHandover, "kvmAwaitingHandover"));
  exports.Set("kvmStateBytes", Napi::Function::New(env, KvmStateBytes, "kvmStateBytes"));
  exports.Set("kvmRunStoppedAt", Napi::Function::New(env, KvmRunStoppedAt, "kvmRunStoppedAt"));
  exports.Set("kvmSerial", Napi::Function::New(env, KvmSerial, "kvmSerial"));
  exports.Set("kvmCloseVcpu", Napi::Function::New(env, KvmCloseVcpu, "kvmCloseVcpu"));
}

}  // namespace gmfs

// The futex calls the futex family and the KVM family's vCPU handover share: waking every waiter on a word, and
// sleeping while a word holds a value (shared futexes: they key on the page, so they work across processes).
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdint>

namespace gmfs {

// Wakes every waiter on the word; how many woke, or -1 with errno.
inline long FutexWakeAll(uint32_t* word) { return syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0); }

// Sleeps while the word holds `expected`, for at most `timeout` (null: no limit); 0, or -1 with errno (EAGAIN: the
// word had changed already).
inline long FutexWaitWhile(uint32_t* word, uint32_t expected, const timespec* timeout) {
  return syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout, nullptr, 0);
}

}  // namespace gmfs

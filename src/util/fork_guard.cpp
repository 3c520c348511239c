#include "util/fork_guard.h"

#include <omp.h>
#include <pthread.h>

#include <atomic>

namespace nanoinfer {
namespace {

std::atomic<bool> forked{false};

void in_child() {
  forked = true;
  omp_set_num_threads(1);  // (the forking thread's own setting: it alone holds the copied pool)
}

}  // namespace

void arm_fork_guard() {
  static const int registered = pthread_atfork(nullptr, nullptr, in_child);
  (void)registered;
}

bool forked_from_threads() {
  return forked;
}

}  // namespace nanoinfer

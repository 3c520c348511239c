// Bounds every wait on other ranks. A rank that dies inside a collective is noticed by the MPI
// launcher, which ends the job; one that hangs (or a device collective that never completes)
// would leave the others blocked forever. While a WaitScope is open, a background thread
// watches the clock: past the timeout without a new scope opening, it prints one line naming
// the rank and the wait and ends the process, and the launcher then ends the rest.
#pragma once

namespace nanoinfer {

// Seconds a rank may wait on the others: NANOINFER_TP_TIMEOUT, default 300.
int wait_timeout_s();

class WaitScope {
 public:
  WaitScope(int rank, const char* what);  // what: a string literal ("all_reduce", ...)
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;
};

}  // namespace nanoinfer

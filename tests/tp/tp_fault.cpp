// A rank that hangs or dies while the other waits for it in a collective (run by ctest under
// mpirun -np 2): the job must end with a message, never hang. `hang`: rank 1 sleeps, so rank 0's
// watchdog ends it after NANOINFER_TP_TIMEOUT seconds and the launcher ends rank 1. `die`: rank 1
// is killed, and the launcher (or rank 0's watchdog, whichever comes first) ends the job.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "dist/communicator.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "hang" && mode != "die") {
    std::fprintf(stderr, "usage: tp_fault hang|die\n");
    return 2;
  }
  auto comm = nanoinfer::make_mpi_communicator();
  if (comm->rank() == 1) {
    if (mode == "hang") std::this_thread::sleep_for(std::chrono::seconds(600));
    std::raise(SIGKILL);
  }
  comm->all_true(true);
  std::printf("rank %d: the collective returned\n", comm->rank());
  return 1;
}

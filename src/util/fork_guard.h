// OpenMP's threads do not survive fork(): GNU libgomp's pool, copied into the child, names
// threads that are not there, and the forking thread's first parallel region in the child waits
// for them forever (a Python multiprocessing child making an Engine hung so). Once armed, a child
// forked from this process runs that thread's parallel regions on it alone; other threads of the
// child start pools of their own.
#pragma once

namespace nanoinfer {

// Registers the fork handler, once (later calls do nothing). Engine's constructor calls it, before
// anything of the engine runs on OpenMP's threads.
void arm_fork_guard();
// Whether this process was forked from one that had armed the guard, after which its forking
// thread's parallel regions run on one thread.
bool forked_from_threads();

}  // namespace nanoinfer

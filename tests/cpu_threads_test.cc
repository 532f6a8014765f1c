// The CPU backend's default thread count: the physical cores among the CPUs this process may run
// on, checked against the kernel's own list of each CPU's hardware-thread siblings (a different
// reading of the topology than the code's package and core ids), and under a narrowed affinity.
#include <sched.h>

#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "backends/cpu/cpu_backend.h"
#include "gtest/gtest.h"

namespace ds::testing {
namespace {

// Distinct sibling lists among the allowed CPUs (one per core that has an allowed CPU), or -1
// where the kernel does not publish them.
int CoresBySiblingLists(const cpu_set_t& allowed) {
  std::set<std::string> lists;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    std::ifstream file("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    std::string list;
    if (!(file >> list)) return -1;
    lists.insert(list);
  }
  return static_cast<int>(lists.size());
}

TEST(CpuThreads, DefaultIsThePhysicalCoresThisProcessMayRunOn) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  const int n = DefaultCpuThreads();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, CPU_COUNT(&allowed));
  if (const int cores = CoresBySiblingLists(allowed); cores > 0) {
    EXPECT_EQ(n, cores);
  }

  // A thread allowed one CPU (sched_getaffinity(0) reads the calling thread's mask) gets one.
  int first = 0;
  while (!CPU_ISSET(first, &allowed)) ++first;
  int narrowed = -1;
  std::thread([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (sched_setaffinity(0, sizeof one, &one) == 0) narrowed = DefaultCpuThreads();
  }).join();
  EXPECT_EQ(narrowed, 1);
}

}  // namespace
}  // namespace ds::testing

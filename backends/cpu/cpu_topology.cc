// How many threads the CPU backend runs by default: one per physical core this process may run
// on. Decode streams weights from memory, which a core's second hardware thread does not make
// faster, and a container or `taskset` that allows a few CPUs of a large host must not get a
// thread per CPU of the host (std::thread::hardware_concurrency counts those).
#include <sched.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "backends/cpu/cpu_backend.h"

namespace ds {
namespace {

// The value of /sys/devices/system/cpu/cpuN/topology/NAME, or -1 where it cannot be read.
long TopologyValue(int cpu, const char* name) {
  std::ifstream file("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/" + name);
  long value = -1;
  if (!(file >> value)) return -1;
  return value;
}

}  // namespace

int DefaultCpuThreads() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int n_allowed = CPU_COUNT(&allowed);
  // A core is its package and its core id; CPUs that share both are one core's threads.
  std::set<std::pair<long, long>> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    const long package = TopologyValue(cpu, "physical_package_id"), core = TopologyValue(cpu, "core_id");
    if (package < 0 || core < 0) return std::max(1, n_allowed);  // no topology: count CPUs
    cores.emplace(package, core);
  }
  return std::max<int>(1, static_cast<int>(cores.size()));
}

}  // namespace ds

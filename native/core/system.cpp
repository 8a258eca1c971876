// What the machine lets this process use: CPUs (affinity mask, cgroup CPU quota), memory (RAM + swap, cgroup
// memory limit), and the last-level cache's size. The CPU stream sizes its pool from the first; the allocator
// refuses a single tensor larger than the second (its large blocks are mapped with MAP_NORESERVE, which skips
// the kernel's own overcommit check: a 40 GB tensor on a 24 GB machine was "allocated" and the process killed
// when it was filled); group norm and Winograd size their work by the third.
// Limits in a container come from its cgroup: v2 files (cpu.max, memory.max) in the process's cgroup and each
// ancestor (a limit anywhere up the tree applies), v1 files of the cpu / memory controllers' hierarchies. The
// cgroup's own folder is tried, then the mount's root (inside a container the path in /proc/self/cgroup may
// name the host's hierarchy while the container sees its own at the root). HYPERSD_CGROUP_ROOT replaces
// /sys/fs/cgroup (cgroups mounted elsewhere; the tests).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#include <sys/sysinfo.h>
#endif

#include "hypersd/ops.h"

namespace hsd {
namespace {

// The first line of a file, "" when it cannot be read.
std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (f) std::getline(f, line);
  return line;
}

struct Cgroups {
  std::string root;                    // where the hierarchies are mounted
  std::string v2;                      // the process's cgroup v2 path ("" without one)
  std::string cpu_dir, cpu_path;       // v1: the cpu controller's mount folder name and the process's path
  std::string mem_dir, mem_path;       // v1: the memory controller's
};

Cgroups read_cgroups() {
  Cgroups g;
  const char* env = std::getenv("HYPERSD_CGROUP_ROOT");
  g.root = env && *env ? env : "/sys/fs/cgroup";
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line)) {  // "<id>:<controllers>:<path>"
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string ctrl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && ctrl.empty()) g.v2 = path;
    std::stringstream ss(ctrl);
    for (std::string c; std::getline(ss, c, ',');) {
      if (c == "cpu") g.cpu_dir = ctrl, g.cpu_path = path;
      if (c == "memory") g.mem_dir = ctrl, g.mem_path = path;
    }
  }
  return g;
}

// The v2 folders whose limits apply: the process's cgroup, its ancestors, the root.
std::vector<std::string> v2_dirs(const Cgroups& g) {
  std::vector<std::string> out;
  std::string p = g.v2;
  while (!p.empty() && p != "/") {
    out.push_back(g.root + p);
    p = p.substr(0, p.find_last_of('/'));
  }
  out.push_back(g.root);
  return out;
}

// The v1 folders to read for a controller: its mount (named as in /proc/self/cgroup, else the usual names) with
// the process's path, then the mount's root.
std::vector<std::string> v1_dirs(const Cgroups& g, const std::string& dir, const std::string& path,
                                 std::initializer_list<const char*> usual) {
  std::vector<std::string> out;
  std::vector<std::string> mounts;
  if (!dir.empty()) mounts.push_back(g.root + "/" + dir);
  for (const char* u : usual) mounts.push_back(g.root + "/" + u);
  for (const std::string& m : mounts) {
    if (!path.empty() && path != "/") out.push_back(m + path);
    out.push_back(m);
  }
  return out;
}

// The smallest positive limit read(dir) finds over the v2 folders, else over the v1 ones; 0 when none is set.
template <class V2, class V1>
double smallest_limit(const Cgroups& g, V2 read_v2, const std::vector<std::string>& v1, V1 read_v1) {
  double limit = 0;
  auto take = [&](double v) {
    if (v > 0 && (limit == 0 || v < limit)) limit = v;
  };
  for (const std::string& d : v2_dirs(g)) take(read_v2(d));
  if (limit > 0) return limit;
  for (const std::string& d : v1) take(read_v1(d));
  return limit;
}

// The CPU quota as a number of CPUs, 0 when none is set.
double cgroup_cpu_limit(const Cgroups& g) {
  return smallest_limit(
      g,
      [](const std::string& d) {  // cpu.max: "max 100000" or "<quota> <period>"
        std::istringstream f(first_line(d + "/cpu.max"));
        std::string quota;
        double period = 0;
        return f >> quota >> period && quota != "max" && period > 0 ? std::atof(quota.c_str()) / period : 0.0;
      },
      v1_dirs(g, g.cpu_dir, g.cpu_path, {"cpu,cpuacct", "cpu"}),
      [](const std::string& d) {  // a quota of -1: no limit
        const double quota = std::atof(first_line(d + "/cpu.cfs_quota_us").c_str());
        const double period = std::atof(first_line(d + "/cpu.cfs_period_us").c_str());
        return quota > 0 && period > 0 ? quota / period : 0.0;
      });
}

// The memory limit in bytes, 0 when none is set.
double cgroup_memory_limit(const Cgroups& g) {
  return smallest_limit(
      g,
      [](const std::string& d) {  // memory.max: "max" or bytes
        const std::string v = first_line(d + "/memory.max");
        return v.empty() || v == "max" ? 0.0 : std::atof(v.c_str());
      },
      v1_dirs(g, g.mem_dir, g.mem_path, {"memory"}),
      [](const std::string& d) {  // "no limit" reads as ~9.2e18
        const double v = std::atof(first_line(d + "/memory.limit_in_bytes").c_str());
        return v < 1e18 ? v : 0.0;
      });
}

}  // namespace

int available_cpus() {
  unsigned hw = std::thread::hardware_concurrency();
  int n = hw ? (int)hw : 1;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
  const double quota = cgroup_cpu_limit(read_cgroups());
  if (quota > 0) n = std::max(1, std::min(n, (int)std::ceil(quota - 1e-9)));
#endif
  return n;
}

// Not sysconf(_SC_LEVEL3_CACHE_SIZE): on the EPYC development VM glibc reads 384 MiB there from cpuid (the whole
// package's L3), where the VM's CPU has 32 MiB; sysfs sizes read like "32768K".
size_t last_level_cache_bytes() {
  static const size_t bytes = [] {
    size_t best = 0;
    for (int i = 0; i < 8; ++i) {
      const std::string v = first_line("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      const size_t unit = *end == 'K' || *end == 'k' ? 1024 : *end == 'M' ? 1 << 20 : 1;
      best = std::max(best, (size_t)n * unit);
    }
    return best > 0 ? best : (size_t)32 << 20;
  }();
  return bytes;
}

double memory_limit_bytes() {
  double limit = 0;
#ifdef __linux__
  struct sysinfo si;
  if (sysinfo(&si) == 0) limit = ((double)si.totalram + (double)si.totalswap) * (double)si.mem_unit;
  const double cg = cgroup_memory_limit(read_cgroups());
  if (cg > 0 && (limit == 0 || cg < limit)) limit = cg;
#endif
  return limit;
}

}  // namespace hsd

// What the machine lets this process use: CPUs (affinity mask, cgroup CPU quota) and memory (RAM + swap,
// cgroup memory limit). The CPU stream sizes its pool from the first; the allocator refuses a single tensor
// larger than the second (its large blocks are mapped with MAP_NORESERVE, which skips the kernel's own
// overcommit check: a 40 GB tensor on a 24 GB machine was "allocated" and the process killed when it was
// filled).
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

// The CPU quota as a number of CPUs, 0 when none is set.
double cgroup_cpu_limit(const Cgroups& g) {
  double limit = 0;
  auto take = [&](double cpus) {
    if (cpus > 0 && (limit == 0 || cpus < limit)) limit = cpus;
  };
  for (const std::string& d : v2_dirs(g)) {  // cpu.max: "max 100000" or "<quota> <period>"
    std::istringstream f(first_line(d + "/cpu.max"));
    std::string quota;
    double period = 0;
    if (f >> quota >> period && quota != "max" && period > 0) take(std::atof(quota.c_str()) / period);
  }
  if (limit > 0) return limit;
  for (const std::string& d : v1_dirs(g, g.cpu_dir, g.cpu_path, {"cpu,cpuacct", "cpu"})) {
    const double quota = std::atof(first_line(d + "/cpu.cfs_quota_us").c_str());  // -1: no limit
    const double period = std::atof(first_line(d + "/cpu.cfs_period_us").c_str());
    if (quota > 0 && period > 0) take(quota / period);
  }
  return limit;
}

// The memory limit in bytes, 0 when none is set.
double cgroup_memory_limit(const Cgroups& g) {
  double limit = 0;
  auto take = [&](double bytes) {
    if (bytes > 0 && (limit == 0 || bytes < limit)) limit = bytes;
  };
  for (const std::string& d : v2_dirs(g)) {  // memory.max: "max" or bytes
    const std::string v = first_line(d + "/memory.max");
    if (!v.empty() && v != "max") take(std::atof(v.c_str()));
  }
  if (limit > 0) return limit;
  for (const std::string& d : v1_dirs(g, g.mem_dir, g.mem_path, {"memory"})) {
    const double v = std::atof(first_line(d + "/memory.limit_in_bytes").c_str());
    if (v > 0 && v < 1e18) take(v);  // "no limit" reads as ~9.2e18
  }
  return limit;
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

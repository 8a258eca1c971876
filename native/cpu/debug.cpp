// Test-support ops, registered with the shape family: debug_sleep (attr `ms`: sleeps on the stream's thread,
// then copies input 0 to output 0, bytes as they are) and debug_fail (always throws). The engine tests use
// them to check that a kernel error surfaces at the next sync point and that the JS event loop keeps
// running while a long kernel runs.
#include <chrono>
#include <cstring>
#include <thread>

#include "hypersd/ops.h"

namespace hsd {
namespace {

void debug_sleep_kernel(const OpContext& c) {
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(c.attrs.f("ms", 0.0)));
  if (!c.in.empty() && !c.out.empty()) {
    const Tensor &x = c.in[0], &y = c.out[0];
    if (x.nbytes() != y.nbytes()) throw Error("debug_sleep: input " + x.describe() + " and output " + y.describe() + " differ in size");
    std::memcpy(y.raw(), x.raw(), y.nbytes());
  }
}

void debug_fail_kernel(const OpContext&) { throw Error("debug_fail: requested failure"); }

}  // namespace

void register_debug_cpu(OpRegistry& r) {
  r.add_cpu("debug_sleep", debug_sleep_kernel, false);
  r.add_cpu("debug_fail", debug_fail_kernel, false);
}
}  // namespace hsd

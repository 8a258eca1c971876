// The Node binding: thin. It converts JS arguments to core calls and core errors to JS Errors; all compute
// runs on the core's streams. Tensors cross into JS as externals holding a core Tensor (a shared_ptr to the
// storage): dispose() drops the reference at once, the GC finalizer is only a safety net, and queued
// kernels keep their own references, so freeing is stream-ordered.
#include <algorithm>
#include <napi.h>

#include <cstring>
#include <future>
#include <memory>

#include "hypersd/ops.h"

namespace {

using hsd::Attrs;
using hsd::Device;
using hsd::DType;
using hsd::Tensor;

// One handle: the tensor, whether it is live (not disposed), and the bytes it counts in memory()'s live tensors
// (its own storage's size; 0 for a view). Handles live and their bytes are counted per JS thread (each
// worker_threads Worker has its own), at wrap, dispose and the finalizer of a handle the GC collects undisposed:
// what lib/tensor kept with a FinalizationRegistry, whose register and unregister had cost ~0.3-0.5 us of every
// op's output.
struct Box {
  Tensor t;
  bool alive = true;
  double bytes = 0;
};
struct LiveCount {
  double tensors = 0, bytes = 0;
};
thread_local LiveCount g_live;
void release(Box* b) {
  if (!b->alive) return;
  b->alive = false;
  b->t = Tensor();
  g_live.tensors -= 1;
  g_live.bytes -= b->bytes;
}

Napi::Value wrap(Napi::Env env, Tensor t, bool owns = true) {
  const double bytes = owns ? (double)t.nbytes() : 0.0;
  g_live.tensors += 1;
  g_live.bytes += bytes;
  return Napi::External<Box>::New(env, new Box{std::move(t), true, bytes}, [](Napi::Env, Box* b) {
    release(b);
    delete b;
  });
}

Tensor& unwrap(const Napi::Value& v, const char* what) {
  if (!v.IsExternal()) throw hsd::Error(std::string(what) + " is not a tensor handle");
  Box* b = v.As<Napi::External<Box>>().Data();
  if (!b->alive) throw hsd::Error(std::string(what) + " was disposed");
  return b->t;
}
// The same for run()'s i-th input or output: the name is built only for the error.
Tensor& unwrap_arg(const Napi::Value& v, const char* kind, uint32_t i) {
  if (v.IsExternal()) {
    Box* b = v.As<Napi::External<Box>>().Data();
    if (b->alive) return b->t;
  }
  return unwrap(v, (std::string(kind) + " " + std::to_string(i)).c_str());
}

std::vector<int64_t> to_shape(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw hsd::Error(std::string(what) + " must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> s;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    double d = a.Get(i).As<Napi::Number>().DoubleValue();
    if (d < 0 || d != (double)(int64_t)d) throw hsd::Error(std::string(what) + " must hold non-negative integers");
    s.push_back((int64_t)d);
  }
  return s;
}

template <class F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

Napi::Value Empty(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    auto shape = to_shape(info[0], "shape");
    DType dt = hsd::dtype_from_name(info[1].As<Napi::String>());
    Device dev = hsd::device_from_name(info[2].As<Napi::String>());
    // Op outputs: only work enqueued after this touches them, so a block queued tasks still use may serve.
    return wrap(info.Env(), hsd::empty(shape, dt, dev, /*stream_ordered=*/true));
  });
}

// fromBuffer(view, shape, dtype, device): copies the bytes now (CPU) or through the CUDA stream.
Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    if (!info[0].IsTypedArray() && !info[0].IsBuffer()) throw hsd::Error("data must be a typed array or Buffer");
    auto ta = info[0].As<Napi::TypedArray>();
    size_t bytes = ta.ByteLength();
    const uint8_t* src = (const uint8_t*)ta.ArrayBuffer().Data() + ta.ByteOffset();
    auto shape = to_shape(info[1], "shape");
    DType dt = hsd::dtype_from_name(info[2].As<Napi::String>());
    Device dev = hsd::device_from_name(info[3].As<Napi::String>());
    Tensor t = hsd::empty(shape, dt, dev);
    if (bytes != t.nbytes())
      throw hsd::Error("data has " + std::to_string(bytes) + " bytes but " + t.describe() + " needs " +
                       std::to_string(t.nbytes()));
    if (dev == Device::CPU) {
      hsd::copy_from_host(t, src);
    } else {
      auto host = std::make_shared<std::vector<uint8_t>>(src, src + bytes);
      hsd::stream(dev).enqueue_task("upload " + t.describe(), [t, host] { hsd::copy_from_host(t, host->data()); });
    }
    return wrap(info.Env(), t);
  });
}

// view(handle, shape, strides | null, offset)
Napi::Value View(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Tensor& t = unwrap(info[0], "tensor");
    auto shape = to_shape(info[1], "shape");
    std::vector<int64_t> strides;
    if (info.Length() > 2 && info[2].IsArray()) strides = to_shape(info[2], "strides");
    int64_t offset = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : -1;
    return wrap(info.Env(), hsd::view(t, shape, strides, offset), /*owns=*/false);
  });
}

Attrs to_attrs(const Napi::Value& v) {
  Attrs a;
  if (!v.IsObject()) return a;
  auto o = v.As<Napi::Object>();
  auto keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); ++i) {
    Napi::Value key = keys.Get(i);
    Napi::Value x = o.Get(key);
    if (x.IsUndefined()) continue;
    std::string k = key.As<Napi::String>();
    if (x.IsNumber()) a.set(k, x.As<Napi::Number>().DoubleValue());
    else if (x.IsBoolean()) a.set(k, x.As<Napi::Boolean>().Value() ? 1.0 : 0.0);
    else if (x.IsArray()) {
      auto arr = x.As<Napi::Array>();
      std::vector<double> d;
      for (uint32_t j = 0; j < arr.Length(); ++j) d.push_back(arr.Get(j).As<Napi::Number>().DoubleValue());
      a.set(k, d);
    } else {
      throw hsd::Error("attribute '" + k + "' must be a number, boolean or array of numbers");
    }
  }
  return a;
}

// Ops by number: opId(name) looks the name up once (an Error for an unknown op), run() then indexes this table
// (the OpDefs live as long as the registry, i.e. the process).
// Per JS thread: lib/ops/runtime.ts keeps the numbers per module instance, and each worker_threads Worker has its
// own (a table shared by the threads would race their registrations against each other's lookups).
std::vector<const hsd::OpDef*>& op_table() {
  thread_local std::vector<const hsd::OpDef*> t;
  return t;
}

// opId(name): the number run() takes for that op.
Napi::Value OpId(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    std::string name = info[0].As<Napi::String>();
    const hsd::OpDef* def = hsd::OpRegistry::get().find(name);
    if (!def) throw hsd::Error("unknown op '" + name + "'");
    auto& t = op_table();
    for (size_t i = 0; i < t.size(); ++i)
      if (t[i] == def) return Napi::Number::New(info.Env(), (double)i);
    t.push_back(def);
    return Napi::Number::New(info.Env(), (double)(t.size() - 1));
  });
}

// An op's inputs or outputs from an array of handles (each named by its place when it is not a live tensor).
std::vector<Tensor> unwrap_args(const Napi::Value& v, const char* kind) {
  auto arr = v.As<Napi::Array>();
  const uint32_t n = arr.Length();
  std::vector<Tensor> ts;
  ts.reserve(n);
  for (uint32_t i = 0; i < n; ++i) ts.push_back(unwrap_arg(arr.Get(i), kind, i));
  return ts;
}

// run(op, inputs[], outputs[], attrs): enqueues and returns at once. op: a name, or a number from opId.
Napi::Value Run(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    const hsd::OpDef* def = nullptr;
    std::string name;
    if (info[0].IsNumber()) {
      const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
      if (id >= op_table().size()) throw hsd::Error("run: op id " + std::to_string(id) + " was not given by opId");
      def = op_table()[id];
    } else {
      name = info[0].As<Napi::String>();
    }
    std::vector<Tensor> in = unwrap_args(info[1], "input"), out = unwrap_args(info[2], "output");
    Attrs attrs = info.Length() > 3 ? to_attrs(info[3]) : Attrs{};
    if (def) hsd::enqueue(*def, std::move(in), std::move(out), std::move(attrs));
    else hsd::enqueue(name, std::move(in), std::move(out), std::move(attrs));
    return info.Env().Undefined();
  });
}

// Attribute key sets for runFlat, registered once each by attrKeys: the keys as given and, for building Attrs'
// sorted map with a hint at its end, their order by name.
struct KeySet {
  std::vector<std::string> keys;
  std::vector<uint32_t> order;  // indices into keys, by name
};
std::vector<KeySet>& key_sets() {  // per JS thread, as op_table
  thread_local std::vector<KeySet> t;
  return t;
}

// attrKeys(names[]): the number runFlat takes for these attribute names, in this order.
Napi::Value AttrKeys(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsArray()) throw hsd::Error("attrKeys: expected an array of names");
    auto arr = info[0].As<Napi::Array>();
    KeySet ks;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value k = arr.Get(i);
      if (!k.IsString()) throw hsd::Error("attrKeys: names must be strings");
      ks.keys.push_back(k.As<Napi::String>());
    }
    ks.order.resize(ks.keys.size());
    for (uint32_t i = 0; i < ks.order.size(); ++i) ks.order[i] = i;
    std::sort(ks.order.begin(), ks.order.end(), [&](uint32_t a, uint32_t b) { return ks.keys[a] < ks.keys[b]; });
    for (size_t i = 1; i < ks.order.size(); ++i)
      if (ks.keys[ks.order[i]] == ks.keys[ks.order[i - 1]])
        throw hsd::Error("attrKeys: attribute '" + ks.keys[ks.order[i]] + "' given twice");
    auto& t = key_sets();
    t.push_back(std::move(ks));
    return Napi::Number::New(info.Env(), (double)(t.size() - 1));
  });
}

// runFlat(op id, inputs[], outputs[], key set, values: Float64Array): run() with numeric attributes, the names
// from a key set registered once (attrKeys) and the values, one per name, read straight from the typed array:
// none of the per-attribute property enumeration, lookups and string conversions of run()'s object (which cost
// ~0.4 us an attribute, a third of a typical op's enqueue).
Napi::Value RunFlat(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    if (id >= op_table().size()) throw hsd::Error("runFlat: op id " + std::to_string(id) + " was not given by opId");
    const uint32_t kid = info[3].As<Napi::Number>().Uint32Value();
    if (kid >= key_sets().size()) throw hsd::Error("runFlat: key set " + std::to_string(kid) + " was not given by attrKeys");
    const KeySet& ks = key_sets()[kid];
    if (!info[4].IsTypedArray() || info[4].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      throw hsd::Error("runFlat: values must be a Float64Array");
    auto vals = info[4].As<Napi::Float64Array>();
    if (vals.ElementLength() < ks.keys.size()) throw hsd::Error("runFlat: fewer values than attribute names");
    std::vector<Tensor> in = unwrap_args(info[1], "input"), out = unwrap_args(info[2], "output");
    Attrs attrs;
    const double* v = vals.Data();
    for (uint32_t i : ks.order) attrs.values.emplace_hint(attrs.values.end(), ks.keys[i], std::vector<double>{v[i]});
    hsd::enqueue(*op_table()[id], std::move(in), std::move(out), std::move(attrs));
    return info.Env().Undefined();
  });
}

// Settles a worker's promise from its completion callback (on the JS thread). When a worker_threads Worker is
// terminated with reads or syncs still queued, Node runs these callbacks while it tears the Worker's environment
// down: creating the ArrayBuffer or settling then throws a Napi::Error, which, thrown out of OnOK, reached
// std::terminate and aborted the whole process (main thread included). No JS can observe that promise any
// more, so the failure is dropped; with the environment alive (an ArrayBuffer too large to create) the
// promise is rejected with the error instead.
template <class F>
void settle(Napi::Promise::Deferred& d, F&& resolve) {
  try {
    resolve();
  } catch (const Napi::Error& e) {
    try {
      d.Reject(e.Value());
    } catch (...) {
    }
  } catch (const std::exception& e) {
    try {
      d.Reject(Napi::Error::New(d.Env(), e.what()).Value());
    } catch (...) {
    }
  }
}

// Promise-returning waits run on libuv's pool so the JS thread never blocks on compute.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, Tensor t)
      : Napi::AsyncWorker(env), t_(std::move(t)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    hsd::set_client(client_);  // errors of this JS thread's work, not another thread's
    try {
      bytes_ = hsd::stream(t_.device()).read(t_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    settle(deferred_, [&] {
      auto ab = Napi::ArrayBuffer::New(Env(), bytes_.size());
      if (!bytes_.empty()) std::memcpy(ab.Data(), bytes_.data(), bytes_.size());
      deferred_.Resolve(ab);
    });
  }
  void OnError(const Napi::Error& e) override {
    settle(deferred_, [&] { deferred_.Reject(e.Value()); });
  }

 private:
  Tensor t_;
  std::vector<uint8_t> bytes_;
  Napi::Promise::Deferred deferred_;
  uint32_t client_ = hsd::current_client();  // the JS thread's (the constructor runs on it)
};

Napi::Value Read(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Tensor& t = unwrap(info[0], "tensor");
    if (!t.is_contiguous()) throw hsd::Error("read needs a contiguous tensor (copy it first)");
    auto* w = new ReadWorker(info.Env(), t);
    auto p = w->promise();
    w->Queue();
    return p;
  });
}

struct SyncWorker : Napi::AsyncWorker {
  Device d;
  Napi::Promise::Deferred def;
  uint32_t client = hsd::current_client();  // the JS thread's (the constructor runs on it)
  SyncWorker(Napi::Env env, Device d) : Napi::AsyncWorker(env), d(d), def(Napi::Promise::Deferred::New(env)) {}
  void Execute() override {
    hsd::set_client(client);
    try {
      hsd::stream(d).sync();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    settle(def, [&] { def.Resolve(Env().Undefined()); });
  }
  void OnError(const Napi::Error& e) override {
    settle(def, [&] { def.Reject(e.Value()); });
  }
};

Napi::Value Sync(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    auto* s = new SyncWorker(info.Env(), hsd::device_from_name(info[0].As<Napi::String>()));
    auto p = s->def.Promise();
    s->Queue();
    return p;
  });
}

// copyTo(handle, device): ordered after the source's queued work, before later work on the destination.
Napi::Value CopyTo(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Tensor src = unwrap(info[0], "tensor");
    Device dd = hsd::device_from_name(info[1].As<Napi::String>());
    if (!src.is_contiguous()) throw hsd::Error("to(): copy a non-contiguous tensor first");
    Tensor dst = hsd::empty(src.shape, src.dtype, dd);
    auto staging = std::make_shared<std::vector<uint8_t>>(src.nbytes());
    auto ready = std::make_shared<std::promise<void>>();
    auto fut = std::make_shared<std::shared_future<void>>(ready->get_future().share());
    hsd::stream(src.device()).enqueue_task("to(" + std::string(hsd::device_name(dd)) + ") read " + src.describe(),
                                           [src, staging, ready] {
                                             try {
                                               std::string why;
                                               if (src.storage && hsd::failed_why(*src.storage, &why))
                                                 throw hsd::Error("the source was written by an op that failed (" + why + ")");
                                               hsd::copy_to_host(src, staging->data());
                                               ready->set_value();
                                             } catch (...) {
                                               ready->set_exception(std::current_exception());
                                               throw;
                                             }
                                           });
    hsd::stream(dd).enqueue_task("to(" + std::string(hsd::device_name(dd)) + ") write " + dst.describe(),
                                 [dst, staging, fut] {
                                   try {
                                     fut->get();
                                   } catch (const std::exception& e) {
                                     hsd::mark_failed(*dst.storage, e.what());  // the copy reads as failed too
                                     throw;
                                   }
                                   hsd::copy_from_host(dst, staging->data());
                                 });
    return wrap(info.Env(), dst);
  });
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal()) release(info[0].As<Napi::External<Box>>().Data());
  return info.Env().Undefined();
}

Napi::Object stats(Napi::Env env, Device d) {
  auto s = hsd::memory_stats(d);
  auto o = Napi::Object::New(env);
  o.Set("allocatedBytes", (double)s.allocated_bytes);
  o.Set("cachedBytes", (double)s.cached_bytes);
  o.Set("peakBytes", (double)s.peak_bytes);
  o.Set("liveStorages", (double)s.live_storages);
  return o;
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    auto o = Napi::Object::New(info.Env());
    o.Set("cpu", stats(info.Env(), Device::CPU));
    o.Set("cuda", stats(info.Env(), Device::CUDA));
    o.Set("tensors", g_live.tensors);  // this thread's live handles and their bytes (see Box)
    o.Set("bytes", g_live.bytes);
    o.Set("failedMarks", (double)hsd::failed_mark_count());
    return o;
  });
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    hsd::empty_cache(hsd::device_from_name(info[0].As<Napi::String>()));
    return info.Env().Undefined();
  });
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    hsd::reset_peak(hsd::device_from_name(info[0].As<Napi::String>()));
    return info.Env().Undefined();
  });
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    hsd::stream(Device::CPU).set_threads(info[0].As<Napi::Number>().Int32Value());  // it checks the count
    return info.Env().Undefined();
  });
}

Napi::Value Threads(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Number::New(info.Env(), hsd::stream(Device::CPU).pool()->size()); });
}

// Error scopes (lib/native.ts): the JS thread's client number, a fresh one, setting it, and ending one.
uint32_t client_arg(const Napi::CallbackInfo& info, const char* fn) {
  const double v = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(v >= 1 && v <= 4294967295.0 && v == (double)(uint32_t)v))
    throw hsd::Error(std::string(fn) + ": expected a client number from newClient()");
  return (uint32_t)v;
}
Napi::Value Client(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Number::New(info.Env(), hsd::current_client()); });
}
Napi::Value NewClient(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Number::New(info.Env(), hsd::new_client()); });
}
Napi::Value SetClient(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    hsd::set_client(client_arg(info, "setClient"));
    return info.Env().Undefined();
  });
}
Napi::Value EndClient(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    hsd::end_client(client_arg(info, "endClient"));
    return info.Env().Undefined();
  });
}

Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    std::string why;
    bool ok = hsd::cuda_available(&why);
    auto o = Napi::Object::New(info.Env());
    o.Set("available", ok);
    o.Set("reason", ok ? std::string("") : why);
    return o;
  });
}

Napi::Value Ops(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    auto all = hsd::OpRegistry::get().all();
    auto arr = Napi::Array::New(info.Env(), all.size());
    for (size_t i = 0; i < all.size(); ++i) {
      auto o = Napi::Object::New(info.Env());
      o.Set("name", all[i]->name);
      o.Set("cpu", all[i]->cpu != nullptr);
      o.Set("cuda", all[i]->cuda != nullptr);
      arr.Set((uint32_t)i, o);
    }
    return arr;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("empty", Napi::Function::New(env, Empty));
  exports.Set("fromBuffer", Napi::Function::New(env, FromBuffer));
  exports.Set("view", Napi::Function::New(env, View));
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("opId", Napi::Function::New(env, OpId));
  exports.Set("attrKeys", Napi::Function::New(env, AttrKeys));
  exports.Set("runFlat", Napi::Function::New(env, RunFlat));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("sync", Napi::Function::New(env, Sync));
  exports.Set("copyTo", Napi::Function::New(env, CopyTo));
  exports.Set("dispose", Napi::Function::New(env, Dispose));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  exports.Set("resetPeak", Napi::Function::New(env, ResetPeak));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatus));
  exports.Set("client", Napi::Function::New(env, Client));
  exports.Set("newClient", Napi::Function::New(env, NewClient));
  exports.Set("setClient", Napi::Function::New(env, SetClient));
  exports.Set("endClient", Napi::Function::New(env, EndClient));
  exports.Set("ops", Napi::Function::New(env, Ops));
  return exports;
}

}  // namespace

NODE_API_MODULE(hypersd, Init)

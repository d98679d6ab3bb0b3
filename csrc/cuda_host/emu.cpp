// The host emulation's scheduler and runtime (see emu.h for the execution model).
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <mutex>
#include <new>
#include <stdexcept>
#include <vector>

#include "cuda_runtime.h"

namespace dtda::emu {
namespace {

constexpr std::size_t kStackBytes = 256 * 1024;  // per fiber (mapped lazily), plus a guard page
constexpr std::size_t kMaxStaticShared = 48 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;

enum class State { Runnable, Barrier, Shuffle, Done, Failed };

struct Fiber {
  ucontext_t ctx;
  State state = State::Done;
  uint3 tid{0, 0, 0};
  const char* file = nullptr;  // where it waits
  int line = 0;
  // __shfl_down_sync in progress
  unsigned mask = 0, delta = 0;
  std::size_t size = 0;
  std::uint64_t value = 0, result = 0;
};

// A fiber stack with an inaccessible guard page below it, so an overflow faults instead of
// silently corrupting the neighbouring stack.
struct Stack {
  char* base = nullptr;  // the guard page
  Stack() {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mprotect(p, page, PROT_NONE);
    base = static_cast<char*>(p);
  }
  ~Stack() {
    if (base != nullptr) munmap(base, kStackBytes + static_cast<std::size_t>(sysconf(_SC_PAGESIZE)));
  }
  Stack(Stack&& o) noexcept : base(o.base) { o.base = nullptr; }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  Stack& operator=(Stack&&) = delete;
  void* top_region() const { return base + sysconf(_SC_PAGESIZE); }
};

struct SharedVar {
  void* p;
  std::uint64_t generation;
};

// Everything one OS thread needs to run launches (launches on different host threads are
// independent, like kernels on different streams).
struct Runner {
  std::vector<Stack> stacks;  // reused across blocks and launches
  std::vector<Fiber> fibers;
  std::vector<unsigned> order;  // of the current scheduling pass
  ucontext_t scheduler;
  Fiber* current = nullptr;
  KernelBody body{nullptr, nullptr};
  const char* kernel = nullptr;
  std::exception_ptr exception;  // thrown by kernel code
  std::string failure;           // misuse detected inside a fiber
  std::vector<SharedVar> shared;
  std::uint64_t generation = 0;  // of the running block
  std::size_t shared_bytes = 0;  // static shared memory the running block has declared
};

thread_local Runner runner;
thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;
std::atomic<int> emulated_sms{132};
std::atomic<std::int64_t> emulated_workspace_bytes{std::int64_t{1} << 30};
std::mutex counts_mutex;
std::map<std::string, std::int64_t> counts;

// SplitMix64 (Steele, Lea, Flood 2014): advances `state`, returns the next pseudo-random word.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// "0-31, 64, 66-70" for a sorted list of thread indices.
std::string ranges(const std::vector<unsigned>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(ids[i]);
    if (j > i) s += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return s;
}

std::string where(const char* file, int line) { return std::string(file ? file : "?") + ":" + std::to_string(line); }

std::string block_name() {
  return "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " +
         std::to_string(blockIdx.z) + ")";
}

// Inside a fiber: give control back to the scheduler in state `s`; returns when resumed.
void yield(State s) {
  Fiber* f = runner.current;
  f->state = s;
  swapcontext(&f->ctx, &runner.scheduler);
}

// Inside a fiber: report misuse; the scheduler throws it and never resumes this fiber.
[[noreturn]] void fail(const std::string& what) {
  runner.failure = what;
  yield(State::Failed);
  std::abort();  // unreachable
}

Fiber* running_fiber(const char* what) {
  if (runner.current == nullptr) {
    throw std::logic_error(std::string("dtda CUDA emulation: ") + what + " called outside a kernel");
  }
  return runner.current;
}

void fiber_main() {
  Fiber* f = runner.current;
  try {
    runner.body.run(runner.body.ctx);
  } catch (...) {
    runner.exception = std::current_exception();
  }
  f->state = runner.exception ? State::Failed : State::Done;
  swapcontext(&f->ctx, &runner.scheduler);
  std::abort();  // a finished fiber is never resumed
}

[[noreturn]] void throw_in_block(const std::string& what) {
  throw std::runtime_error(std::string("dtda CUDA emulation: kernel ") + runner.kernel + ", " + block_name() +
                           ": " + what);
}

// Completes every shuffle whose lanes have all arrived; true if any did. Throws on misuse.
bool resolve_shuffles(unsigned n) {
  auto& fibers = runner.fibers;
  bool progressed = false;
  for (unsigned w0 = 0; w0 < n; w0 += 32) {
    const unsigned lanes = std::min(32u, n - w0);
    for (unsigned l = 0; l < lanes; ++l) {
      Fiber& first = fibers[w0 + l];
      if (first.state != State::Shuffle) continue;
      const unsigned mask = first.mask;
      bool ready = true;
      for (unsigned m = 0; m < 32; ++m) {
        if (!(mask >> m & 1u)) continue;
        if (m >= lanes) {
          throw_in_block("__shfl_down_sync at " + where(first.file, first.line) + " names lane " + std::to_string(m) +
                         " of warp " + std::to_string(w0 / 32) + ", which the block (" + std::to_string(n) +
                         " threads) does not have");
        }
        const Fiber& other = fibers[w0 + m];
        if (other.state == State::Done) {
          std::vector<unsigned> gone;
          for (unsigned k = 0; k < lanes; ++k) {
            if ((mask >> k & 1u) && fibers[w0 + k].state == State::Done) gone.push_back(k);
          }
          throw_in_block("deadlock: __shfl_down_sync at " + where(first.file, first.line) + " in warp " +
                         std::to_string(w0 / 32) + " waits for lanes " + ranges(gone) +
                         ", which exited without reaching it (mask 0x" + [&] {
                           char buf[16];
                           std::snprintf(buf, sizeof buf, "%08x", mask);
                           return std::string(buf);
                         }() + ")");
        }
        if (other.state != State::Shuffle) {
          ready = false;
          continue;
        }
        if (other.mask != mask || other.size != first.size) {
          throw_in_block("__shfl_down_sync in warp " + std::to_string(w0 / 32) + ": lanes " + std::to_string(l) +
                         " (" + where(first.file, first.line) + ") and " + std::to_string(m) + " (" +
                         where(other.file, other.line) + ") disagree on the mask or the value size");
        }
      }
      if (!ready) continue;
      for (unsigned m = 0; m < lanes; ++m) {
        if (!(mask >> m & 1u)) continue;
        Fiber& f = fibers[w0 + m];
        const unsigned src = m + f.delta;
        if (src >= 32) f.result = f.value;  // outside the warp: own value
        else if (src < lanes && (mask >> src & 1u)) f.result = fibers[w0 + src].value;
        else f.result = ~std::uint64_t{0};  // source lane not participating: undefined, poisoned
        f.state = State::Runnable;
      }
      progressed = true;
    }
  }
  return progressed;
}

// Opens the barrier if every live thread waits at it; throws on divergence or deadlock.
void release_barrier_or_throw(unsigned n) {
  auto& fibers = runner.fibers;
  std::map<std::string, std::vector<unsigned>> barrier, shuffle;
  std::vector<unsigned> exited;
  for (unsigned t = 0; t < n; ++t) {
    const Fiber& f = fibers[t];
    if (f.state == State::Barrier) barrier[where(f.file, f.line)].push_back(t);
    else if (f.state == State::Shuffle) shuffle[where(f.file, f.line)].push_back(t);
    else if (f.state == State::Done) exited.push_back(t);
  }
  if (shuffle.empty() && barrier.size() == 1) {
    for (unsigned t = 0; t < n; ++t) {
      if (fibers[t].state == State::Barrier) fibers[t].state = State::Runnable;
    }
    return;
  }
  std::string what = shuffle.empty() ? "divergent __syncthreads (threads wait at different barriers):"
                                     : "deadlock, no thread can proceed:";
  for (const auto& [site, ids] : barrier) what += " threads " + ranges(ids) + " wait in __syncthreads at " + site + ";";
  for (const auto& [site, ids] : shuffle) {
    what += " threads " + ranges(ids) + " wait in __shfl_down_sync at " + site + " for lanes that are at a barrier;";
  }
  if (!exited.empty()) what += " threads " + ranges(exited) + " exited;";
  what.pop_back();
  throw_in_block(what);
}

void run_block(unsigned n) {
  auto& fibers = runner.fibers;
  ++runner.generation;
  runner.shared_bytes = 0;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = fibers[t];
    f.state = State::Runnable;
    f.tid = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = runner.stacks[t].top_region();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_main, 0);
  }
  // Each pass runs the runnable threads in a pseudo-random order, seeded by the block and the
  // pass so that runs are reproducible: a value read from another thread without a barrier in
  // between is then stale (or poisoned) for about half of the thread pairs, in every phase of
  // the kernel (a fixed alternation would fall into step with kernels' barrier counts).
  std::vector<unsigned>& order = runner.order;
  order.resize(n);
  const std::uint64_t block =
      blockIdx.x + std::uint64_t{gridDim.x} * (blockIdx.y + std::uint64_t{gridDim.y} * blockIdx.z);
  for (std::uint64_t pass = 0;; ++pass) {
    std::uint64_t state = block * 0x9E3779B97F4A7C15ull + pass;
    for (unsigned i = 0; i < n; ++i) order[i] = i;
    for (unsigned i = n - 1; i > 0; --i) std::swap(order[i], order[splitmix64(state) % (i + 1)]);
    unsigned done = 0;
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = fibers[order[i]];
      if (f.state == State::Runnable) {
        runner.current = &f;
        threadIdx = f.tid;
        swapcontext(&runner.scheduler, &f.ctx);
        runner.current = nullptr;
        if (f.state == State::Failed) {
          if (runner.exception) std::rethrow_exception(std::exchange(runner.exception, nullptr));
          throw_in_block(std::exchange(runner.failure, std::string()));
        }
      }
      if (f.state == State::Done) ++done;
    }
    if (done == n) return;
    if (resolve_shuffles(n)) continue;
    release_barrier_or_throw(n);
  }
}

bool valid(dim3 grid, dim3 block) {
  const std::uint64_t threads = std::uint64_t{block.x} * block.y * block.z;
  return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
         grid.z <= 65535 && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024 && block.y <= 1024 &&
         block.z <= 64 && threads <= kMaxThreadsPerBlock;
}

}  // namespace

void run_grid(const char* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, cudaStream_t, KernelBody body) {
  if (runner.current != nullptr) {
    throw std::logic_error(std::string("dtda CUDA emulation: ") + kernel +
                           " launched from device code (dynamic parallelism is not emulated)");
  }
  if (dynamic_smem != 0) {
    throw std::logic_error(std::string("dtda CUDA emulation: ") + kernel +
                           " asks for dynamic shared memory, which is not emulated");
  }
  {
    std::lock_guard<std::mutex> lock(counts_mutex);
    ++counts[kernel];
  }
  if (!valid(grid, block)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  const unsigned n = block.x * block.y * block.z;
  while (runner.stacks.size() < n) runner.stacks.emplace_back();
  if (runner.fibers.size() < n) runner.fibers.resize(n);
  runner.kernel = kernel;
  runner.body = body;
  gridDim = grid;
  blockDim = block;
  const std::uint64_t blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  for (std::uint64_t b = blocks; b-- > 0;) {  // reversed: the last block runs first
    blockIdx = uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                     static_cast<unsigned>(b / (std::uint64_t{grid.x} * grid.y))};
    run_block(n);
  }
}

void barrier(const char* file, int line) {
  Fiber* f = running_fiber("__syncthreads");
  f->file = file;
  f->line = line;
  yield(State::Barrier);
}

std::uint64_t shuffle_down(unsigned mask, std::uint64_t bits, std::size_t size, unsigned delta, int width,
                           const char* file, int line) {
  Fiber* f = running_fiber("__shfl_down_sync");
  const unsigned linear = f->tid.x + blockDim.x * (f->tid.y + blockDim.y * f->tid.z);
  if (width != 32) fail("__shfl_down_sync at " + where(file, line) + ": only width 32 is emulated");
  if (!(mask >> (linear % 32) & 1u)) {
    fail("__shfl_down_sync at " + where(file, line) + ": thread " + std::to_string(linear) +
         " calls it with a mask that leaves out its own lane");
  }
  f->file = file;
  f->line = line;
  f->mask = mask;
  f->delta = delta;
  f->size = size;
  f->value = bits;
  yield(State::Shuffle);
  std::uint64_t out = 0;
  std::memcpy(&out, &f->result, size);
  return out;
}

void shared_variable(void* p, std::size_t size, const char* name, const char* file, int line) {
  running_fiber("a __shared__ declaration");
  auto known = std::find_if(runner.shared.begin(), runner.shared.end(), [&](const SharedVar& v) { return v.p == p; });
  if (known == runner.shared.end()) known = runner.shared.insert(runner.shared.end(), SharedVar{p, 0});
  if (known->generation == runner.generation) return;  // another thread of this block declared it
  known->generation = runner.generation;
  std::memset(p, 0xff, size);  // as undefined as on the GPU, but loudly: NaN as float or double
  runner.shared_bytes += size;
  if (runner.shared_bytes > kMaxStaticShared) {
    fail("static shared memory of " + std::to_string(runner.shared_bytes) + " bytes (with " + name + " at " +
         where(file, line) + ") exceeds the 48 KiB limit");
  }
}

void set_sm_count(int n) {
  if (n < 1) throw std::invalid_argument("dtda CUDA emulation: the SM count must be >= 1, got " + std::to_string(n));
  emulated_sms = n;
}

int sm_count() { return emulated_sms; }

void set_workspace_bytes(std::int64_t bytes) {
  if (bytes < 8) {
    throw std::invalid_argument("dtda CUDA emulation: the workspace budget must be >= 8 bytes, got " +
                                std::to_string(bytes));
  }
  emulated_workspace_bytes = bytes;
}

std::int64_t workspace_bytes() { return emulated_workspace_bytes; }

std::map<std::string, std::int64_t> launch_counts() {
  std::lock_guard<std::mutex> lock(counts_mutex);
  return counts;
}

void reset_launch_counts() {
  std::lock_guard<std::mutex> lock(counts_mutex);
  counts.clear();
}

}  // namespace dtda::emu

// ---- runtime API -----------------------------------------------------------------------------

cudaError_t cudaGetDevice(int* device) {
  *device = dtda::emu::current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device != 0) return dtda::emu::last_error = cudaErrorInvalidDevice;
  dtda::emu::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return dtda::emu::last_error = cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = dtda::emu::sm_count(); return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = static_cast<int>(dtda::emu::kMaxThreadsPerBlock); return cudaSuccess;
  }
  return dtda::emu::last_error = cudaErrorInvalidValue;
}

cudaError_t cudaGetLastError() { return std::exchange(dtda::emu::last_error, cudaSuccess); }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unrecognized error code";
}

// Baseline for bench/bench_distributed.py: libcuckoo under concurrent access, T threads on one map.
// int64 key -> {16 float embedding, 16 float Adagrad accumulator}. All keys are inserted first (not
// timed); then each thread takes every T-th batch of `batch` keys and, per key, copies the 16
// embedding floats out (find_fn) and applies an Adagrad step (update_fn): a training step's lookup
// plus gradient push. Prints one JSON line with the wall seconds of the concurrent phase.
// Usage: concurrent <keys.bin int64[n]> <grads.bin float32[pool*16]> <threads> <batch> <rounds>
#include <libcuckoo/cuckoohash_map.hh>

#include "common.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>


int main(int argc, char** argv) {
  if (argc < 6) { std::fprintf(stderr, "usage: concurrent keys.bin grads.bin threads batch rounds\n"); return 2; }
  std::vector<char> kb = slurp(argv[1]), gb = slurp(argv[2]);
  const int64_t* keys = reinterpret_cast<const int64_t*>(kb.data());
  const size_t n = kb.size() / sizeof(int64_t);
  const float* grads = reinterpret_cast<const float*>(gb.data());
  const size_t pool = gb.size() / (sizeof(float) * kDim);
  const int threads = std::atoi(argv[3]);
  const size_t batch = std::strtoul(argv[4], nullptr, 10);
  const int rounds = std::atoi(argv[5]);
  const float lr = 0.05f, eps = 1e-8f;

  libcuckoo::cuckoohash_map<int64_t, Row> map;
  Row init;
  for (int j = 0; j < kDim; ++j) { init.emb[j] = 0.01f; init.acc[j] = 0.1f; }
  for (size_t i = 0; i < n; ++i) map.insert(keys[i], init);

  const size_t batches = (n + batch - 1) / batch;
  auto work = [&](int t) {
    std::vector<float> out(batch * kDim);
    for (int r = 0; r < rounds; ++r) {
      for (size_t b = t; b < batches; b += threads) {
        const size_t lo = b * batch, hi = std::min(n, lo + batch);
        for (size_t i = lo; i < hi; ++i) {
          float* o = &out[(i - lo) * kDim];
          map.find_fn(keys[i], [o](const Row& row) { std::memcpy(o, row.emb, sizeof(row.emb)); });
        }
        for (size_t i = lo; i < hi; ++i) {
          const float* g = &grads[(i % pool) * kDim];
          map.update_fn(keys[i], [g, lr, eps](Row& row) {
            for (int j = 0; j < kDim; ++j) {
              float a = row.acc[j] + g[j] * g[j];
              row.acc[j] = a;
              row.emb[j] -= lr * g[j] / (std::sqrt(a) + eps);
            }
          });
        }
      }
    }
  };
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) pool_threads.emplace_back(work, t);
  for (auto& th : pool_threads) th.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"n\": %zu, \"threads\": %d, \"rounds\": %d, \"wall_s\": %.6f, \"size\": %zu}\n", n, threads, rounds,
              wall, map.size());
  return 0;
}

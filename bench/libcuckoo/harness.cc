// Baseline for bench/bench_embedding.py: libcuckoo (the concurrent cuckoo map Monolith's embedding
// table is built on), one thread, int64 key -> {16 float embedding, 16 float Adagrad accumulator}.
// Usage: harness <keys.bin int64[n]> <grads.bin float32[pool*16]> <dim must be 16>
// Does, over the same keys as the Python side: insert all, find all (copy the 16 embedding floats
// into an output buffer), Adagrad update-in-place of all (gradient row i % pool). Prints one JSON line.
#include <libcuckoo/cuckoohash_map.hh>

#include "common.h"

#include <malloc.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <vector>


// CPU time of this thread: the Python side measures the same (time.thread_time), so a busy
// machine slows neither side's numbers unfairly.
static double now_s() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t heap_bytes() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

int main(int argc, char** argv) {
  if (argc < 3) { std::fprintf(stderr, "usage: harness keys.bin grads.bin\n"); return 2; }
  std::vector<char> kb = slurp(argv[1]);
  std::vector<char> gb = slurp(argv[2]);
  const int64_t* keys = reinterpret_cast<const int64_t*>(kb.data());
  const size_t n = kb.size() / sizeof(int64_t);
  const float* grads = reinterpret_cast<const float*>(gb.data());
  const size_t pool = gb.size() / (sizeof(float) * kDim);
  const float lr = 0.05f, eps = 1e-8f;

  size_t heap0 = heap_bytes();
  auto* map = new libcuckoo::cuckoohash_map<int64_t, Row>();
  Row init;
  for (int j = 0; j < kDim; ++j) { init.emb[j] = 0.01f; init.acc[j] = 0.1f; }

  double w0 = wall_s();
  double t0 = now_s();
  for (size_t i = 0; i < n; ++i) map->insert(keys[i], init);
  double t_insert = now_s() - t0;
  double w_insert = wall_s() - w0;
  size_t heap1 = heap_bytes();

  std::vector<float> out(pool * kDim);
  double checksum = 0;
  w0 = wall_s();
  t0 = now_s();
  for (size_t i = 0; i < n; ++i) {
    float* o = &out[(i % pool) * kDim];
    map->find_fn(keys[i], [o](const Row& r) { std::memcpy(o, r.emb, sizeof(r.emb)); });
    if ((i % pool) == pool - 1) checksum += out[0];
  }
  double t_find = now_s() - t0;
  double w_find = wall_s() - w0;

  w0 = wall_s();
  t0 = now_s();
  for (size_t i = 0; i < n; ++i) {
    const float* g = &grads[(i % pool) * kDim];
    map->update_fn(keys[i], [g, lr, eps](Row& r) {
      for (int j = 0; j < kDim; ++j) {
        float a = r.acc[j] + g[j] * g[j];
        r.acc[j] = a;
        r.emb[j] -= lr * g[j] / (std::sqrt(a) + eps);
      }
    });
  }
  double t_update = now_s() - t0;
  double w_update = wall_s() - w0;

  std::printf(
      "{\"n\": %zu, \"size\": %zu, \"insert_s\": %.6f, \"find_s\": %.6f, \"update_s\": %.6f, "
      "\"insert_wall\": %.6f, \"find_wall\": %.6f, \"update_wall\": %.6f, "
      "\"heap_bytes\": %zu, \"bucket_slots\": %zu, \"checksum\": %.3f}\n",
      n, map->size(), t_insert, t_find, t_update, w_insert, w_find, w_update, heap1 - heap0,
      map->capacity(), checksum);
  delete map;
  return 0;
}

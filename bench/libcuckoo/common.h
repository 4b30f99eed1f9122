// Shared by the libcuckoo harnesses of bench/: the row type and reading a binary file whole.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <vector>

constexpr int kDim = 16;
struct Row {
  float emb[kDim];
  float acc[kDim];
};

static std::vector<char> slurp(const char* path) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) { std::perror(path); std::exit(2); }
  std::fseek(f, 0, SEEK_END);
  long n = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  std::vector<char> buf(n);
  if (std::fread(buf.data(), 1, n, f) != static_cast<size_t>(n)) { std::perror("read"); std::exit(2); }
  std::fclose(f);
  return buf;
}

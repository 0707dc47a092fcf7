// Embedding the pypatch core in a C++ program: build a PQ patch index from raw float vectors,
// save it, load it back (memory-mapped) and search it.
//   cmake -S . -B build -DPYPATCH_BUILD_EXAMPLES=ON && cmake --build build
//   ./build/build_save_search /tmp/example.ptch
#include <cstdio>   // printf
#include <memory>   // make_shared
#include <random>   // synthetic vectors
#include <vector>   // buffers

#include "pypatch/index/patch_index.h"  // PatchIndex, ProductQuantizer

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "example.ptch";
  const int dim = 64, m = 16, n_images = 2000, patches = 14;
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n_images) * patches * dim);
  for (auto& v : x) v = normal(gen);

  auto pq = std::make_shared<pypatch::ProductQuantizer>(dim, m);  // 16 bytes per patch
  pypatch::PatchIndex index(dim, pq);
  index.train(static_cast<int64_t>(x.size() / dim), x.data(), /*iters=*/10, /*seed=*/0, /*threads=*/0);
  std::vector<int64_t> counts(n_images, patches);  // patches per image (CSR)
  index.add(n_images, counts.data(), x.data(), /*threads=*/0);
  index.set_metadata_json("{\"source\": \"examples/cpp\"}");
  index.save(path);

  auto loaded = pypatch::PatchIndex::load(path, /*mmap=*/true);
  const int k = 5;
  std::vector<float> scores(k);
  std::vector<int64_t> images(k), best_patch(k);
  const float* query = x.data() + static_cast<size_t>(123 * patches + 4) * dim;  // patch 4 of image 123
  loaded->search(1, query, k, /*threads=*/0, scores.data(), images.data(), best_patch.data());
  std::printf("index: %lld images, %lld patches -> %s\n", static_cast<long long>(loaded->n_images()),
              static_cast<long long>(loaded->n_patches()), path.c_str());
  for (int r = 0; r < k; ++r)
    std::printf("  #%d image %lld (patch %lld) score %.3f\n", r + 1, static_cast<long long>(images[r]),
                static_cast<long long>(best_patch[r]), scores[r]);
  return images[0] == 123 ? 0 : 1;
}

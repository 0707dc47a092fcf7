// Embedding the pypatch core in a C++ program: build a PQ patch index from raw float vectors
// through a learned pre-transform (here a random stand-in for the PCA an ImageIndex fits), save
// it, load it back (memory-mapped) and search it with a model-space query. The transform is
// saved in the file (XFRM section), so a loaded index -- also one built by Python's
// ImageIndex -- tells the program how to map its queries into the stored space.
//   cmake -S . -B build -DPYPATCH_BUILD_EXAMPLES=ON && cmake --build build
//   ./build/build_save_search /tmp/example.ptch
#include <cmath>    // sqrt
#include <cstdio>   // printf
#include <memory>   // make_shared
#include <random>   // synthetic vectors
#include <vector>   // buffers

#include "pypatch/index/linear_transform.h"  // LinearTransform
#include "pypatch/index/patch_index.h"       // PatchIndex, ProductQuantizer

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "example.ptch";
  const int model_dim = 96, dim = 64, m = 16, n_images = 2000, patches = 14;
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n_images) * patches * model_dim);  // "model" vectors
  for (auto& v : x) v = normal(gen);

  // A 96 -> 64 projection; a real one comes from ImageIndex (PCA) or your own training.
  std::vector<float> mean(model_dim, 0.1f), matrix(static_cast<size_t>(dim) * model_dim);
  for (auto& v : matrix) v = normal(gen) / std::sqrt(float(model_dim));
  auto transform = std::make_shared<const pypatch::LinearTransform>(model_dim, dim, mean, matrix);
  const int64_t n = static_cast<int64_t>(x.size() / model_dim);
  std::vector<float> y(static_cast<size_t>(n) * dim);  // stored space: projected, unit norm
  transform->apply(n, x.data(), y.data());

  auto pq = std::make_shared<pypatch::ProductQuantizer>(dim, m);  // 16 bytes per patch
  pypatch::PatchIndex index(dim, pq);
  index.train(n, y.data(), /*iters=*/10, /*seed=*/0, /*threads=*/0);
  std::vector<int64_t> counts(n_images, patches);  // patches per image (CSR)
  index.add(n_images, counts.data(), y.data(), /*threads=*/0);
  index.set_transform(transform);  // saved with the index
  index.set_metadata_json("{\"source\": \"examples/cpp\"}");
  index.save(path);

  auto loaded = pypatch::PatchIndex::load(path, /*mmap=*/true);
  const int k = 5;
  std::vector<float> scores(k);
  std::vector<int64_t> images(k), best_patch(k);
  const float* model_query = x.data() + static_cast<size_t>(123 * patches + 4) * model_dim;  // patch 4 of image 123
  std::vector<float> query(model_query, model_query + model_dim);
  if (auto t = loaded->transform()) {  // the index stores transformed vectors: map the query too
    query.resize(static_cast<size_t>(t->dim_out()));
    t->apply(1, model_query, query.data());
  }
  if (static_cast<int>(query.size()) != loaded->dim()) {
    std::fprintf(stderr, "query has %zu dims but the index stores %d\n", query.size(), loaded->dim());
    return 1;
  }
  loaded->search(1, query.data(), k, /*threads=*/0, scores.data(), images.data(), best_patch.data());
  std::printf("index: %lld images, %lld patches, transform %s -> %s\n",
              static_cast<long long>(loaded->n_images()), static_cast<long long>(loaded->n_patches()),
              loaded->transform() ? "96 -> 64" : "none", path.c_str());
  for (int r = 0; r < k; ++r)
    std::printf("  #%d image %lld (patch %lld) score %.3f\n", r + 1, static_cast<long long>(images[r]),
                static_cast<long long>(best_patch[r]), scores[r]);
  return images[0] == 123 ? 0 : 1;
}

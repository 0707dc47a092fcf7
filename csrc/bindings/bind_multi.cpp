// _core.MultiIndexSearch: several PatchIndex searched as one (pypatch/distributed/sharded_index.py).
#include <pybind11/stl.h>  // vector conversions

#include <algorithm>  // std::min
#include <memory>     // unique_ptr

#include "common.h"
#include "pypatch/index/multi_scan.h"

namespace pypatch_bind {

using pypatch::MultiIndexSearch;
using pypatch::PatchIndex;

namespace {

// Holds references to the Python index objects: the native search does not own them.
struct PyMultiIndexSearch {
  py::list keep;
  std::unique_ptr<MultiIndexSearch> search;
};

}  // namespace

void bind_multi(py::module_& m) {
  py::class_<PyMultiIndexSearch>(m, "MultiIndexSearch")
      .def(py::init([](const py::list& indexes) {
        std::vector<const PatchIndex*> shards;
        for (py::handle h : indexes) shards.push_back(&h.cast<const PatchIndex&>());
        auto out = std::make_unique<PyMultiIndexSearch>();
        out->keep = indexes;
        {
          py::gil_scoped_release nogil;  // compares every shard's centroids
          out->search = std::make_unique<MultiIndexSearch>(std::move(shards));
        }
        return out;
      }), py::arg("indexes"))
      .def_property_readonly("n_shards", [](const PyMultiIndexSearch& s) { return s.search->n_shards(); })
      .def_property_readonly("n_images", [](const PyMultiIndexSearch& s) {
        py::gil_scoped_release nogil;
        return s.search->n_images();
      })
      .def("search", [](const PyMultiIndexSearch& self, const CArray<float>& q, int k, int nt) {
        const PatchIndex& first = self.keep[0].cast<const PatchIndex&>();
        const float* p = checked(q, "queries", 2, -1, first.dim());
        if (k < 1) throw pypatch::InvalidArgument("k must be >= 1; got " + std::to_string(k));
        const py::ssize_t nq = q.shape(0);
        int64_t n_images;
        {
          py::gil_scoped_release nogil;
          n_images = self.search->n_images();
        }
        // at most one column per image, as PatchIndex.search
        const int kk = static_cast<int>(std::min<int64_t>(k, n_images));
        const py::ssize_t cols = kk;
        CArray<float> scores({nq, cols});
        CArray<int32_t> shard({nq, cols});
        CArray<int64_t> images({nq, cols}), patches({nq, cols});
        float* s = scores.mutable_data();
        int32_t* sh = shard.mutable_data();
        int64_t* im = images.mutable_data();
        int64_t* pa = patches.mutable_data();
        auto hook = interrupt_hook();
        {
          py::gil_scoped_release nogil;
          self.search->search(kk > 0 ? nq : 0, p, kk > 0 ? kk : 1, nt, s, sh, im, pa, hook);
        }
        return py::make_tuple(scores, shard, images, patches);
      }, py::arg("queries"), py::arg("k"), py::arg("num_threads"));
}

}  // namespace pypatch_bind

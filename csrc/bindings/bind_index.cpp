// _core.PatchIndex: thin wrapper; pypatch/index.py validates and documents.
#include <pybind11/stl.h>  // vector/pair conversions

#include <algorithm>  // std::min
#include <new>        // std::bad_alloc
#include <optional>   // add_codes lists

#include "common.h"
#include "pypatch/index/linear_transform.h"
#include "pypatch/index/patch_index.h"

namespace pypatch_bind {

using pypatch::LinearTransform;
using pypatch::PatchIndex;
using pypatch::StoreKind;

namespace {

StoreKind parse_flat(const std::string& dtype) {
  if (dtype == "float32") return StoreKind::FlatF32;
  if (dtype == "float16") return StoreKind::FlatF16;
  throw pypatch::InvalidArgument("flat_dtype must be 'float32' or 'float16'; got '" + dtype + "'");
}

const char* kind_name(StoreKind k) {
  return k == StoreKind::PQ ? "pq" : k == StoreKind::FlatF32 ? "float32" : "float16";
}

// The index's transform (taken without the GIL: the getter locks the index); InvalidArgument
// when none is set.
std::shared_ptr<const LinearTransform> required_transform(const PatchIndex& ix) {
  std::shared_ptr<const LinearTransform> t;
  {
    py::gil_scoped_release nogil;
    t = ix.transform();
  }
  if (!t) throw pypatch::InvalidArgument("the index has no transform (set_transform first)");
  return t;
}

int64_t n_vectors(const CArray<int64_t>& counts) {
  int64_t total = 0;
  const int64_t* c = counts.data();
  for (py::ssize_t i = 0; i < counts.shape(0); ++i) total += c[i] > 0 ? c[i] : 0;
  return total;
}

}  // namespace

// Every call that takes the index lock releases the GIL first: add/train hold the lock while
// polling for Ctrl-C (which needs the GIL), so a thread waiting for the lock with the GIL held
// would deadlock them.
void bind_index(py::module_& m) {
  m.attr("max_index_dim") = PatchIndex::kMaxDim;  // what a saved file's reader accepts
  m.attr("max_nlist") = PatchIndex::kMaxNlist;
  py::class_<PatchIndex>(m, "PatchIndex")
      .def(py::init([](int dim, const std::string& flat_dtype) {
        return std::make_unique<PatchIndex>(dim, parse_flat(flat_dtype));
      }), py::arg("dim"), py::arg("flat_dtype"))
      .def(py::init<int, std::shared_ptr<pypatch::Quantizer>>(), py::arg("dim"), py::arg("pq"))
      .def(py::init<int, std::shared_ptr<pypatch::Quantizer>, int>(), py::arg("dim"), py::arg("pq"),
           py::arg("nlist"))
      .def_property_readonly("nlist", &PatchIndex::nlist)
      .def_property("nprobe", &PatchIndex::nprobe, &PatchIndex::set_nprobe)
      .def_property_readonly("coarse_centroids", [](const PatchIndex& ix) {
        std::vector<float> c;
        {
          py::gil_scoped_release nogil;
          c = ix.coarse_centroids();
        }
        const py::ssize_t d = ix.dim(), n = static_cast<py::ssize_t>(c.size()) / d;
        CArray<float> out({n, d});
        std::copy(c.begin(), c.end(), out.mutable_data());
        return out;
      })
      .def("set_coarse_centroids", [](PatchIndex& ix, const CArray<float>& c) {
        const float* p = checked(c, "coarse centroids", 2, ix.nlist(), ix.dim());
        py::gil_scoped_release nogil;
        ix.set_coarse_centroids(p);
      })
      .def("patch_lists", [](const PatchIndex& ix) {
        return vector_without_gil<int32_t>([&] { return ix.patch_lists(); });
      })
      .def("probe", [](const PatchIndex& ix, const CArray<float>& q, int nprobe) {
        const float* p = checked(q, "queries", 2, -1, ix.dim());
        const py::ssize_t nq = q.shape(0);
        std::vector<int32_t> v;
        {
          py::gil_scoped_release nogil;
          v = ix.probe(nq, p, nprobe);
        }
        const py::ssize_t w = nq ? static_cast<py::ssize_t>(v.size()) / nq : std::min(nprobe, ix.nlist());
        CArray<int32_t> out({nq, w});
        std::copy(v.begin(), v.end(), out.mutable_data());
        return out;
      })
      .def_property_readonly("dim", &PatchIndex::dim)
      .def_property_readonly("kind", [](const PatchIndex& ix) { return kind_name(ix.kind()); })
      .def_property_readonly("code_size", &PatchIndex::code_size)
      .def_property_readonly("is_trained", &PatchIndex::is_trained)
      .def_property_readonly("n_images", py::cpp_function(&PatchIndex::n_images, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly("n_patches", py::cpp_function(&PatchIndex::n_patches, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly("n_removed", py::cpp_function(&PatchIndex::n_removed, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly("is_view", py::cpp_function(&PatchIndex::is_view, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly("pq", [](const PatchIndex& ix) {
        return std::const_pointer_cast<pypatch::Quantizer>(ix.pq());
      })
      .def_property_readonly("image_offsets", [](const PatchIndex& ix) {
        return vector_without_gil<int64_t>([&] { return ix.image_offsets(); });
      })
      .def_property_readonly("removed", [](const PatchIndex& ix) {
        return vector_without_gil<bool>([&] { return ix.removed_mask(); });
      })
      .def("codes", [](const PatchIndex& ix) {  // row-major copy of the storage (tests, tools)
        // Sized, then filled under the lock; an index changed in between is sized again.
        for (;;) {
          int64_t n;
          {
            py::gil_scoped_release nogil;
            n = ix.n_patches();
          }
          CArray<uint8_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(ix.code_size())});
          uint8_t* dst = out.mutable_data();
          bool copied;
          {
            py::gil_scoped_release nogil;
            copied = ix.copy_all_rows(n, dst);
          }
          if (copied) return out;
        }
      })
      .def("train", [](PatchIndex& ix, const CArray<float>& x, int iters, uint64_t seed, int nt) {
        const float* p = checked(x, "x", 2, -1, ix.dim());
        const int64_t n = x.shape(0);
        auto hook = interrupt_hook();
        py::gil_scoped_release nogil;
        ix.train(n, p, iters, seed, nt, hook);
      })
      .def("add", [](PatchIndex& ix, const CArray<float>& x, const CArray<int64_t>& counts, int nt) {
        const int64_t* c = checked(counts, "patch counts", 1);
        const float* p = checked(x, "vectors", 2, n_vectors(counts), ix.dim());
        const int64_t n = counts.shape(0);
        auto hook = interrupt_hook();
        py::gil_scoped_release nogil;
        return ix.add(n, c, p, nt, hook);
      })
      .def("add_codes", [](PatchIndex& ix, const CArray<uint8_t>& codes, const CArray<int64_t>& counts,
                           const std::optional<CArray<int32_t>>& lists) {
        const int64_t* c = checked(counts, "patch counts", 1);
        const uint8_t* p = checked(codes, "codes", 2, n_vectors(counts), ix.code_size());
        const int32_t* l = lists ? checked(*lists, "lists", 1, n_vectors(counts)) : nullptr;
        const int64_t n = counts.shape(0);
        py::gil_scoped_release nogil;
        return ix.add_codes(n, c, p, l);
      }, py::arg("codes"), py::arg("counts"), py::arg("lists") = py::none())
      .def("search", [](const PatchIndex& ix, const CArray<float>& q, int k, int nt, int nprobe) {
        const float* p = checked(q, "queries", 2, -1, ix.dim());
        if (k < 1) throw pypatch::InvalidArgument("k must be >= 1; got " + std::to_string(k));
        const py::ssize_t nq = q.shape(0);
        // At most one column per image: the outputs are sized by k, so an unclamped
        // k = 2**31-1 allocated 40 GB of padding on a 100-image index.
        int64_t n_images;
        {
          py::gil_scoped_release nogil;
          n_images = ix.n_images();
        }
        const int kk = static_cast<int>(std::min<int64_t>(k, n_images));
        CArray<float> scores({nq, static_cast<py::ssize_t>(kk)});
        CArray<int64_t> images({nq, static_cast<py::ssize_t>(kk)}), patches({nq, static_cast<py::ssize_t>(kk)});
        float* s = scores.mutable_data();
        int64_t* im = images.mutable_data();
        int64_t* pa = patches.mutable_data();
        auto hook = interrupt_hook();
        {
          py::gil_scoped_release nogil;
          // An empty index still says it is untrained (no rows are scanned for nq = 0).
          ix.search(kk > 0 ? nq : 0, p, kk > 0 ? kk : 1, nt, s, im, pa, hook, nprobe);
        }
        return py::make_tuple(scores, images, patches);
      }, py::arg("q"), py::arg("k"), py::arg("nt"), py::arg("nprobe") = 0)
      .def("score_images", [](const PatchIndex& ix, const CArray<float>& q, const CArray<int64_t>& images, int nt) {
        const float* p = checked(q, "queries", 2, -1, ix.dim());
        const int64_t* im = checked(images, "images", 2, q.shape(0));
        const py::ssize_t nq = q.shape(0), nc = images.shape(1);
        CArray<float> scores({nq, nc});
        CArray<int64_t> patches({nq, nc});
        float* s = scores.mutable_data();
        int64_t* pa = patches.mutable_data();
        {
          py::gil_scoped_release nogil;
          ix.score_images(nq, p, nc, im, s, pa, nt);
        }
        return py::make_tuple(scores, patches);
      }, py::arg("q"), py::arg("images"), py::arg("nt") = 1)
      .def("remove", [](PatchIndex& ix, const CArray<int64_t>& images) {
        const int64_t* p = checked(images, "images", 1);
        py::gil_scoped_release nogil;
        ix.remove(images.shape(0), p);
      })
      .def("is_removed", &PatchIndex::is_removed, py::call_guard<py::gil_scoped_release>())
      .def("compact", [](PatchIndex& ix) {
        return vector_without_gil<int64_t>([&] { return ix.compact(); });
      })
      .def("reconstruct", [](const PatchIndex& ix, int64_t image) {
        for (;;) {  // sized, then filled under the lock; resized if the index changed between
          int64_t n;
          {
            py::gil_scoped_release nogil;
            n = ix.image_patches(image);  // InvalidArgument if out of range
          }
          CArray<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(ix.dim())});
          float* dst = out.mutable_data();
          bool done;
          {
            py::gil_scoped_release nogil;
            done = ix.reconstruct_if(image, n, dst);
          }
          if (done) return out;
        }
      })
      .def("set_transform", [](PatchIndex& ix, const CArray<float>& mean, const CArray<float>& matrix) {
        const float* mu = checked(mean, "transform mean", 1);
        const float* w = checked(matrix, "transform matrix", 2, -1, mean.shape(0));
        const py::ssize_t din = mean.shape(0), dout = matrix.shape(0);
        if (din < 1 || din > LinearTransform::kMaxDim || dout < 1 || dout > LinearTransform::kMaxDim)
          throw pypatch::InvalidArgument("transform dims must be in 1.." + std::to_string(LinearTransform::kMaxDim) +
                                         "; got " + std::to_string(dout) + " x " + std::to_string(din));
        // Copied: the transform is immutable and outlives the arrays.
        auto t = std::make_shared<const LinearTransform>(
            static_cast<int>(din), static_cast<int>(dout), std::vector<float>(mu, mu + din),
            std::vector<float>(w, w + dout * din));
        py::gil_scoped_release nogil;
        ix.set_transform(std::move(t));
      }, py::arg("mean"), py::arg("matrix"))
      .def("clear_transform", [](PatchIndex& ix) { ix.set_transform(nullptr); },
           py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("transform", [](const PatchIndex& ix) -> py::object {
        std::shared_ptr<const LinearTransform> t;
        {
          py::gil_scoped_release nogil;
          t = ix.transform();
        }
        if (!t) return py::none();
        CArray<float> mean(static_cast<py::ssize_t>(t->dim_in()));
        CArray<float> matrix({static_cast<py::ssize_t>(t->dim_out()), static_cast<py::ssize_t>(t->dim_in())});
        std::copy(t->mean().begin(), t->mean().end(), mean.mutable_data());
        std::copy(t->matrix().begin(), t->matrix().end(), matrix.mutable_data());
        return py::make_tuple(mean, matrix);
      })
      .def("apply_transform", [](const PatchIndex& ix, const CArray<float>& x) {
        auto t = required_transform(ix);  // kept alive by this shared_ptr during apply
        const float* p = checked(x, "vectors", 2, -1, t->dim_in());
        const py::ssize_t n = x.shape(0);
        CArray<float> out({n, static_cast<py::ssize_t>(t->dim_out())});
        float* dst = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          t->apply(n, p, dst);
        }
        return out;
      })
      .def_property("metadata_json",
                    py::cpp_function(&PatchIndex::metadata_json, py::call_guard<py::gil_scoped_release>()),
                    py::cpp_function(&PatchIndex::set_metadata_json, py::call_guard<py::gil_scoped_release>()))
      .def("save", [](const PatchIndex& ix, const std::string& path) {
        py::gil_scoped_release nogil;
        ix.save(path);
      })
      .def("to_bytes", [](const PatchIndex& ix) {
        // Serialise straight into the bytes object: peak memory is one copy of the file, not
        // two. The GIL is held only to allocate (never while the index lock is held: a thread
        // holding the GIL may be waiting for that lock). An index changed between sizing and
        // writing is sized again.
        for (;;) {
          uint64_t n;
          {
            py::gil_scoped_release nogil;
            n = ix.serialized_size();
          }
          if (n > static_cast<uint64_t>(PY_SSIZE_T_MAX)) throw std::bad_alloc();
          py::bytes out = py::reinterpret_steal<py::bytes>(
              PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n)));
          if (!out) throw py::error_already_set();
          char* dst = PyBytes_AS_STRING(out.ptr());  // not yet visible to any other thread
          bool written;
          {
            py::gil_scoped_release nogil;
            written = ix.write_to(dst, n);
          }
          if (written) return out;
        }
      })
      .def_static("load", [](const std::string& path, bool mmap, bool verify) {
        py::gil_scoped_release nogil;
        return PatchIndex::load(path, mmap, verify);
      })
      .def_static("from_bytes", [](const py::bytes& data) {
        // bytes are immutable and `data` holds a reference, so the copy and CRC checks can
        // run without the GIL.
        std::string_view v = data;
        py::gil_scoped_release nogil;
        return PatchIndex::from_bytes(v.data(), v.size());
      })
      .def("memory_usage", [](const PatchIndex& ix) {
        std::vector<std::pair<std::string, int64_t>> usage;
        {
          py::gil_scoped_release nogil;
          usage = ix.memory_usage();
        }
        py::dict d;
        for (const auto& kv : usage) d[py::str(kv.first)] = kv.second;
        return d;
      });
}

}  // namespace pypatch_bind

// _core.Quantizer and its two kinds, ProductQuantizer and ResidualQuantizer: thin wrappers;
// pypatch/index/pq.py validates and documents.
#include "common.h"
#include "pypatch/pq/product_quantizer.h"
#include "pypatch/pq/residual_quantizer.h"

namespace pypatch_bind {

using pypatch::ProductQuantizer;
using pypatch::Quantizer;
using pypatch::ResidualQuantizer;

void bind_pq(py::module_& m) {
  // Every method lives on the base: a PatchIndex's `pq` comes back as its concrete class.
  py::class_<Quantizer, std::shared_ptr<Quantizer>>(m, "Quantizer")
      .def_property_readonly("kind", [](const Quantizer& q) {
        return q.kind() == pypatch::CodebookKind::Residual ? "residual" : "product";
      })
      .def_property_readonly("dim", &Quantizer::dim)
      .def_property_readonly("m", &Quantizer::m)
      .def_property_readonly("nbits", &Quantizer::nbits)
      .def_property_readonly("ksub", &Quantizer::ksub)
      .def_property_readonly("dsub", &Quantizer::codeword_dim)
      .def_property_readonly("codeword_dim", &Quantizer::codeword_dim)
      .def_property_readonly("is_trained", &Quantizer::is_trained)
      .def("train", [](Quantizer& pq, const CArray<float>& x, int iters, uint64_t seed,
                       int num_threads, int64_t max_points_per_centroid) {
        const float* p = checked(x, "x", 2, -1, pq.dim());
        const int64_t n = x.shape(0);
        auto hook = interrupt_hook();
        py::gil_scoped_release nogil;
        pq.train(n, p, iters, seed, num_threads, max_points_per_centroid, hook);
      }, py::arg("x"), py::arg("iters"), py::arg("seed"), py::arg("num_threads"),
         py::arg("max_points_per_centroid"))
      .def("set_centroids", [](Quantizer& pq, const py::array_t<float, py::array::c_style>& c) {
        if (c.ndim() != 3 || c.shape(0) != pq.m() || c.shape(1) != pq.ksub() || c.shape(2) != pq.codeword_dim())
          throw pypatch::InvalidArgument("centroids: expected shape (m, 2**nbits, " +
                                         std::to_string(pq.codeword_dim()) + ")");
        pq.set_centroids(c.data());
      })
      .def_property_readonly("centroids", [](const Quantizer& pq) {
        CArray<float> out({pq.m(), pq.ksub(), pq.codeword_dim()});
        if (pq.is_trained()) std::copy(pq.centroids().begin(), pq.centroids().end(), out.mutable_data());
        return out;
      })
      .def("encode", [](const Quantizer& pq, const CArray<float>& x, int num_threads) {
        const float* p = checked(x, "x", 2, -1, pq.dim());
        const int64_t n = x.shape(0);
        CArray<uint8_t> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(pq.m())});
        uint8_t* o = out.mutable_data();
        auto hook = interrupt_hook();
        {
          py::gil_scoped_release nogil;
          pq.encode(n, p, o, num_threads, hook);
        }
        return out;
      }, py::arg("x"), py::arg("num_threads") = 0)
      .def("decode", [](const Quantizer& pq, const CArray<uint8_t>& codes) {
        const uint8_t* p = checked(codes, "codes", 2, -1, pq.m());
        const int64_t n = codes.shape(0);
        CArray<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(pq.dim())});
        float* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          pq.decode(n, p, o);
        }
        return out;
      })
      .def("compute_lut", [](const Quantizer& pq, const CArray<float>& q) {
        const float* p = checked(q, "q", 1, pq.dim());
        CArray<float> out({pq.m(), pq.ksub()});
        {
          py::gil_scoped_release nogil;
          pq.compute_lut(p, out.mutable_data());
        }
        return out;
      })
      .def("compute_luts", [](const Quantizer& pq, const CArray<float>& q, int num_threads) {
        const float* p = checked(q, "q", 2, -1, pq.dim());
        const py::ssize_t nq = q.shape(0);
        CArray<float> out({nq, static_cast<py::ssize_t>(pq.m()), static_cast<py::ssize_t>(pq.ksub())});
        float* o = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          pq.compute_luts(nq, p, o, num_threads);
        }
        return out;
      }, py::arg("q"), py::arg("num_threads") = 0);
  py::class_<ProductQuantizer, Quantizer, std::shared_ptr<ProductQuantizer>>(m, "ProductQuantizer")
      .def(py::init<int, int, int>(), py::arg("dim"), py::arg("m"), py::arg("nbits") = 8);
  py::class_<ResidualQuantizer, Quantizer, std::shared_ptr<ResidualQuantizer>>(m, "ResidualQuantizer")
      .def(py::init<int, int, int>(), py::arg("dim"), py::arg("m"), py::arg("nbits") = 8)
      .def_property_readonly_static("max_m", [](py::object) { return ResidualQuantizer::kMaxM; })
      .def_property_readonly_static("max_codeword_floats",
                                    [](py::object) { return ResidualQuantizer::kMaxCodewordFloats; });
}

}  // namespace pypatch_bind

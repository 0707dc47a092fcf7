// _core.ProductQuantizer: thin wrapper; pypatch/pq.py validates and documents.
#include "common.h"
#include "pypatch/pq/product_quantizer.h"

namespace pypatch_bind {

using pypatch::ProductQuantizer;

void bind_pq(py::module_& m) {
  py::class_<ProductQuantizer, std::shared_ptr<ProductQuantizer>>(m, "ProductQuantizer")
      .def(py::init<int, int, int>(), py::arg("dim"), py::arg("m"), py::arg("nbits") = 8)
      .def_property_readonly("dim", &ProductQuantizer::dim)
      .def_property_readonly("m", &ProductQuantizer::m)
      .def_property_readonly("nbits", &ProductQuantizer::nbits)
      .def_property_readonly("ksub", &ProductQuantizer::ksub)
      .def_property_readonly("dsub", &ProductQuantizer::dsub)
      .def_property_readonly("is_trained", &ProductQuantizer::is_trained)
      .def("train", [](ProductQuantizer& pq, const CArray<float>& x, int iters, uint64_t seed,
                       int num_threads, int64_t max_points_per_centroid) {
        const float* p = checked(x, "x", 2, -1, pq.dim());
        const int64_t n = x.shape(0);
        auto hook = interrupt_hook();
        py::gil_scoped_release nogil;
        pq.train(n, p, iters, seed, num_threads, max_points_per_centroid, hook);
      }, py::arg("x"), py::arg("iters"), py::arg("seed"), py::arg("num_threads"),
         py::arg("max_points_per_centroid"))
      .def("set_centroids", [](ProductQuantizer& pq, const py::array_t<float, py::array::c_style>& c) {
        if (c.ndim() != 3 || c.shape(0) != pq.m() || c.shape(1) != pq.ksub() || c.shape(2) != pq.dsub())
          throw pypatch::InvalidArgument("centroids: expected shape (m, 2**nbits, dim // m)");
        pq.set_centroids(c.data());
      })
      .def_property_readonly("centroids", [](const ProductQuantizer& pq) {
        CArray<float> out({pq.m(), pq.ksub(), pq.dsub()});
        if (pq.is_trained()) std::copy(pq.centroids().begin(), pq.centroids().end(), out.mutable_data());
        return out;
      })
      .def("encode", [](const ProductQuantizer& pq, const CArray<float>& x, int num_threads) {
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
      .def("decode", [](const ProductQuantizer& pq, const CArray<uint8_t>& codes) {
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
      .def("compute_lut", [](const ProductQuantizer& pq, const CArray<float>& q) {
        const float* p = checked(q, "q", 1, pq.dim());
        CArray<float> out({pq.m(), pq.ksub()});
        pq.compute_lut(p, out.mutable_data());
        return out;
      });
}

}  // namespace pypatch_bind

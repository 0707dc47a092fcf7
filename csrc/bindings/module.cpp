// pypatch._core: the native module. Thin: argument checks, GIL release, error translation.
#include <string>  // build info

#include "common.h"
#include "pypatch/errors.h"             // core exceptions
#include "pypatch/io/io_errors.h"       // file container exceptions
#include "pypatch/simd/fastscan4.h"     // fastscan4_kernel_name
#include "pypatch/simd/kernels.h"       // simd levels
#include "pypatch/util/parallel_for.h"  // thread defaults

namespace {

// Classes from pypatch/errors.py, looked up once at import (kept for the process lifetime).
PyObject* g_invalid_argument = nullptr;
PyObject* g_not_trained = nullptr;
PyObject* g_format = nullptr;
PyObject* g_version = nullptr;
PyObject* g_base = nullptr;

PyObject* error_class(py::module_& errors, const char* name) {
  py::object cls = errors.attr(name);
  return cls.release().ptr();  // owned reference kept for the process lifetime
}

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const pypatch::io::IoError& e) {
    py::object err = py::module_::import("builtins").attr("OSError")(e.error_code(), e.what());
    PyErr_SetObject(PyExc_OSError, err.ptr());
  } catch (const pypatch::VersionError& e) {
    PyErr_SetString(g_version, e.what());
  } catch (const pypatch::FormatError& e) {
    PyErr_SetString(g_format, e.what());
  } catch (const pypatch::InvalidArgument& e) {
    PyErr_SetString(g_invalid_argument, e.what());
  } catch (const pypatch::NotTrained& e) {
    PyErr_SetString(g_not_trained, e.what());
  } catch (const pypatch::Interrupted& e) {
    PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
  } catch (const pypatch::IoError& e) {
    PyErr_SetString(PyExc_OSError, e.what());
  } catch (const pypatch::Error& e) {
    PyErr_SetString(g_base, e.what());
  }
}

py::list level_names(const std::vector<pypatch::SimdLevel>& levels) {
  py::list out;
  for (auto l : levels) out.append(pypatch::simd_level_name(l));
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pypatch native search core (see csrc/pypatch)";
  py::module_ errors = py::module_::import("pypatch.errors");
  g_invalid_argument = error_class(errors, "InvalidArgumentError");
  g_not_trained = error_class(errors, "NotTrainedError");
  g_format = error_class(errors, "IndexFormatError");
  g_version = error_class(errors, "IndexVersionError");
  g_base = error_class(errors, "PypatchError");
  py::register_exception_translator(&translate);

  m.def("simd_info", [] {
    py::dict d;
    d["compiled"] = level_names(pypatch::compiled_simd_levels());
    d["detected"] = pypatch::simd_level_name(pypatch::detected_simd_level());
    d["selected"] = pypatch::simd_level_name(pypatch::selected_simd_level());
    // Kernel of the quantised 8-bit PQ scan at the selected level ("" = exact float scan only).
    d["quant_scan"] = pypatch::quant_scan_kernel_name();
    // Kernel of the 4-bit PQ fast scan ("" = exact float scan only).
    d["fastscan4"] = pypatch::fastscan4_kernel_name();
    return d;
  });
  m.def("set_simd_level", [](const std::string& level) {
    pypatch::set_simd_level(pypatch::parse_simd_level(level));
  });
  m.def("set_num_threads", &pypatch::set_default_num_threads);
  m.def("get_num_threads", &pypatch::default_num_threads);
#ifdef PYPATCH_VERSION
  m.attr("__version__") = PYPATCH_VERSION;
#endif
  m.attr("build_info") = py::dict(
      py::arg("compiler") = std::string(__VERSION__),
      py::arg("compiled_simd") = level_names(pypatch::compiled_simd_levels()));

  pypatch_bind::bind_pq(m);
  pypatch_bind::bind_index(m);
  pypatch_bind::bind_multi(m);
}

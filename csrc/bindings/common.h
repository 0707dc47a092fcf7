// Helpers shared by the binding files: array access without silent casts, the interrupt hook.
#pragma once
#include <pybind11/functional.h>  // std::function
#include <pybind11/numpy.h>       // py::array_t
#include <pybind11/pybind11.h>

#include <algorithm>   // std::copy
#include <functional>  // std::function
#include <string>      // messages

#include "pypatch/errors.h"  // InvalidArgument

namespace py = pybind11;

namespace pypatch_bind {

// C-contiguous arrays of exactly T; pybind rejects any other dtype instead of converting.
template <class T>
using CArray = py::array_t<T, py::array::c_style>;

/// Checks ndim/shape (-1 = any) and returns the data pointer; InvalidArgument names `what`.
template <class T>
const T* checked(const CArray<T>& a, const char* what, int ndim, py::ssize_t d0 = -1,
                 py::ssize_t d1 = -1) {
  auto fail = [&](const std::string& why) {
    throw pypatch::InvalidArgument(std::string(what) + ": " + why);
  };
  if (a.ndim() != ndim) fail("expected " + std::to_string(ndim) + "-d array, got " + std::to_string(a.ndim()) + "-d");
  if (d0 >= 0 && a.shape(0) != d0) fail("expected " + std::to_string(d0) + " rows, got " + std::to_string(a.shape(0)));
  if (ndim > 1 && d1 >= 0 && a.shape(1) != d1)
    fail("expected " + std::to_string(d1) + " columns, got " + std::to_string(a.shape(1)));
  return a.data();
}

/// Runs `get` (which takes the index lock) with the GIL released and copies the std::vector it
/// returns into a new 1-d array of T (element-wise conversion, e.g. uint8 flags to bool).
template <class T, class Get>
CArray<T> vector_without_gil(Get get) {
  auto values = [&] {
    py::gil_scoped_release nogil;
    return get();
  }();
  CArray<T> out(static_cast<py::ssize_t>(values.size()));
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

/// Polled by long calls on the calling thread: Ctrl-C (or any pending signal handler error)
/// aborts the call with the Python exception the handler raised.
inline std::function<void()> interrupt_hook() {
  return [] {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  };
}

void bind_pq(py::module_& m);
void bind_index(py::module_& m);
void bind_multi(py::module_& m);

}  // namespace pypatch_bind

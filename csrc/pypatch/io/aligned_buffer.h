// Owned byte buffer aligned to 64 bytes (C++17 aligned new), so an
// eagerly loaded file gives sections the same alignment a mapping would. Move-only;
// moving does not move the bytes, so pointers into it stay valid.
#pragma once

#include <cstddef>  // size_t
#include <cstdint>  // uint8_t
#include <cstring>  // std::memset
#include <memory>   // std::unique_ptr
#include <new>      // std::align_val_t

namespace pypatch {
namespace io {

class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;

  AlignedBuffer() = default;
  /// `zero = false` leaves the bytes uninitialised (for buffers about to be filled).
  explicit AlignedBuffer(size_t size, bool zero = true) : size_(size) {
    if (size == 0) return;
    data_.reset(static_cast<uint8_t*>(::operator new(size, std::align_val_t(kAlign))));
    if (zero) std::memset(data_.get(), 0, size);
  }

  uint8_t* data() noexcept { return data_.get(); }
  const uint8_t* data() const noexcept { return data_.get(); }
  size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const noexcept { ::operator delete(p, std::align_val_t(kAlign)); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

}  // namespace io
}  // namespace pypatch

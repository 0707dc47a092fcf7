// Allocator of the index's owned code/vector storage: a block of >= 4 MiB is 2 MiB-aligned,
// rounded to whole 2 MiB pages and advised MADV_HUGEPAGE (Linux), so a scan streams it with one
// TLB entry per 2 MiB instead of per 4 KiB. Where transparent huge pages are in "madvise" mode
// (common default) plain std::vector memory gets 4 KiB pages; on a VM each TLB miss is a nested
// page walk, and the 4-bit fast scan of 144 MB of codes ran ~1.6x slower for it (numpy's own
// big arrays are advised the same way). Smaller blocks: plain 64-byte-aligned new.
#pragma once
#include <cstddef>  // size_t
#include <new>      // operator new, align_val_t

#if defined(__linux__)
#include <sys/mman.h>  // madvise
#endif

namespace pypatch {

template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr size_t kHuge = size_t{2} << 20;
  static constexpr size_t kMinBytes = size_t{4} << 20;

  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}

  static size_t rounded(size_t bytes) { return bytes >= kMinBytes ? (bytes + kHuge - 1) / kHuge * kHuge : bytes; }
  static std::align_val_t align(size_t bytes) { return std::align_val_t(bytes >= kMinBytes ? kHuge : 64); }

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    void* p = ::operator new(rounded(bytes), align(bytes));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= kMinBytes) madvise(p, rounded(bytes), MADV_HUGEPAGE);  // advice: failure is harmless
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept { ::operator delete(p, align(n * sizeof(T))); }
};

template <class T, class U>
bool operator==(const HugePageAllocator<T>&, const HugePageAllocator<U>&) { return true; }
template <class T, class U>
bool operator!=(const HugePageAllocator<T>&, const HugePageAllocator<U>&) { return false; }

}  // namespace pypatch

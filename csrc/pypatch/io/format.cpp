// Names of section kinds for error messages.
#include "pypatch/io/format.h"

#include <cstdio>  // std::snprintf

namespace pypatch {
namespace io {

std::string kind_name(uint32_t k) {
  struct Known {
    uint32_t kind;
    const char* name;
  };
  static constexpr Known kKnown[] = {
      {kind::kMeta, "META"},           {kind::kPqCentroids, "PQ_CENTROIDS"},
      {kind::kCodes, "CODES"},         {kind::kImageOffsets, "IMAGE_OFFSETS"},
      {kind::kImageSizes, "IMAGE_SIZES"}, {kind::kLevels, "LEVELS"},
      {kind::kImageIds, "IMAGE_IDS"},  {kind::kVectors, "VECTORS"},
  };
  for (const Known& e : kKnown)
    if (e.kind == k) return e.name;
  char c[4];
  bool printable = true;
  for (int i = 0; i < 4; ++i) {
    c[i] = char((k >> (8 * i)) & 0xFF);
    printable = printable && c[i] >= 0x20 && c[i] < 0x7F;
  }
  if (printable) return "'" + std::string(c, 4) + "'";
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08X", unsigned(k));
  return hex;
}

}  // namespace io
}  // namespace pypatch

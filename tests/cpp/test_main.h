// A tiny test harness for the C++ tests (no external dependency): TEST(name) { CHECK(...); }
// registers a test; main() runs them all, prints failures, and exits non-zero if any failed.
// Include from exactly one .cpp per executable.
#pragma once
#include <cstdio>     // fprintf
#include <exception>  // std::exception
#include <vector>     // registry

namespace test_main {
struct Case { const char* name; void (*fn)(); };
inline std::vector<Case>& registry() { static std::vector<Case> r; return r; }
inline int& failures() { static int n = 0; return n; }
struct Register { Register(const char* n, void (*f)()) { registry().push_back({n, f}); } };
}  // namespace test_main

#define TEST(name)                                                     \
  static void name();                                                  \
  static const test_main::Register name##_register(#name, &name);      \
  static void name()

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      ++test_main::failures();                                                         \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);    \
    }                                                                                  \
  } while (0)

#define CHECK_THROWS(expr, Type)                                                  \
  do {                                                                            \
    bool thrown_ = false;                                                         \
    try { expr; } catch (const Type&) { thrown_ = true; } catch (...) {}          \
    CHECK(thrown_ && #expr " throws " #Type);                                     \
  } while (0)

int main() {
  for (const auto& c : test_main::registry()) {
    const int before = test_main::failures();
    try { c.fn(); } catch (const std::exception& e) {
      ++test_main::failures();
      std::fprintf(stderr, "%s: unexpected exception: %s\n", c.name, e.what());
    }
    std::printf("%s %s\n", test_main::failures() == before ? "ok  " : "FAIL", c.name);
  }
  std::printf("%d failure(s)\n", test_main::failures());
  return test_main::failures() ? 1 : 0;
}

// A reader/writer lock that lets a waiting writer in. glibc's std::shared_mutex prefers
// readers: with a few threads searching back to back, the reader count never drops to zero
// and add() waited for minutes. Here a writer first closes the gate to new readers, then
// waits for the readers inside to leave (the two-gate algorithm of libc++'s shared_mutex);
// when it unlocks, waiting readers and writers compete again, so neither side starves.
// Meets the SharedMutex requirements (std::shared_lock / std::unique_lock work).
// Not recursive: a thread holding it shared must not lock it again (a writer waiting in
// between would deadlock both). PatchIndex never nests its locks.
#pragma once
#include <condition_variable>  // the two gates
#include <cstdint>             // counters
#include <mutex>               // state lock

namespace pypatch {

class FairSharedMutex {
 public:
  FairSharedMutex() = default;
  FairSharedMutex(const FairSharedMutex&) = delete;
  FairSharedMutex& operator=(const FairSharedMutex&) = delete;

  void lock() {
    std::unique_lock<std::mutex> g(m_);
    gate1_.wait(g, [this] { return !writer_; });
    writer_ = true;  // from here on no new reader enters
    gate2_.wait(g, [this] { return readers_ == 0; });
  }
  bool try_lock() {
    std::lock_guard<std::mutex> g(m_);
    if (writer_ || readers_ != 0) return false;
    writer_ = true;
    return true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> g(m_);
      writer_ = false;
    }
    gate1_.notify_all();
  }

  void lock_shared() {
    std::unique_lock<std::mutex> g(m_);
    gate1_.wait(g, [this] { return !writer_; });
    ++readers_;
  }
  /// False while a writer holds the lock or waits for it.
  bool try_lock_shared() {
    std::lock_guard<std::mutex> g(m_);
    if (writer_) return false;
    ++readers_;
    return true;
  }
  void unlock_shared() {
    bool last_before_writer;
    {
      std::lock_guard<std::mutex> g(m_);
      --readers_;
      last_before_writer = writer_ && readers_ == 0;
    }
    if (last_before_writer) gate2_.notify_one();  // only the one writer waits there
  }

 private:
  std::mutex m_;
  std::condition_variable gate1_;  // readers and writers wait here while a writer is in
  std::condition_variable gate2_;  // the writer that closed gate 1 waits here for readers
  bool writer_ = false;            // a writer holds the lock or waits at gate 2
  int64_t readers_ = 0;
};

}  // namespace pypatch

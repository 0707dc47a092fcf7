// See save_path.h.
#include "pypatch/io/save_path.h"

#include <cerrno>   // errno
#include <cstring>  // std::strerror

#include "pypatch/io/io_errors.h"  // IoError

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>    // opendir, readdir
#include <fcntl.h>     // open
#include <signal.h>    // kill(pid, 0)
#include <sys/file.h>  // flock
#include <sys/stat.h>  // lstat, fstat
#include <unistd.h>    // readlink, getpid, unlink, close
#include <vector>      // readlink buffer

namespace pypatch {
namespace io {
namespace {

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "<digits>.<digits>" and nothing else; *pid = the first number.
bool parse_pid_counter(const std::string& s, long* pid) {
  const size_t dot = s.find('.');
  if (dot == 0 || dot == std::string::npos || dot + 1 == s.size() || dot > 18) return false;
  for (size_t i = 0; i < s.size(); ++i)
    if (i != dot && (s[i] < '0' || s[i] > '9')) return false;
  *pid = std::stol(s.substr(0, dot));
  return *pid > 0;
}

bool process_is_dead(long pid) {
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;  // EPERM: alive, not ours
}

}  // namespace

std::string resolve_save_target(const std::string& path) {
  std::string p = path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;  // missing: create it
    std::vector<char> buf(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1);
    const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
    if (n < 0 || static_cast<size_t>(n) >= buf.size()) return p;  // changed under us: replace p
    const std::string link(buf.data(), static_cast<size_t>(n));
    p = link[0] == '/' ? link : dir_of(p) + "/" + link;
  }
  throw IoError(path + ": cannot save through more than 40 symbolic links", ELOOP);
}

std::string temp_name(const std::string& target, long pid, unsigned n) {
  return target + ".tmp." + std::to_string(pid) + "." + std::to_string(n);
}

int remove_stale_temps(const std::string& target) {
  const std::string dir = dir_of(target), prefix = base_of(target) + ".tmp.";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  const long self = static_cast<long>(::getpid());
  int removed = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    long pid;
    if (name.compare(0, prefix.size(), prefix) != 0 ||
        !parse_pid_counter(name.substr(prefix.size()), &pid) || pid == self || !process_is_dead(pid))
      continue;
    const std::string full = dir + "/" + name;
    const int fd = ::open(full.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) continue;
    struct stat st;
    // The lock is free only if no process holds it: a writer in another PID namespace (whose
    // pid means nothing here) still holds it until its rename.
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        ::unlink(full.c_str()) == 0)
      ++removed;
    ::close(fd);
  }
  ::closedir(d);
  return removed;
}

}  // namespace io
}  // namespace pypatch

#else  // no symlinks, pids or locks to go by: save exactly `path`, remove nothing

namespace pypatch {
namespace io {
std::string resolve_save_target(const std::string& path) { return path; }
std::string temp_name(const std::string& target, long pid, unsigned n) {
  return target + ".tmp." + std::to_string(pid) + "." + std::to_string(n);
}
int remove_stale_temps(const std::string&) { return 0; }
}  // namespace io
}  // namespace pypatch

#endif

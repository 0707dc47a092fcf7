// save_path.h on real files: the symlink rule and the clean-up of dead writers' temporaries
// (only our own pattern, only dead pids, never a locked file).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "pypatch/io/container.h"
#include "pypatch/io/io_errors.h"
#include "pypatch/io/save_path.h"
#include "test_main.h"

using namespace pypatch::io;

namespace {

std::string make_dir() {
  char tmpl[] = "/tmp/pypatch_save_path_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? d : "";
}

void touch(const std::string& p) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    (void)!::write(fd, "partial", 7);
    ::close(fd);
  }
}

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);  // reaped: kill(child, 0) now fails with ESRCH
  return static_cast<long>(child);
}

ContainerWriter one_section() {
  ContainerWriter w;
  w.add_string(kind::kMeta, "{}");
  return w;
}

}  // namespace

TEST(stale_temps_of_dead_writers_only) {
  const std::string d = make_dir();
  const std::string target = d + "/ix.ptch";
  const long dead = dead_pid();
  const std::string stale = temp_name(target, dead, 3);
  const std::string mine = temp_name(target, static_cast<long>(::getpid()), 4);
  const std::string parent = temp_name(target, static_cast<long>(::getppid()), 5);
  const std::string other = temp_name(d + "/other.ptch", dead, 0);
  const std::string locked = temp_name(target, dead, 6);
  for (const std::string& p : {stale, mine, parent, other, locked}) touch(p);
  const int fd = ::open(locked.c_str(), O_RDONLY);
  ::flock(fd, LOCK_EX);  // as a live writer in another PID namespace holds it
  // flock locks belong to the open file description: a second open in this process conflicts.
  CHECK(remove_stale_temps(target) == 1);
  CHECK(!exists(stale));
  CHECK(exists(mine) && exists(parent) && exists(other) && exists(locked));
  ::close(fd);
  CHECK(remove_stale_temps(target) == 1);
  CHECK(!exists(locked));
  for (const std::string& p : {mine, parent, other}) ::unlink(p.c_str());
  ::rmdir(d.c_str());
}

TEST(save_through_symlinks_replaces_the_target) {
  const std::string d = make_dir();
  CHECK(resolve_save_target(d + "/none.ptch") == d + "/none.ptch");
  CHECK(::symlink("real.ptch", (d + "/a.ptch").c_str()) == 0);  // dangling, relative
  CHECK(::symlink((d + "/a.ptch").c_str(), (d + "/b.ptch").c_str()) == 0);
  CHECK(resolve_save_target(d + "/b.ptch") == d + "/./real.ptch" ||
        resolve_save_target(d + "/b.ptch") == d + "/real.ptch");
  one_section().write_atomic(d + "/b.ptch");
  struct stat st;
  CHECK(::lstat((d + "/b.ptch").c_str(), &st) == 0 && S_ISLNK(st.st_mode));
  CHECK(::lstat((d + "/real.ptch").c_str(), &st) == 0 && S_ISREG(st.st_mode));
  CHECK(::chmod((d + "/real.ptch").c_str(), 0600) == 0);
  one_section().write_atomic(d + "/a.ptch");
  CHECK(::stat((d + "/real.ptch").c_str(), &st) == 0 && (st.st_mode & 07777) == 0600);
  CHECK(Container::open(d + "/b.ptch", false, true).has(kind::kMeta));
  CHECK(::symlink("loop2", (d + "/loop1").c_str()) == 0);
  CHECK(::symlink("loop1", (d + "/loop2").c_str()) == 0);
  CHECK_THROWS(one_section().write_atomic(d + "/loop1"), IoError);
  for (const char* n : {"/a.ptch", "/b.ptch", "/real.ptch", "/loop1", "/loop2"}) ::unlink((d + n).c_str());
  CHECK(::rmdir(d.c_str()) == 0);  // nothing else was left
}
